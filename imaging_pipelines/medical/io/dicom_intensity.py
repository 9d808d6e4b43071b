"""Intensity scaling of one DICOM stack, following dcm2niix's rules, so conversions match it voxel for voxel.

Two representations are produced for every stack:

* ``stored`` + (``scl_slope``, ``scl_inter``): what dcm2niix writes into a NIfTI file (stored pixel values and
  the NIfTI scale factors, both float32);
* ``physical``: ``stored * scl_slope + scl_inter``, the array the pipeline works with (float32, or an integer
  type when the scaling is integral).

Rules (dcm2niix ``intensityScaleVaries``, ``nii_iVaries`` and ``PhilipsPrecise``):

* RescaleSlope/RescaleIntercept equal for every image: stored = the stored pixels, scl = (slope, intercept);
* Philips with the private scale slope SS (2005,100E) and uniform scaling: the precise floating-point values
  ``FP = (PV * RS + RI) / (RS * SS)`` (``UsePhilipsFloatNotDisplayScaling``), i.e. scl from FP(0), FP(1)
  computed in float32;
* the slope/intercept differ between images: stored = float32 ``PV * RS_i + RI_i`` per image, scl = (1, 0),
  except classic (single-frame) Philips files with SS, where dcm2niix keeps the precise scl of the first image.

The choice is recorded in the volume attributes as ``intensity_scaling``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

FLT_EPSILON = float(np.finfo(np.float32).eps)


@dataclass
class StackIntensity:
    """A stack's voxels as dcm2niix stores them and as physical values (see module docstring)."""

    stored: np.ndarray
    scl_slope: float
    scl_inter: float
    physical: np.ndarray
    method: str

    def metadata(self) -> dict[str, Any]:
        """JSON-able description of the scaling chosen (stored in the volume attributes)."""
        return {"method": self.method, "nifti_scl_slope": float(self.scl_slope),
                "nifti_scl_inter": float(self.scl_inter), "stored_dtype": str(self.stored.dtype)}


def philips_precise(slope: float, intercept: float, scale_slope: float) -> tuple[float, float]:
    """(scl_slope, scl_inter) of Philips floating-point values FP = (PV*RS + RI) / (RS*SS), in float32 as dcm2niix."""
    rs, ri, ss = np.float32(slope), np.float32(intercept), np.float32(scale_slope)
    if rs * ss == 0:
        return float(rs), float(ri)
    l0 = np.float32((np.float32(0) * rs + ri) / (rs * ss))
    l1 = np.float32((np.float32(1) * rs + ri) / (rs * ss))
    if l0 == l1:
        return float(rs), float(ri)
    return float(np.float32(l1 - l0)), float(l0)


def _varies(slopes: Sequence[float], intercepts: Sequence[float]) -> bool:
    s0, i0 = np.float32(slopes[0]), np.float32(intercepts[0])
    return any(abs(np.float32(s) - s0) > FLT_EPSILON or abs(np.float32(i) - i0) > FLT_EPSILON
               for s, i in zip(slopes, intercepts))


def _integral(x: float) -> bool:
    return float(x).is_integer()


def _physical(stored: np.ndarray, slope: float, inter: float, in_place: bool = False) -> np.ndarray:
    """``stored * slope + inter``: the stored array when identity, an integer array when integral, else float32.
    ``in_place``: the caller no longer needs ``stored``, so integral scaling may overwrite it when the result
    fits its type (CT stored as int16 -> HU as int16 without a second volume-sized array)."""
    if slope == 1 and inter == 0:
        if stored.dtype == np.uint16 and (not stored.size or int(stored.max()) <= 32767):
            return stored.astype(np.int16)  # as dcm2niix (nii_check16bitUnsigned)
        return stored
    if stored.dtype.kind in "iu" and _integral(slope) and _integral(inter):
        lo, hi = (int(stored.min()), int(stored.max())) if stored.size else (0, 0)
        vals = (lo * slope + inter, hi * slope + inter)
        for dtype in (np.int16, np.int32):
            info = np.iinfo(dtype)
            if min(vals) >= info.min and max(vals) <= info.max:
                out = _reusable(stored, dtype, hi) if in_place else None
                out = stored.astype(dtype) if out is None else out
                out *= dtype(slope)
                out += dtype(inter)
                return out
    return (stored.astype(np.float64) * slope + inter).astype(np.float32)


