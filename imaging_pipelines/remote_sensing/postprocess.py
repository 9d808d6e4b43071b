"""Object-level clean-up of per-pixel class maps: drop small connected components, fill holes.

Class maps are ``(y, x)`` uint8 class values (0 = background) on a raster grid; areas are in pixels
(multiply by the pixel area in CRS units squared for m^2). Connectivity is 8-neighbour for components and
4-neighbour for the background around holes (``scipy.ndimage`` defaults for a filled mask).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def clean_class_map(classes: np.ndarray, min_pixels: int = 0, fill_holes: bool = False,
                    valid: np.ndarray | None = None) -> np.ndarray:
    """A copy of ``classes`` where, per foreground class value, holes enclosed by the class are filled with it
    (``fill_holes``; only background pixels are filled) and 8-connected components smaller than
    ``min_pixels`` pixels become background (0). Pixels outside ``valid`` (``(y, x)`` bool) stay 0."""
    if classes.ndim != 2:
        raise ValueError(f"class map must be (y, x), got {classes.shape}")
    out = np.array(classes, copy=True)
    for value in (int(v) for v in np.unique(classes) if v != 0):
        mask = out == value
        if fill_holes:
            out[ndimage.binary_fill_holes(mask) & (out == 0)] = value
            mask = out == value
        if min_pixels > 1:
            lab, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
            sizes = np.bincount(lab.ravel(), minlength=n + 1)
            out[(sizes < min_pixels)[lab] & mask] = 0
    if valid is not None:
        out[~valid] = 0
    return out


def choose_clean_up(probability: np.ndarray, reference: np.ndarray, valid: np.ndarray,
                    thresholds: list[float], min_pixels: list[int],
                    fill_holes: tuple[bool, ...] = (False, True)) -> tuple[float, int, bool, float]:
    """The binary clean-up with the best IoU against ``reference`` on validation pixels: ``(threshold,
    min_pixels, fill_holes, IoU)``. ``probability`` is the ``(y, x)`` probability of one foreground class,
    ``reference`` a ``(y, x)`` bool/0-1 mask of it, ``valid`` ``(y, x)`` bool. The foreground is
    ``probability >= threshold``, then :func:`clean_class_map`. Ties keep the first setting in grid order
    (smallest threshold, smallest ``min_pixels``, no filling). Use on validation data only, never on the
    region being scored."""
    ref = (np.asarray(reference) > 0) & valid
    best = (thresholds[0], min_pixels[0], fill_holes[0], -1.0)
    for th in thresholds:
        raw = ((probability >= th) & valid).astype(np.uint8)
        for fill in fill_holes:
            for m in min_pixels:
                mask = clean_class_map(raw, m, fill, valid) > 0
                union = int((mask | ref).sum())
                iou = int((mask & ref).sum()) / union if union else 1.0
                if iou > best[3]:
                    best = (float(th), int(m), bool(fill), iou)
    return best
