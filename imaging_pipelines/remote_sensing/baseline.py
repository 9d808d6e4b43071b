"""Otsu-threshold baseline segmentation of a composite: one index band per class, no training.

For each class (in ``classes`` dict order) that has an index band in ``baselines``, the Otsu threshold
(``skimage.filters.threshold_otsu``) of that band over its valid (finite) pixels splits the tile; pixels
strictly above it get the class value. Overlaps: the FIRST class in ``classes`` order wins (a later class
never overwrites a pixel an earlier class took). Pixels where any used index band is NaN are 0.
Classes without a ``baselines`` entry are never predicted. A band with fewer than two distinct valid
values gives no threshold: that class is not predicted on this tile.
"""

from __future__ import annotations

import numpy as np
from skimage.filters import threshold_otsu

from imaging_pipelines.core.raster import Raster


def otsu_thresholds(composite: Raster, classes: dict[str, int], baselines: dict[str, str]) -> dict[str, float]:
    """``{class: Otsu threshold}`` of each class's index band (NaN when it cannot be computed)."""
    out = {}
    for name in classes:
        band = baselines.get(name)
        if band is None:
            continue
        try:
            data = composite.band(band)
        except KeyError:
            raise ValueError(f"baseline for {name!r}: no band {band!r} in the composite "
                             f"(bands {composite.band_names})") from None
        values = data[np.isfinite(data)]
        distinct = values.size > 1 and values.min() < values.max()
        out[name] = float(threshold_otsu(values)) if distinct else float("nan")
    return out


def otsu_baseline(composite: Raster, classes: dict[str, int], baselines: dict[str, str]) -> np.ndarray:
    """``(y, x)`` uint8 class values: per class, index band > its Otsu threshold (first class wins); NaN -> 0."""
    thresholds = otsu_thresholds(composite, classes, baselines)
    out = np.zeros((composite.height, composite.width), np.uint8)
    invalid = np.zeros(out.shape, bool)
    for name, value in classes.items():
        if name not in thresholds:
            continue
        data = composite.band(baselines[name])
        invalid |= ~np.isfinite(data)
        t = thresholds[name]
        if np.isnan(t):
            continue
        with np.errstate(invalid="ignore"):
            take = (data > t) & (out == 0)
        out[take] = value
    out[invalid] = 0
    return out
