"""Enhanced (functional-group) multi-frame DICOM: per-frame geometry, scaling and ordering keys.

Each frame's values are looked up first in its PerFrameFunctionalGroupsSequence item, then in the
SharedFunctionalGroupsSequence, then at the top level of the dataset (legacy multi-frame).
Positions/orientations are LPS mm, as in single-frame DICOM.
"""

from __future__ import annotations

from typing import Any


def has_functional_groups(ds) -> bool:
    return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds


class FrameLookup:
    """Find attribute ``name`` of macro sequence ``macro`` for one frame (per-frame > shared > top level)."""

    def __init__(self, ds) -> None:
        self.ds = ds
        shared = ds.get("SharedFunctionalGroupsSequence")
        self.shared = shared[0] if shared else None
        self.per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []

    def get(self, frame: int, macro: str, name: str, default: Any = None) -> Any:
        groups = []
        if frame < len(self.per_frame):
            groups.append(self.per_frame[frame])
        if self.shared is not None:
            groups.append(self.shared)
        for g in groups:
            seq = g.get(macro)
            if seq:
                item = seq[0]
                value = item.get(name)
                if value is not None and value != "":
                    return value
        value = self.ds.get(name)
        return default if value is None or value == "" else value


def macro_item(lookup: FrameLookup, frame: int, macro: str) -> Any:
    """The first item of functional-group macro ``macro`` for one frame (per-frame > shared), or None."""
    groups = [lookup.per_frame[frame]] if frame < len(lookup.per_frame) else []
    if lookup.shared is not None:
        groups.append(lookup.shared)
    for g in groups:
        seq = g.get(macro)
        if seq:
            return seq[0]
    return None


def frame_values(ds, frame: int, lookup: FrameLookup) -> dict[str, Any]:
    """Geometry, scaling and ordering values of one frame."""
    g = lookup.get
    return {
        "position": g(frame, "PlanePositionSequence", "ImagePositionPatient"),
        "orientation": g(frame, "PlaneOrientationSequence", "ImageOrientationPatient"),
        "pixel_spacing": g(frame, "PixelMeasuresSequence", "PixelSpacing"),
        "slice_thickness": g(frame, "PixelMeasuresSequence", "SliceThickness"),
        "spacing_between_slices": g(frame, "PixelMeasuresSequence", "SpacingBetweenSlices"),
        "slope": g(frame, "PixelValueTransformationSequence", "RescaleSlope", 1.0),
        "intercept": g(frame, "PixelValueTransformationSequence", "RescaleIntercept", 0.0),
        "stack_id": g(frame, "FrameContentSequence", "StackID"),
        "temporal_index": g(frame, "FrameContentSequence", "TemporalPositionIndex"),
        "dimension_index": g(frame, "FrameContentSequence", "DimensionIndexValues"),
        "acquisition_datetime": g(frame, "FrameContentSequence", "FrameAcquisitionDateTime"),
        "acquisition_number": g(frame, "FrameContentSequence", "FrameAcquisitionNumber"),
        "echo_time": g(frame, "MREchoSequence", "EffectiveEchoTime"),
        "image_type": g(frame, "MRImageFrameTypeSequence", "FrameType")
        or g(frame, "CTImageFrameTypeSequence", "FrameType"),
        "complex_component": g(frame, "MRImageFrameTypeSequence", "ComplexImageComponent"),
    }


PHILIPS_SCALE_SLOPE = 0x2005100E


def philips_scale_in(group: Any) -> float | None:
    """Philips SS (2005,100E) in a functional-group item, directly or inside one of its private sequences."""
    if group is None:
        return None
    if PHILIPS_SCALE_SLOPE in group:
        return _as_float(group[PHILIPS_SCALE_SLOPE].value)
    for tag in [t for t in group.keys() if t >> 16 == 0x2005]:  # only group 2005 elements are decoded
        elem = group[tag]
        if elem.VR == "SQ" and elem.value:
            item = elem.value[0]
            if PHILIPS_SCALE_SLOPE in item:
                return _as_float(item[PHILIPS_SCALE_SLOPE].value)
    return None


def _as_float(value: Any) -> float | None:
    try:
        if isinstance(value, bytes):
            import struct

            return struct.unpack("<f", value[:4])[0] if len(value) >= 4 else None
        return float(value[0] if isinstance(value, (list, tuple)) else value)
    except (TypeError, ValueError, IndexError):
        return None


def private_scale_slope(ds, frame: int, lookup: FrameLookup) -> float | None:
    """Philips private scale slope SS of one frame (per-frame > shared > top level), or None."""
    per_frame = lookup.per_frame[frame] if frame < len(lookup.per_frame) else None
    for group in (per_frame, lookup.shared):
        value = philips_scale_in(group)
        if value is not None:
            return value
    return philips_scale_in(ds)


def shared_mr_parameters(ds) -> dict[str, Any]:
    """TR (ms), flip angle (deg) and TE (ms) of an enhanced MR file, from the functional groups."""
    lookup = FrameLookup(ds)
    return {
        "repetition_time_ms": lookup.get(0, "MRTimingAndRelatedParametersSequence", "RepetitionTime"),
        "flip_angle_deg": lookup.get(0, "MRTimingAndRelatedParametersSequence", "FlipAngle"),
        "echo_time_ms": lookup.get(0, "MREchoSequence", "EffectiveEchoTime"),
        "slice_thickness_mm": lookup.get(0, "PixelMeasuresSequence", "SliceThickness"),
    }
