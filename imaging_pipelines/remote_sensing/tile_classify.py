"""Tile classification inputs (no dagster, no torch): a tile's reference class from its label raster, and
the tile image resized to the square ``(c, size, size)`` network input.

Images are ``(channel, y, x)`` float32 analysis-ready bands (reflectance, indices), NaN = invalid; the
reference is ``(y, x)`` uint8 class values on the same grid.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def tile_class(reference: np.ndarray, values: list[int], min_fraction: float = 0.5,
               valid: np.ndarray | None = None) -> int | None:
    """The class value (one of ``values``) covering at least ``min_fraction`` of the ``valid`` pixels of
    ``reference`` (all by default) and more than any other; None when no class does (a mixed tile)."""
    ref = np.asarray(reference)
    if valid is not None:
        ref = ref[np.asarray(valid, bool)]
    if ref.size == 0:
        return None
    counts = {v: int(np.count_nonzero(ref == v)) for v in values}
    best = max(counts, key=lambda v: (counts[v], -v))
    return int(best) if counts[best] >= min_fraction * ref.size else None


def tile_input(image: np.ndarray, size: int) -> np.ndarray:
    """``(c, size, size)`` float32: each channel resized by linear interpolation (NaN pixels stay NaN where
    they dominate: they are filled with the channel's mean before resizing and put back by nearest neighbour)."""
    image = np.asarray(image, np.float32)
    c, h, w = image.shape
    if (h, w) == (size, size):
        return image.copy()
    factors = (size / h, size / w)
    out = np.empty((c, size, size), np.float32)
    for k in range(c):
        band = image[k]
        invalid = ~np.isfinite(band)
        fill = float(np.nanmean(band)) if (~invalid).any() else 0.0
        resized = ndimage.zoom(np.where(invalid, fill, band), factors, order=1, grid_mode=True, mode="nearest")
        holes = ndimage.zoom(invalid.astype(np.uint8), factors, order=0, grid_mode=True, mode="nearest") > 0
        out[k] = np.where(holes[:size, :size], np.nan, resized[:size, :size])
    return out
