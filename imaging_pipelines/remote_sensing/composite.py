"""Per-pixel temporal composites of co-registered reflectance stacks.

Stacks are ``(time, band, y, x)`` float32 with NaN = invalid; ``clear`` masks are ``(time, y, x)`` bool
(True = usable: not cloud, not nodata). An observation (date, pixel) is used only when it is clear and
every band is valid there, so a composite pixel's bands always come from the same set of dates.
"""

from __future__ import annotations

import warnings

import numpy as np


def _usable(stack: np.ndarray, clear: np.ndarray | None) -> np.ndarray:
    """(t, y, x) bool: clear and valid in every band."""
    if stack.ndim != 4:
        raise ValueError(f"need a (time, band, y, x) stack, got shape {stack.shape}")
    usable = ~np.isnan(stack).any(axis=1)
    if clear is not None:
        clear = np.asarray(clear, dtype=bool)
        expected = (stack.shape[0], *stack.shape[2:])
        if clear.shape != expected:
            raise ValueError(f"clear mask {clear.shape} does not match the stack: expected {expected}")
        usable &= clear
    return usable


def median_composite(stack: np.ndarray, clear: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel, per-band median over the usable observations.

    Returns ``(composite (band, y, x) float32, NaN where no usable observation;
    count (y, x) uint8 = number of usable observations, capped at 255)``. With an even count the median
    is the mean of the two middle values (numpy's convention).
    """
    stack = np.asarray(stack, dtype=np.float32)
    usable = _usable(stack, clear)
    masked = np.where(usable[:, np.newaxis], stack, np.float32(np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices -> NaN, as wanted
        composite = np.nanmedian(masked, axis=0).astype(np.float32, copy=False)
    count = np.minimum(usable.sum(axis=0), 255).astype(np.uint8)
    return composite, count


def least_cloudy_date(stack: np.ndarray, clear: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """The single date with the most usable pixels (the first on ties), its non-usable pixels set to NaN.

    Returns ``(composite (band, y, x) float32, count (y, x) uint8 in {0, 1}, date index)``.
    """
    stack = np.asarray(stack, dtype=np.float32)
    usable = _usable(stack, clear)
    best = int(np.argmax(usable.reshape(usable.shape[0], -1).sum(axis=1)))
    composite = np.where(usable[best][np.newaxis], stack[best], np.float32(np.nan)).astype(np.float32)
    return composite, usable[best].astype(np.uint8), best