def _reusable(stored: np.ndarray, dtype: type, hi: int) -> np.ndarray | None:
    """``stored`` itself as ``dtype`` when that needs no copy (same type, or uint16 values <= 32767 read as
    int16), else None."""
    if stored.dtype == dtype:
        return stored
    if stored.dtype == np.uint16 and dtype is np.int16 and hi <= 32767:
        return stored.view(np.int16)
    return None


def stack_intensity(planes: Iterable[np.ndarray], dtype: np.dtype, slopes: Sequence[float],
                    intercepts: Sequence[float], philips_scale: Sequence[float | None], shape: tuple[int, ...],
                    manufacturer: str, enhanced: bool) -> StackIntensity:
    """Scale the 2D ``planes`` (in output order, stored type ``dtype``) of one stack into ``shape`` (see module
    docstring). Integral scaling (e.g. CT to HU) is applied to the stored values themselves (NIfTI scale factors
    1 and 0), so that only one array of the volume's size is kept."""
    philips = "PHILIPS" in manufacturer.upper()
    ss0 = philips_scale[0] if philips and philips_scale else None
    varies = _varies(slopes, intercepts)
    if enhanced and philips and len({s for s in philips_scale}) > 1:
        varies = True  # dcm2niix isScaleVariesEnh: any change of RS, RI or SS between frames
    if not varies:
        stored = np.empty(shape, dtype=dtype)
        flat = stored.reshape(-1, *shape[-2:])
        for n, p in enumerate(planes):
            flat[n] = p
        slope, inter = float(np.float32(slopes[0])), float(np.float32(intercepts[0]))
        method = "RescaleSlope/RescaleIntercept" if (slope, inter) != (1.0, 0.0) else "none"
        if ss0:
            slope, inter = philips_precise(slopes[0], intercepts[0], ss0)
            method = "Philips precise floating point (private scale slope 2005,100E)"
        integral = stored.dtype.kind in "iu" and _integral(slope) and _integral(inter)
        physical = _physical(stored, slope, inter, in_place=integral)
        if integral and physical.dtype.kind in "iu":  # integral: keep only one array
            del stored
            applied = method + " (integral, applied)" if (slope, inter) != (1.0, 0.0) else method
            return StackIntensity(physical, 1.0, 0.0, physical, applied)
        return StackIntensity(stored, slope, inter, physical, method)
    stored = np.empty(shape, dtype=np.float32)
    flat = stored.reshape(-1, *shape[-2:])
    for n, (p, s, b) in enumerate(zip(planes, slopes, intercepts)):
        flat[n] = p.astype(np.float32) * np.float32(s) + np.float32(b)
    slope, inter, method = 1.0, 0.0, "RescaleSlope/RescaleIntercept per image (varies)"
    if ss0 and not enhanced:  # dcm2niix applies the first image's precise scaling on top (classic Philips)
        slope, inter = philips_precise(slopes[0], intercepts[0], ss0)
        method += ", then Philips precise scaling of the first image"
    return StackIntensity(stored, slope, inter, _physical(stored, slope, inter), method)


def rgb_stack(planes: Sequence[np.ndarray], shape: tuple[int, ...]) -> StackIntensity:
    """8-bit RGB planes (rows, cols, 3) of a single-time-point stack: stored (z, y, x, 3) as dcm2niix's RGB24,
    physical (3, z, y, x) with the colour along the volume's first (time) axis."""
    if len(shape) != 3:
        raise ValueError("colour (RGB) series with several time points are not supported")
    stored = np.stack(planes).reshape(*shape, 3)
    physical = np.ascontiguousarray(np.moveaxis(stored, -1, 0))
    return StackIntensity(stored, 1.0, 0.0, physical, "RGB")


def refill(intensity: StackIntensity, plan: Any) -> StackIntensity:
    """The stack with missing slices interpolated (``plan``: :class:`~.dicom_gaps.GapPlan`) in the stored values;
    physical values recomputed from them with the same NIfTI scale factors."""
    from .dicom_gaps import fill_gaps

    stored = fill_gaps(intensity.stored, plan)
    return StackIntensity(stored, intensity.scl_slope, intensity.scl_inter,
                          _physical(stored, intensity.scl_slope, intensity.scl_inter),
                          intensity.method)
