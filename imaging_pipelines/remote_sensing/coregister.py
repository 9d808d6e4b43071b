"""Translation-only co-registration of image pairs by (subpixel) phase correlation.

Sign convention, used by both functions (rows ``y`` down, columns ``x`` right, in pixels):

* ``apply_shift(a, dy, dx)[..., y, x] == a[..., y - dy, x - dx]``: the image *content* moves by
  ``+dy`` rows (down) and ``+dx`` columns (right).
* ``phase_correlation_shift(reference, moving) -> (dy, dx)`` is the displacement of ``moving``'s content
  relative to ``reference``: ``moving ~= apply_shift(reference, dy, dx)``, so
  ``apply_shift(moving, -dy, -dx)`` realigns ``moving`` onto ``reference``.

  (:func:`skimage.registration.phase_cross_correlation` returns the *opposite*: the shift that
  registers ``moving`` onto ``reference``; checked numerically: ``np.roll(ref, (3, -5))`` gives
  ``[-3, 5]`` from skimage and ``(3, -5)`` here.)
"""

from __future__ import annotations

import math

import numpy as np
from skimage.registration import phase_cross_correlation

MIN_VALID_PIXELS = 64


def _prepare(image: np.ndarray, valid: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Mean-centred image, invalid pixels set to the mean (0 after centring), tapered by ``window``."""
    out = np.asarray(image, dtype=np.float64).copy()
    mean = out[valid].mean()
    out -= mean
    out[~valid] = 0.0
    return out * window


def phase_correlation_shift(
    reference: np.ndarray,
    moving: np.ndarray,
    valid: np.ndarray | None = None,
    upsample_factor: int = 10,
) -> tuple[float, float]:
    """``(dy, dx)`` in pixels (float, 1/``upsample_factor`` precision): ``moving``'s displacement relative
    to ``reference`` (see the module docstring; ``apply_shift(moving, -dy, -dx)`` realigns it).

    ``reference`` and ``moving`` are (y, x) arrays of the same shape (e.g. the mean of reflectance bands);
    NaN pixels, and pixels where the optional bool ``valid`` is False, are filled with the image mean
    before the FFT. Both images are Hann-tapered and cross-correlated (skimage upsampled DFT, no phase
    normalisation: more accurate at subpixel level on smooth natural images). ``ValueError`` when fewer
    than 64 pixels are valid in both or an image is constant.
    """
    ref = np.asarray(reference, dtype=np.float64)
    mov = np.asarray(moving, dtype=np.float64)
    if ref.ndim != 2 or ref.shape != mov.shape:
        raise ValueError(f"need two (y, x) images of one shape, got {ref.shape} and {mov.shape}")
    ok = np.isfinite(ref) & np.isfinite(mov)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != ref.shape:
            raise ValueError(f"valid mask {valid.shape} does not match the images {ref.shape}")
        ok &= valid
    n_valid = int(ok.sum())
    if n_valid < MIN_VALID_PIXELS:
        raise ValueError(f"only {n_valid} pixels valid in both images (need {MIN_VALID_PIXELS})")
    if np.ptp(ref[ok]) == 0 or np.ptp(mov[ok]) == 0:
        raise ValueError("an image is constant over the valid pixels: no shift can be measured")
    window = np.outer(np.hanning(ref.shape[0]), np.hanning(ref.shape[1]))
    shift, _, _ = phase_cross_correlation(
        _prepare(ref, ok, window), _prepare(mov, ok, window),
        upsample_factor=upsample_factor, normalization=None,
    )
    # skimage: the shift registering moving onto reference = minus the displacement of moving.
    return float(-shift[0]) + 0.0, float(-shift[1]) + 0.0


def _shift_int(a: np.ndarray, k: int, axis: int) -> np.ndarray:
    """``out[..., i, ...] = a[..., i - k, ...]`` along ``axis``, NaN where ``i - k`` is outside."""
    out = np.full_like(a, np.nan)
    n = a.shape[axis]
    if abs(k) >= n:
        return out
    dst = [slice(None)] * a.ndim
    src = [slice(None)] * a.ndim
    dst[axis] = slice(max(k, 0), n + min(k, 0))
    src[axis] = slice(max(-k, 0), n - max(k, 0))
    out[tuple(dst)] = a[tuple(src)]
    return out


def _shift_axis(a: np.ndarray, s: float, axis: int) -> np.ndarray:
    k = math.floor(s)
    f = s - k
    if f < 1e-6:
        return a if k == 0 else _shift_int(a, k, axis)
    if f > 1 - 1e-6:
        return _shift_int(a, k + 1, axis)
    # a(i - s) with i - s between i - k - 1 and i - k: linear interpolation.
    out = _shift_int(a, k, axis)
    out *= np.float32(1 - f)
    out += np.float32(f) * _shift_int(a, k + 1, axis)
    return out


def apply_shift(array: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """``array`` (..., y, x) translated by ``(dy, dx)`` pixels (content moves down/right for positive
    values), as a new float32 array. Integer shifts copy values exactly; fractional ones interpolate
    bilinearly. Pixels shifted in from outside the array (or interpolated from a NaN) are NaN."""
    a = np.asarray(array, dtype=np.float32)
    if a.ndim < 2:
        raise ValueError(f"need an array (..., y, x), got shape {a.shape}")
    if not (math.isfinite(dy) and math.isfinite(dx)):
        raise ValueError(f"shift must be finite, got ({dy}, {dx})")
    out = _shift_axis(_shift_axis(a, float(dy), a.ndim - 2), float(dx), a.ndim - 1)
    return out.copy() if out is a else out


def shift_mask(mask: np.ndarray, dy: float, dx: float, outside: bool) -> np.ndarray:
    """A bool (..., y, x) mask moved like :func:`apply_shift`: True where any pixel it is interpolated
    from is True (conservative); pixels coming from outside the array are ``outside``."""
    moved = apply_shift(np.asarray(mask, dtype=np.float32), dy, dx)
    return np.where(np.isnan(moved), outside, moved > 0)
