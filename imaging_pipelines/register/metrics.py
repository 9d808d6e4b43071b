"""Registration quality measures: similarity (NCC, mutual information), Jacobian determinant, Dice.

Displacement fields are arrays (z, y, x, 3) of LPS millimetre offsets with components in (x, y, z)
order, sampled on a grid with spacing (sx, sy, sz) in mm and direction cosines ``direction``.
"""

from __future__ import annotations

import numpy as np

from imaging_pipelines.volume import Volume


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
    """Mutual information in nats from a joint histogram with ``bins`` bins per image."""
    x, y = _masked(a, b, mask)
    joint, _, _ = np.histogram2d(x, y, bins=bins)
    pxy = joint / max(joint.sum(), 1.0)
    px = pxy.sum(axis=1, keepdims=True)
    py = pxy.sum(axis=0, keepdims=True)
    nz = pxy > 0
    return float((pxy[nz] * np.log(pxy[nz] / (px @ py)[nz])).sum())


def jacobian_determinant(displacement: np.ndarray, spacing: tuple[float, float, float],
                         direction: np.ndarray | None = None) -> np.ndarray:
    """det(I + d(displacement)/d(position)) on the grid, array (z, y, x).

    Derivatives are central differences in index space divided by the spacing, rotated into world axes
    with ``direction`` (columns = index axes i, j, k in LPS).
    """
    u = np.asarray(displacement, dtype=np.float64)
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    # grad[..., c, a]: d u_c / d index-axis a (a = 0:i/x, 1:j/y, 2:k/z), per mm along that axis
    grad = np.empty(u.shape[:3] + (3, 3))
    for a, (axis, step) in enumerate(((2, spacing[0]), (1, spacing[1]), (0, spacing[2]))):
        if u.shape[axis] > 1:
            grad[..., :, a] = np.gradient(u, step, axis=axis)
        else:
            grad[..., :, a] = 0.0
    # d u / d world = (d u / d index-mm) @ direction^T (index-mm axes -> world axes)
    jac = np.eye(3) + grad @ direction.T
    return np.linalg.det(jac)


def jacobian_stats(displacement: np.ndarray, spacing, direction=None, mask: np.ndarray | None = None) -> dict[str, float]:
    """Min / max / mean / std of the Jacobian determinant and the folding fraction (share of det <= 0)."""
    det = jacobian_determinant(displacement, spacing, direction)
    if mask is not None:
        det = det[np.asarray(mask).astype(bool)]
    return {
        "jacobian_min": float(det.min()),
        "jacobian_max": float(det.max()),
        "jacobian_mean": float(det.mean()),
        "jacobian_std": float(det.std()),
        "folding_fraction": float((det <= 0).mean()),
    }


def dice(a: np.ndarray, b: np.ndarray, label: int | None = None) -> float:
    """Dice overlap of two masks (or of one label value in two label maps); 1.0 when both are empty."""
    x = np.asarray(a) == label if label is not None else np.asarray(a).astype(bool)
    y = np.asarray(b) == label if label is not None else np.asarray(b).astype(bool)
    total = x.sum() + y.sum()
    return float(2.0 * np.logical_and(x, y).sum() / total) if total else 1.0


def similarity(fixed: Volume, image: Volume, mask: np.ndarray | None = None) -> dict[str, float]:
    """NCC and mutual information between two volumes on the same grid."""
    return {"ncc": ncc(fixed.array, image.array, mask), "mi": mutual_information(fixed.array, image.array, mask=mask)}
