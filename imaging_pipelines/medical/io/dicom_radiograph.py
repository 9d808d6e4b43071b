"""Presentation attributes of planar images (CR, DX, MG, secondary capture) and MONOCHROME1 inversion.

* Pixel spacing: PixelSpacing (calibrated in the patient plane when present) is used, else ImagerPixelSpacing
  (at the detector: distances in the patient are smaller by the magnification factor), else 1 mm; which one is
  recorded, with PixelSpacingCalibrationType and EstimatedRadiographicMagnificationFactor when present.
* MONOCHROME1 (low values bright) is inverted to MONOCHROME2 (low values dark) on the stored values,
  ``(2**BitsStored - 1) - value`` (unsigned) or ``-1 - value`` (signed), before rescaling.
* The VOI LUT (WindowCenter/WindowWidth, VOILUTFunction, presence of a VOILUTSequence) and the
  PresentationIntentType (FOR PRESENTATION / FOR PROCESSING) are recorded, not applied: the stored values are
  kept. Nothing identifying is recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

PLANAR_KEYWORDS = ("PixelSpacing", "ImagerPixelSpacing", "PixelSpacingCalibrationType",
                   "EstimatedRadiographicMagnificationFactor", "PresentationIntentType", "WindowCenter", "WindowWidth",
                   "VOILUTFunction", "ViewPosition", "ImageLaterality")


def _floats(value: Any) -> list[float] | None:
    if value is None or value == "":
        return None
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else [value]
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return out if all(np.isfinite(out)) else None


def _text(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword)
    return str(value).strip() or None if value is not None else None


def _positive_pair(value: Any) -> tuple[float, float] | None:
    v = _floats(value)
    return (v[0], v[1]) if v and len(v) >= 2 and v[0] > 0 and v[1] > 0 else None


def planar_spacing(ds: Any) -> tuple[tuple[float, float], str]:
    """((between rows, between columns) mm, source): PixelSpacing, else ImagerPixelSpacing, else 1 mm.

    Zero or missing values (seen in real CR files) are treated as absent."""
    ps = _positive_pair(ds.get("PixelSpacing"))
    if ps:
        return ps, "PixelSpacing"
    ps = _positive_pair(ds.get("ImagerPixelSpacing"))
    if ps:
        return ps, "ImagerPixelSpacing (detector plane, not corrected for magnification)"
    return (1.0, 1.0), "none in header (1 mm assumed)"


def planar_attributes(ds: Any) -> dict[str, Any]:
    """Spacing source and presentation attributes of a planar image (JSON-able, non-identifying)."""
    _, source = planar_spacing(ds)
    attrs: dict[str, Any] = {
        "pixel_spacing_source": source,
        "pixel_spacing_calibration_type": _text(ds, "PixelSpacingCalibrationType"),
        "imager_pixel_spacing_mm": _floats(ds.get("ImagerPixelSpacing")),
        "estimated_magnification": (_floats(ds.get("EstimatedRadiographicMagnificationFactor")) or [None])[0],
        "photometric_interpretation": _text(ds, "PhotometricInterpretation"),
        "inverted_monochrome1": is_monochrome1(ds),
        "presentation_intent": _text(ds, "PresentationIntentType"),
        "window_center": _floats(ds.get("WindowCenter")),
        "window_width": _floats(ds.get("WindowWidth")),
        "voi_lut_function": _text(ds, "VOILUTFunction"),
        "has_voi_lut_sequence": bool(ds.get("VOILUTSequence")),
        "view_position": _text(ds, "ViewPosition"),
        "laterality": _text(ds, "ImageLaterality"),
    }
    return {k: v for k, v in attrs.items() if v is not None}


def is_monochrome1(ds: Any) -> bool:
    return str(ds.get("PhotometricInterpretation", "") or "").strip().upper() == "MONOCHROME1"


def invert_monochrome1(plane: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """MONOCHROME1 stored values as MONOCHROME2 (same dtype)."""
    if signed:
        return (-1 - plane.astype(np.int64)).astype(plane.dtype)
    return ((1 << bits_stored) - 1 - plane.astype(np.int64)).astype(plane.dtype)
