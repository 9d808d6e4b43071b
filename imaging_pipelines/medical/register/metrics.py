"""Registration quality measures: similarity (NCC, mutual information), Jacobian determinant, Dice.

Displacement fields are arrays (z, y, x, 3) of LPS millimetre offsets with components in (x, y, z)
order, sampled on a grid with spacing (sx, sy, sz) in mm and direction cosines ``direction``.
"""

from __future__ import annotations

import numpy as np

from imaging_pipelines.core.volume import Volume


def _masked(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if mask is not None:
        m = np.asarray(mask).astype(bool)
        return a[m], b[m]
    return a.ravel(), b.ravel()


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Global normalised cross-correlation in [-1, 1] (inside ``mask`` when given)."""
    x, y = _masked(a, b, mask)
    x = x - x.mean()
    y = y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else 0.0


def mutual_information(a: np.ndarray, b: np.ndarray, bins: int = 32, mask: np.ndarray | None = None) -> float:
    """Mutual information in nats from a joint histogram with ``bins`` equal-width bins per image."""
    x, y = _masked(a, b, mask)
    ix, iy = _bin_index(x, bins), _bin_index(y, bins)
    joint = np.bincount(ix * bins + iy, minlength=bins * bins).reshape(bins, bins).astype(np.float64)
    pxy = joint / max(joint.sum(), 1.0)
    px = pxy.sum(axis=1, keepdims=True)
    py = pxy.sum(axis=0, keepdims=True)
    nz = pxy > 0
    return float((pxy[nz] * np.log(pxy[nz] / (px @ py)[nz])).sum())


def _bin_index(values: np.ndarray, bins: int) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.int64)
    return np.minimum(((values - lo) * (bins / (hi - lo))).astype(np.int64), bins - 1)


def jacobian_determinant(displacement: np.ndarray, spacing: tuple[float, float, float],
                         direction: np.ndarray | None = None) -> np.ndarray:
    """det(I + d(displacement)/d(position)) on the grid, float32 array (z, y, x).

    Derivatives are central differences in index space divided by the spacing, rotated into world axes
    with ``direction`` (columns = index axes i, j, k in LPS).
    """
    u = np.asarray(displacement, dtype=np.float32)
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    # g[a][..., c]: d u_c / d (mm along index axis a), a = 0: i/x, 1: j/y, 2: k/z
    g = [np.gradient(u, step, axis=axis) if u.shape[axis] > 1 else np.zeros_like(u)
         for axis, step in ((2, spacing[0]), (1, spacing[1]), (0, spacing[2]))]
    # world derivatives: d u_c / d world_w = sum_a g[a][..., c] * direction[w, a]
    j = [[sum(g[a][..., c] * np.float32(direction[w, a]) for a in range(3)) + (1.0 if c == w else 0.0)
          for w in range(3)] for c in range(3)]
    return (j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
            - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
            + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0]))


def jacobian_stats(displacement: np.ndarray, spacing, direction=None, mask: np.ndarray | None = None) -> dict[str, float]:
    """Min / max / mean / std of the Jacobian determinant and the folding fraction (share of det <= 0)."""
    det = jacobian_determinant(displacement, spacing, direction)
    if mask is not None:
        det = det[np.asarray(mask).astype(bool)]
    return {
        "jacobian_min": float(det.min()),
        "jacobian_max": float(det.max()),
        "jacobian_mean": float(det.mean(dtype=np.float64)),
        "jacobian_std": float(det.std(dtype=np.float64)),
        "folding_fraction": float((det <= 0).mean()),
    }


def linear_jacobian_stats(matrix: np.ndarray) -> dict[str, float]:
    """The same statistics for a linear (rigid / affine) transform: its determinant everywhere."""
    det = float(np.linalg.det(np.asarray(matrix, dtype=np.float64).reshape(3, 3)))
    return {"jacobian_min": det, "jacobian_max": det, "jacobian_mean": det, "jacobian_std": 0.0,
            "folding_fraction": float(det <= 0)}


def dice(a: np.ndarray, b: np.ndarray, label: int | None = None) -> float:
    """Dice overlap of two masks (or of one label value in two label maps); 1.0 when both are empty."""
    x = np.asarray(a) == label if label is not None else np.asarray(a).astype(bool)
    y = np.asarray(b) == label if label is not None else np.asarray(b).astype(bool)
    total = x.sum() + y.sum()
    return float(2.0 * np.logical_and(x, y).sum() / total) if total else 1.0


SIMILARITY_MAX_VOXELS = 2_000_000  # larger volumes are compared on a regular sub-grid (every 2nd voxel, ...)


def similarity(fixed: Volume, image: Volume, mask: np.ndarray | None = None) -> dict[str, float]:
    """NCC and mutual information between two volumes on the same grid (on a regular sub-grid of at most
    about 2 million voxels, which changes the figures by far less than registration does)."""
    step = 1
    while fixed.array.size / step**3 > SIMILARITY_MAX_VOXELS:
        step += 1
    sub = (Ellipsis, slice(None, None, step), slice(None, None, step), slice(None, None, step))
    a, b = fixed.array[sub], image.array[sub]
    m = None if mask is None else np.asarray(mask)[sub]
    return {"ncc": ncc(a, b, m), "mi": mutual_information(a, b, mask=m)}
