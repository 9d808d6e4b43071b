"""Shared helpers for the dcm2niix reference-corpus tests (dcm_qa_more): convert a folder, match a Ref NIfTI.

A reference matches one of our outputs of the same input folder when, after ``nibabel.as_closest_canonical``,
shapes and voxel values are equal and all 8 volume corners map to world (RAS mm) within 1e-3 mm.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np

CORNER_TOL_MM = 1e-3


def corpus_rows(root: Path) -> list[dict[str, str]]:
    tsv = root / "series.tsv"
    if not tsv.exists():
        return []
    with tsv.open() as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def corners(shape, affine) -> np.ndarray:
    ijk = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                    for k in (0, shape[2] - 1)]).T
    return (affine @ ijk)[:3]


def mismatch(ours: nib.Nifti1Image, ref: nib.Nifti1Image) -> str | None:
    """Why ``ours`` does not reproduce ``ref`` (None when it does)."""
    a, b = nib.as_closest_canonical(ours), nib.as_closest_canonical(ref)
    if a.shape != b.shape:
        return f"shape {a.shape} != {b.shape}"
    gap = float(np.max(np.abs(corners(a.shape, a.affine) - corners(b.shape, b.affine))))
    if gap > CORNER_TOL_MM:
        return f"corners differ by {gap:.4g} mm"
    va, vb = np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)
    if not np.array_equal(va, vb):
        diff = np.abs(va.astype(np.float64) - vb.astype(np.float64))
        return f"voxels differ ({np.count_nonzero(diff)} of {diff.size}, max {diff.max():.4g}; {va.dtype} vs {vb.dtype})"
    return None


@lru_cache(maxsize=4)
def converted(folder: str, out: str) -> tuple[tuple[str, ...], str]:
    """Convert ``folder`` into ``out`` once; (written NIfTI paths, error text or '')."""
    from imaging_pipelines.medical.convert import convert

    try:
        written, _ = convert(folder, out)
    except Exception as exc:  # reported by the caller as the reason of the mismatch
        return (), f"{type(exc).__name__}: {exc}"
    return tuple(str(p) for p in written if str(p).endswith((".nii", ".nii.gz"))), ""


def match_reference(folder: Path, ref_path: Path, out: Path) -> tuple[str | None, str]:
    """(name of our matching output or None, explanation of each output's mismatch)."""
    written, error = converted(str(folder), str(out))
    if error:
        return None, error
    reasons = []
    ref = nib.load(ref_path)
    for path in written:
        why = mismatch(nib.load(path), ref)
        if why is None:
            return Path(path).name, ""
        reasons.append(f"{Path(path).name}: {why}")
    return None, "; ".join(reasons) or "no output"
