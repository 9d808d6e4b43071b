"""Closed-form 3x3 / 4x4 float64 arithmetic without BLAS or LAPACK (plain numpy elementwise operations and Python
floats): matrix products, determinant, inverse, nearest rotation (polar decomposition) and its unit quaternion.

Why: ``np.linalg`` and ``@`` on float64 matrices run OpenBLAS / LAPACK code; converting one small DICOM series
touched about 1.2 MiB of those libraries' code pages for the first time (issue 17: the whole-process memory of a
1.17 MiB volume is measured against 3x the volume). The geometry of a volume needs only 3x3 / 4x4 matrices, for
which these closed forms are exact or within a few float64 ulp of LAPACK (the NIfTI header stores float32).
"""

from __future__ import annotations

import math

import numpy as np

POLAR_TOL = 1e-15  # Newton steps stop when no element changes by more than this (about 4.5 float64 ulp of 1)
POLAR_MAX_STEPS = 12
POLAR_MAX_DEPARTURE = 0.1  # max |R^T R - I| beyond which the Newton iteration is not used (caller falls back)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for small 2-D float64 matrices as a sum of outer products over k = 0, 1, ...: the same values as
    numpy's BLAS product, signed zeros included (a sum of zero products is +0, as BLAS returns)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    out = np.zeros((a.shape[0], b.shape[1]))
    for k in range(a.shape[1]):
        out += a[:, k, None] * b[None, k, :]
    return out


def det3(m: np.ndarray) -> float:
    """Determinant of a 3x3 matrix (cofactor expansion along the first row)."""
    (a, b, c), (d, e, f), (g, h, i) = np.asarray(m, dtype=float).tolist()
    return a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)


def inv3(m: np.ndarray) -> np.ndarray:
    """Inverse of a non-singular 3x3 matrix (adjugate / determinant); ``ValueError`` when singular."""
    (a, b, c), (d, e, f), (g, h, i) = np.asarray(m, dtype=float).tolist()
    det = det3(m)
    if det == 0.0 or not math.isfinite(det):
        raise ValueError("singular 3x3 matrix")
    adj = [[e * i - f * h, c * h - b * i, b * f - c * e],
           [f * g - d * i, a * i - c * g, c * d - a * f],
           [d * h - e * g, b * g - a * h, a * e - b * d]]
    return np.array(adj) / det


def nearest_rotation(r: np.ndarray) -> np.ndarray | None:
    """The orthogonal polar factor of a 3x3 matrix of positive determinant (the nearest rotation in the Frobenius
    norm, what ``U @ Vt`` of its SVD gives), by Newton's iteration R <- (R + R^-T) / 2, quadratically convergent;
    ``None`` when ``r`` is far from orthogonal (max |R^T R - I| > ``POLAR_MAX_DEPARTURE``), not of positive
    determinant, or the iteration does not settle within ``POLAR_MAX_STEPS`` steps: then use an SVD."""
    x = np.array(r, dtype=float)
    if x.shape != (3, 3) or not np.all(np.isfinite(x)) or det3(x) <= 0:
        return None
    if np.max(np.abs(matmul(x.T, x) - np.eye(3))) > POLAR_MAX_DEPARTURE:
        return None
    for _ in range(POLAR_MAX_STEPS):
        nxt = (x + inv3(x).T) / 2.0
        change = np.max(np.abs(nxt - x))
        x = nxt
        if change <= POLAR_TOL:
            return x
    return None


def rotation_quaternion(m: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), w >= 0, of a 3x3 rotation matrix, by Shepperd's method (the branch of the
    largest of the trace and the diagonal elements, so no division by a small number). Convention as
    ``nibabel.quaternions.mat2quat`` / the NIfTI qform: ``m`` = the rotation of quaternion (w, x, y, z) acting on
    column vectors."""
    (m00, m01, m02), (m10, m11, m12), (m20, m21, m22) = np.asarray(m, dtype=float).tolist()
    trace = m00 + m11 + m22
    largest = max(trace, m00, m11, m22)
    if largest == trace:
        w = math.sqrt(1.0 + trace) / 2.0
        q = [w, (m21 - m12) / (4 * w), (m02 - m20) / (4 * w), (m10 - m01) / (4 * w)]
    elif largest == m00:
        x = math.sqrt(1.0 + m00 - m11 - m22) / 2.0
        q = [(m21 - m12) / (4 * x), x, (m01 + m10) / (4 * x), (m02 + m20) / (4 * x)]
    elif largest == m11:
        y = math.sqrt(1.0 + m11 - m00 - m22) / 2.0
        q = [(m02 - m20) / (4 * y), (m01 + m10) / (4 * y), y, (m12 + m21) / (4 * y)]
    else:
        z = math.sqrt(1.0 + m22 - m00 - m11) / 2.0
        q = [(m10 - m01) / (4 * z), (m02 + m20) / (4 * z), (m12 + m21) / (4 * z), z]
    out = np.array(q)
    return -out if out[0] < 0 else out


def dot3(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> float:
    """Dot product of two 3-vectors in Python floats (within an ulp or two of BLAS ``ddot``, which may fuse)."""
    (a0, a1, a2), (b0, b1, b2) = (float(x) for x in a), (float(x) for x in b)
    return a0 * b0 + a1 * b1 + a2 * b2


def norm3(v: np.ndarray | list[float]) -> float:
    """Euclidean length of a 3-vector (what ``np.linalg.norm`` computes, without BLAS ``ddot``)."""
    return math.sqrt(dot3(v, v))


def rows_dot(rows: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``rows @ v`` for an (n, 3) array and a 3-vector, elementwise (no BLAS ``gemv``)."""
    rows = np.asarray(rows, dtype=float)
    v0, v1, v2 = (float(x) for x in v)
    return rows[:, 0] * v0 + rows[:, 1] * v1 + rows[:, 2] * v2
