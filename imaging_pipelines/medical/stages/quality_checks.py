"""Quality checks that guard a partition's geometry, voxel values and masks (plain Python, no dagster).

The Dagster layer declares these checks *blocking*: when one fails, the partition's run stops at that asset
(its materialisation is still recorded, with the failed check) and nothing downstream, segmentation included,
runs for that partition; the run-failure recorder lists it in the cohort report.

- :func:`ingestion_checks` (``ingested_scans``): every image has finite voxels (``voxels_finite``) and a usable
  geometry (``geometry_valid``: finite positive spacing, finite origin, orthonormal direction cosines).
- :func:`mask_checks` (``preprocessed``: ``foreground_mask_not_empty``; ``registered``: ``brain_mask_not_empty``):
  every mask of the partition marks at least one voxel. A stage that made no mask passes (nothing to guard).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from imaging_pipelines.core.stage_result import CheckOutcome
from imaging_pipelines.core.volume import Volume

ORTHONORMAL_ATOL = 1e-4  # |D^T D - I| tolerance of the direction cosines (as Volume.geometry_from_nifti_affine)
INGESTION_CHECKS = ("voxels_finite", "geometry_valid")
FOREGROUND_MASK_CHECK = "foreground_mask_not_empty"
BRAIN_MASK_CHECK = "brain_mask_not_empty"


def non_finite_voxels(volume: Volume) -> int:
    """Number of NaN or infinite voxels (0 for integer arrays)."""
    array = np.asarray(volume.array)
    return 0 if not np.issubdtype(array.dtype, np.floating) else int(array.size - np.count_nonzero(np.isfinite(array)))


def geometry_problem(volume: Volume) -> str | None:
    """Why the volume's geometry cannot be trusted (None when it can)."""
    spacing = np.asarray(volume.spacing, dtype=float)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        return f"spacing {tuple(spacing)} is not finite and positive"
    if not np.all(np.isfinite(np.asarray(volume.origin, dtype=float))):
        return f"origin {tuple(volume.origin)} is not finite"
    direction = np.asarray(volume.direction, dtype=float)
    if not np.all(np.isfinite(direction)) or not np.allclose(direction.T @ direction, np.eye(3), atol=ORTHONORMAL_ATOL):
        return "direction cosines are not orthonormal"
    return None


def ingestion_checks(images: Mapping[str, Volume]) -> dict[str, CheckOutcome]:
    """``voxels_finite`` and ``geometry_valid`` over the partition's ingested images."""
    non_finite = {name: n for name, v in images.items() if (n := non_finite_voxels(v))}
    geometry = {name: p for name, v in images.items() if (p := geometry_problem(v))}
    return {
        "voxels_finite": CheckOutcome(
            passed=not non_finite,
            description="every voxel of every image is finite" if not non_finite else
            "non-finite (NaN / infinite) voxels in " + ", ".join(f"{n} ({k})" for n, k in non_finite.items()),
            metadata={"images_checked": len(images), "non_finite_voxels": sum(non_finite.values())},
        ),
        "geometry_valid": CheckOutcome(
            passed=not geometry,
            description="finite positive spacing and orthonormal direction for every image" if not geometry else
            "; ".join(f"{n}: {p}" for n, p in geometry.items()),
            metadata={"images_checked": len(images), "images_failing": len(geometry)},
        ),
    }


def mask_checks(labels: Mapping[str, Mapping[str, Volume]], label: str, check_name: str) -> dict[str, CheckOutcome]:
    """``check_name``: every ``label`` mask (``labels``: image -> label name -> mask) marks at least one voxel."""
    masks = {name: own[label] for name, own in labels.items() if label in own}
    empty = sorted(name for name, mask in masks.items() if not np.any(np.asarray(mask.array)))
    if not masks:
        description = f"no {label.replace('_', ' ')} was made: nothing to check"
    elif empty:
        description = f"empty {label.replace('_', ' ')} for {', '.join(empty)}"
    else:
        description = f"every {label.replace('_', ' ')} marks at least one voxel"
    return {check_name: CheckOutcome(passed=not empty, description=description,
                                     metadata={"masks_checked": len(masks), "empty_masks": len(empty)})}
