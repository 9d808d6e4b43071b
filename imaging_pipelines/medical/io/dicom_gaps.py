"""Missing slices: a stack whose slice positions skip whole steps is resampled onto a uniform grid.

Choice (documented in docs/medical.md): every original slice keeps its voxels and its true position (the grid
starts at the first slice, its step is the least-squares step over all slices, and each slice must lie within
0.01 mm of its grid point); the missing positions are filled by linear interpolation between the two
neighbouring slices along the slice normal and listed in the volume attributes (``interpolated_slices``, k
indices) and warnings, like dcm2niix's equidistant (``_Eq``) output. Stacks whose gaps are not whole steps are
not resampled (the warning says their slices are misplaced).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POSITION_TOL_MM = 0.01


@dataclass
class GapPlan:
    """Output slice k is ``(1 - w) * in[lo] + w * in[hi]``; ``step`` in mm; ``filled`` = interpolated k's."""

    sources: list[tuple[int, int, float]]
    step: float
    filled: list[int]


def gap_plan(dist: np.ndarray, typical: float) -> GapPlan | None:
    """Plan for slice positions ``dist`` (mm along the normal, ascending) with typical step ``typical``, or None
    when some gap is not a whole number of steps (or nothing is missing)."""
    if typical <= 0 or dist.size < 2:
        return None
    offsets = dist - dist[0]
    idx = np.rint(offsets / typical).astype(int)
    if len(set(idx.tolist())) != idx.size or idx[-1] + 1 == idx.size:
        return None
    step = float(np.dot(offsets, idx) / np.dot(idx, idx))
    if np.max(np.abs(offsets - idx * step)) > POSITION_TOL_MM:
        return None
    sources: list[tuple[int, int, float]] = []
    filled = []
    where = {int(k): n for n, k in enumerate(idx)}
    for k in range(int(idx[-1]) + 1):
        if k in where:
            sources.append((where[k], where[k], 0.0))
            continue
        lo = max(n for n, kk in enumerate(idx) if kk < k)
        hi = lo + 1
        w = float((k - idx[lo]) / (idx[hi] - idx[lo]))
        sources.append((lo, hi, w))
        filled.append(k)
    return GapPlan(sources, step, filled)


def fill_gaps(array: np.ndarray, plan: GapPlan) -> np.ndarray:
    """``array`` ([z, y, x] or [t, z, y, x], any trailing axes after y, x kept) resampled along z by ``plan``;
    integer arrays are rounded to the nearest integer."""
    z_axis = 1 if array.ndim == 4 else 0
    src = np.moveaxis(array, z_axis, 0)
    out = np.empty((len(plan.sources), *src.shape[1:]), dtype=array.dtype)
    for k, (lo, hi, w) in enumerate(plan.sources):
        if lo == hi:
            out[k] = src[lo]
            continue
        mixed = (1.0 - w) * src[lo].astype(np.float64) + w * src[hi].astype(np.float64)
        out[k] = np.rint(mixed) if array.dtype.kind in "iu" else mixed
    return np.ascontiguousarray(np.moveaxis(out, 0, z_axis))
