"""Normalised-difference spectral indices and a crude threshold cloud mask.

Bands are looked up by name (case-insensitive) in :attr:`Raster.band_names`; pass other names when a
sensor's bands are called e.g. ``B4``/``B5``. Inputs may be DNs or reflectance: normalised differences
are scale-free (but not offset-free: apply any additive offset first). Outputs are float32 in
``[-1, 1]`` with ``nodata = NaN``: a pixel is NaN where either input is nodata/NaN or the sum is 0.

* NDVI = (NIR - Red) / (NIR + Red)            vegetation
* NDWI = (Green - NIR) / (Green + NIR)        open water (McFeeters 1996)
* NDBI = (SWIR1 - NIR) / (SWIR1 + NIR)        built-up (Zha et al. 2003)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from imaging_pipelines.core.raster import Raster, nodata_in_dtype

INDEX_BANDS = {"ndvi": ("nir", "red"), "ndwi": ("green", "nir"), "ndbi": ("swir1", "nir")}


def normalized_difference_array(
    a: np.ndarray, b: np.ndarray, invalid: np.ndarray | None = None, nodata: float | None = None
) -> np.ndarray:
    """``(a - b) / (a + b)`` as float32, NaN where ``invalid``, where ``a`` or ``b`` equals ``nodata``,
    where either is NaN, or where ``a + b == 0``. One output, one sum and one mask array: the inputs
    are cast per element, never copied."""
    out = np.subtract(a, b, dtype=np.float32)
    total = np.add(a, b, dtype=np.float32)
    bad = total == 0
    if invalid is not None:
        np.logical_or(bad, invalid, out=bad)
    for band in (a, b):
        value = nodata_in_dtype(nodata, band.dtype)
        if value is not None:
            np.logical_or(bad, band == value, out=bad)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(out, total, out=out)  # NaN inputs stay NaN through the arithmetic
    np.copyto(out, np.float32(np.nan), where=bad)  # cheaper than out[bad] = nan
    return out


def normalized_difference(raster: Raster, band_a: str, band_b: str, name: str = "nd") -> Raster:
    """One-band float32 raster ``(A - B) / (A + B)`` on ``raster``'s grid (``nodata = NaN``)."""
    ia, ib = raster.band_index(band_a), raster.band_index(band_b)
    out = normalized_difference_array(raster.array[ia], raster.array[ib], nodata=raster.nodata)
    return raster.with_array(out[np.newaxis], nodata=float("nan"), band_names=[name])


def ndvi(raster: Raster, nir: str = "nir", red: str = "red") -> Raster:
    return normalized_difference(raster, nir, red, "ndvi")


def ndwi(raster: Raster, green: str = "green", nir: str = "nir") -> Raster:
    return normalized_difference(raster, green, nir, "ndwi")


def ndbi(raster: Raster, swir1: str = "swir1", nir: str = "nir") -> Raster:
    return normalized_difference(raster, swir1, nir, "ndbi")


def spectral_indices(raster: Raster, names: Sequence[str] = ("ndvi",), bands: dict[str, str] | None = None) -> Raster:
    """Several indices stacked as bands (named as requested). ``bands`` maps the generic band names
    (``red``, ``green``, ``nir``, ``swir1``) to the raster's own, e.g. ``{"nir": "B5", "red": "B4"}``."""
    bands = {k.lower(): v for k, v in (bands or {}).items()}
    layers = []
    for name in names:
        a, b = INDEX_BANDS[name.lower()]
        layers.append(normalized_difference(raster, bands.get(a, a), bands.get(b, b), name).array[0])
    return raster.with_array(np.stack(layers), nodata=float("nan"), band_names=list(names))


def cloud_mask(
    raster: Raster,
    *,
    scale: float = 1.0,
    brightness: float = 0.3,
    whiteness: float = 0.7,
    bands: tuple[str, str, str] = ("blue", "green", "red"),
) -> np.ndarray:
    """(y, x) bool: crude cloud test on top-of-atmosphere reflectance (``DN * scale``).

    A pixel is cloudy when its mean visible reflectance is >= ``brightness`` and it is "white":
    ``sum(|band - mean|) / mean <= whiteness`` (Fmask's whiteness test, Zhu & Woodcock 2012). Bright
    snow, sand and roofs also pass: a heuristic for flagging, not a cloud product. Nodata is False.
    """
    vis = np.stack([raster.band(b).astype(np.float32) * scale for b in bands])
    mean = vis.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        white = np.abs(vis - mean).sum(axis=0) / mean
    return (mean >= brightness) & (white <= whiteness) & raster.valid_mask()
