"""Classical lesion baselines selectable in the catalog, each returning a binary (0/1 uint8) Volume.

* ``otsu`` / ``max_entropy`` - :func:`~imaging_pipelines.medical.segment.classical.lesion_baseline`: tissue split by
  that histogram threshold inside an eroded head mask, lesions = robust outliers of either class, with
  small-component removal.
* ``watershed`` - marker-based morphological watershed on the gradient magnitude: markers are the Otsu
  lesion candidates (lesion) and the brain voxels more than 2 voxels away from them (background).
* ``fast_marching`` - fast marching from the centroid of every Otsu lesion candidate, stopped at 1.5x the
  candidate's equivalent-sphere radius (mm).
* ``graph_cut`` - s-t min cut (:mod:`~imaging_pipelines.medical.segment.graph_cut`) inside the eroded head
  mask, initialised from the threshold baselines: the lesion candidates of ``otsu`` and ``max_entropy``
  together give the lesion model (a Gaussian per side of the tissue threshold found), the rest of the region
  the two normal-tissue classes (Otsu split of the non-candidate voxels), the candidates' fraction of the
  region the lesion prior; n-links from intensity differences per mm; components under 4 voxels removed,
  and components that touch the region's edge (the outer CSF and scalp the erosion cuts through, continuing
  outside the brain region).

All work on one 3D Volume in its own grid; nothing is learned. They are fallbacks while no model exists
and baselines in evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage.filters import threshold_otsu

from imaging_pipelines.medical.segment import classical, graph_cut
from imaging_pipelines.core.volume import Volume

BASELINES = ("otsu", "max_entropy", "watershed", "fast_marching", "graph_cut")


def _candidates(image: Volume) -> tuple[Volume, dict[str, Any]]:
    return classical.lesion_baseline(image, method="otsu")


def _watershed(image: Volume) -> tuple[Volume, dict[str, Any]]:
    lesions, report = _candidates(image)
    if not lesions.array.any():
        return lesions, {"n_lesions": 0}
    near = sitk.BinaryDilate(lesions.to_sitk(), [2, 2, 2], sitk.sitkBall)
    head = sitk.GetArrayFromImage(sitk.OtsuThreshold(image.to_sitk(), 0, 1)) > 0
    markers = np.where(lesions.array > 0, 2, np.where(head & (sitk.GetArrayFromImage(near) == 0), 1, 0))
    regions, ws = classical.watershed_segmentation(image, markers=image.with_array(markers.astype(np.uint8)))
    return image.with_array((regions.array == 2).astype(np.uint8)), {"n_lesions": report["n_lesions"], **ws}


def _fast_marching(image: Volume) -> tuple[Volume, dict[str, Any]]:
    lesions, report = _candidates(image)
    out = np.zeros(image.spatial_shape, dtype=np.uint8)
    to_index = np.linalg.inv(image.index_to_world_lps())
    for lesion in report["lesions"]:
        ijk = to_index @ np.array([*lesion["centroid_lps_mm"], 1.0])
        seed = tuple(int(np.clip(round(c), 0, n - 1)) for c, n in zip(ijk[:3], image.spatial_shape[::-1]))
        radius_mm = (3.0 * lesion["volume_ml"] * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
        grown, _ = classical.fast_marching_segmentation(image, [seed], stopping_time=1.5 * radius_mm)
        out |= grown.array.astype(np.uint8)
    return image.with_array(out), {"n_lesions": report["n_lesions"], "seeds": len(report["lesions"])}


def _graph_cut(image: Volume) -> tuple[Volume, dict[str, Any]]:
    region = classical.eroded_head(image)
    found = np.zeros(image.spatial_shape, bool)
    for method in ("otsu", "max_entropy"):  # every threshold baseline's candidates seed the lesion model
        lesions, _ = classical.lesion_baseline(image, method=method)
        found |= lesions.array > 0
    if not found.any():
        return image.with_array(found.astype(np.uint8)), {"n_lesions": 0}
    values = image.array.astype(np.float64)
    normal = region & ~found  # normal tissue: two classes split by Otsu once the candidates are out
    threshold = float(threshold_otsu(values[normal]))
    tissue = [graph_cut.gaussian_of(values[normal & side], "tissue") for side in (values <= threshold, values > threshold)]
    lesion_model = [
        graph_cut.gaussian_of(values[found & side], "lesion")
        for side in (values < threshold, values >= threshold)
        if np.count_nonzero(found & side) >= 4
    ] or [graph_cut.gaussian_of(values[found], "lesion")]
    prior = max(np.count_nonzero(found & region), 1) / np.count_nonzero(region)
    cut, cut_report = graph_cut.graph_cut_segmentation(
        image, region=region, foreground_model=lesion_model, background_model=tissue, prior=prior
    )
    objects, _ = classical.connected_components(cut, min_size_vox=4, image=image)
    labels = np.asarray(objects.array)
    border = region & ~ndimage.binary_erosion(region)  # region voxels with a face neighbour outside it
    cut_off = np.setdiff1d(np.unique(labels[border]), [0])  # objects the region's edge cuts through
    kept = (labels > 0) & ~np.isin(labels, cut_off)
    n_lesions = len(np.setdiff1d(np.unique(labels[kept]), [0]))
    return image.with_array(kept.astype(np.uint8)), {
        "n_lesions": n_lesions, "dropped_at_region_border": len(cut_off), "sigma": cut_report["sigma"],
        "data_scale": cut_report["data_scale"], "cut_energy": cut_report["cut_energy"]}


def run_baseline(name: str, image: Volume) -> tuple[Volume, dict[str, Any]]:
    """Binary lesion mask (uint8 0/1 on ``image``'s grid) and a small report, by baseline ``name``."""
    if name in ("otsu", "max_entropy"):
        mask, report = classical.lesion_baseline(image, method=name)
        return mask, {k: report[k] for k in ("n_lesions", "lesion_volume_ml", "tissue_threshold")}
    if name == "watershed":
        return _watershed(image)
    if name == "fast_marching":
        return _fast_marching(image)
    if name == "graph_cut":
        return _graph_cut(image)
    raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
