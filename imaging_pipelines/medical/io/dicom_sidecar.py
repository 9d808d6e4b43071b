"""BIDS sidecar (the ``.json`` dcm2niix writes beside each NIfTI): acquisition parameters of one converted volume.

Units follow BIDS: times in seconds, angles in degrees, field strength in tesla. Directions refer to the voxel
axes of the volume as this project writes it (i along the DICOM row direction, j along the column direction,
k along the sorted slice normal); dcm2niix stores rows bottom-up, so its ``PhaseEncodingDirection`` has the
opposite sign along j for the same acquisition.

Deliberately left out (identifying or free text): AcquisitionTime and every date/time of day, SeriesDescription,
ProtocolName, StudyDescription, ProcedureStepDescription, ImageComments, InstitutionName/Address/Department,
StationName, DeviceSerialNumber, patient attributes, UIDs. Siemens private text blocks (WipMemBlock,
ConsistencyInfo, ...) are not read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Standard keywords the sidecar reads (kept in slimmed headers).
SIDECAR_KEYWORDS = (
    "ImagingFrequency", "SoftwareVersions", "MRAcquisitionType", "ScanningSequence", "SequenceVariant",
    "ScanOptions", "SequenceName", "InversionTime", "PixelBandwidth", "EchoTrainLength", "PercentPhaseFieldOfView",
    "PercentSampling", "NumberOfPhaseEncodingSteps", "AcquisitionMatrix", "InPlanePhaseEncodingDirection",
    "ImageOrientationPatient", "PatientPosition", "SpacingBetweenSlices", "AcquisitionNumber", "EchoNumbers", "SAR",
)
SIEMENS_BANDWIDTH_PER_PIXEL_PE = 0x00191028


def _float(v: Any) -> float | None:
    try:
        x = float(v[0] if isinstance(v, (list, tuple)) else v)
    except (TypeError, ValueError, IndexError):
        return None
    return x if np.isfinite(x) else None


def _int(v: Any) -> int | None:
    x = _float(v)
    return int(x) if x is not None else None


def _multi(v: Any) -> bool:
    return isinstance(v, Sequence) and not isinstance(v, (str, bytes))


def _str(v: Any) -> str | None:
    if v is None:
        return None
    s = "\\".join(str(x) for x in v) if _multi(v) else str(v)
    return s.strip() or None


def _list(v: Any) -> list[str] | None:
    if v is None or v == "":
        return None
    return [str(x) for x in v] if _multi(v) else str(v).split("\\")


MANUFACTURERS = (("SIEMENS", "Siemens"), ("GE", "GE"), ("PHILIPS", "Philips"), ("UIH", "UIH"), ("CANON", "Canon"),
                 ("TOSHIBA", "Canon"), ("HITACHI", "Hitachi"), ("BRUKER", "Bruker"))
COMPONENT_TYPE = {"magnitude": "MAGNITUDE", "phase": "PHASE", "real": "REAL", "imaginary": "IMAGINARY",
                  "fieldmap_hz": "FIELDMAPHZ"}


def manufacturer_name(value: Any) -> str | None:
    """dcm2niix's short vendor name ('Siemens', 'GE', 'Philips', ...), else the value as written."""
    text = _str(value)
    upper = (text or "").upper()
    for prefix, name in MANUFACTURERS:
        if upper.startswith(prefix) or (prefix == "UIH" and "UNITED IMAGING" in upper):
            return name
    return text


def image_type(value: Any, component: str, manufacturer: str | None) -> list[str] | None:
    """ImageType values split at '\\' and '_', plus the image component (MAGNITUDE, PHASE, ...) as dcm2niix."""
    values = _list(value)
    if values is None:
        return None
    tokens = [t for v in values for t in str(v).split("_") if t]
    extra = COMPONENT_TYPE.get(component)
    if extra and (extra not in tokens or manufacturer == "GE"):
        tokens.append(extra)
    return tokens


def vendor_fields(ds: Any) -> dict[str, Any]:
    """Sidecar values that live in vendor private data (read while the full header is parsed)."""
    out: dict[str, Any] = {}
    if "SIEMENS" not in str(ds.get("Manufacturer", "") or "").upper():
        return out
    elem = ds.get(SIEMENS_BANDWIDTH_PER_PIXEL_PE)
    bw = _float(getattr(elem, "value", None)) if elem is not None else None
    from .dicom_mosaic import siemens_csa_image

    csa = (siemens_csa_image(ds) or {}).get("tags", {})

    def item(name: str) -> list | None:
        items = csa.get(name, {}).get("items")
        return list(items) if items else None

    if bw is None and item("BandwidthPerPixelPhaseEncode"):
        bw = _float(item("BandwidthPerPixelPhaseEncode"))
    if bw:
        out["BandwidthPerPixelPhaseEncode"] = bw
    pe = item("PhaseEncodingDirectionPositive")
    if pe:
        out["PhaseEncodingDirectionPositive"] = _int(pe)
    times = item("MosaicRefAcqTimes")
    if times:
        out["MosaicRefAcqTimes"] = [float(t) for t in times]
    return out


# (sidecar key, DICOM keyword, converter) copied as they are
_COPIED = (
    ("ImagingFrequency", "ImagingFrequency", _float), ("ManufacturersModelName", "ManufacturerModelName", _str),
    ("SoftwareVersions", "SoftwareVersions", _str), ("MRAcquisitionType", "MRAcquisitionType", _str),
    ("AcquisitionNumber", "AcquisitionNumber", _int), ("ScanningSequence", "ScanningSequence", _str),
    ("SequenceVariant", "SequenceVariant", _str), ("ScanOptions", "ScanOptions", _str),
    ("SequenceName", "SequenceName", _str), ("SpacingBetweenSlices", "SpacingBetweenSlices", _float),
    ("SAR", "SAR", _float), ("EchoNumber", "EchoNumbers", _int), ("PixelBandwidth", "PixelBandwidth", _float),
    ("EchoTrainLength", "EchoTrainLength", _int), ("PercentPhaseFOV", "PercentPhaseFieldOfView", _float),
    ("PercentSampling", "PercentSampling", _float), ("PhaseEncodingSteps", "NumberOfPhaseEncodingSteps", _int),
    ("PatientPosition", "PatientPosition", _str),
)


def _ms_to_s(v: Any) -> float | None:
    x = _float(v)
    return round(x / 1000.0, 6) if x is not None else None


def bids_sidecar(ds: Any, extra: dict[str, Any], attrs: dict[str, Any], recon_shape: tuple[int, int],
                 slice_times_s: list[float] | None, component: str = "") -> dict[str, Any]:
    """The sidecar of one volume: ``ds`` its first image's header, ``extra`` :func:`vendor_fields`, ``attrs``
    the volume's series attributes, ``recon_shape`` (rows, columns) of one slice, ``slice_times_s`` the
    acquisition time of each slice along k relative to the first (s) when known."""
    pe_dir = (_str(ds.get("InPlanePhaseEncodingDirection")) or "").upper()
    vendor = manufacturer_name(ds.get("Manufacturer"))
    recon_pe = recon_shape[0] if pe_dir == "COL" else recon_shape[1] if pe_dir == "ROW" else None
    acq = [_int(v) for v in (ds.get("AcquisitionMatrix") or [])]
    acq_pe = None
    if len(acq) == 4:
        acq_pe = (acq[2] or acq[3]) or None  # AcquisitionMatrix: freq rows, freq cols, phase rows, phase cols
    s: dict[str, Any] = {
        "Modality": attrs.get("modality") or None,
        "MagneticFieldStrength": attrs.get("magnetic_field_strength"),
        "Manufacturer": vendor,
        "SeriesNumber": attrs.get("series_number"),
        "ImageType": image_type(ds.get("ImageType") or attrs.get("image_type"), component, vendor),
        "SliceThickness": attrs.get("slice_thickness_mm"),
        "EchoTime": _ms_to_s(attrs.get("echo_time_ms")),
        "RepetitionTime": _ms_to_s(attrs.get("repetition_time_ms")),
        "InversionTime": _ms_to_s(ds.get("InversionTime")),
        "FlipAngle": attrs.get("flip_angle_deg"),
        "AcquisitionMatrixPE": acq_pe,
        "ReconMatrixPE": recon_pe,
        "InPlanePhaseEncodingDirectionDICOM": pe_dir or None,
        "ImageOrientationPatientDICOM": [_float(v) for v in ds.get("ImageOrientationPatient") or []] or None,
        "BodyPart": attrs.get("body_part") or None,
        "SliceTiming": slice_times_s,
        "ConversionSoftware": "imaging_pipelines",
    }
    for key, keyword, convert in _COPIED:
        s[key] = convert(ds.get(keyword))
    if vendor == "Philips":
        s["EchoTrainLength"] = None  # dcm2niix reports another value for Philips (not derived here)
    axis = {"COL": "j", "ROW": "i"}.get(pe_dir)
    positive = extra.get("PhaseEncodingDirectionPositive")
    if axis and positive in (0, 1):
        s["PhaseEncodingDirection"] = axis if positive == 1 else axis + "-"
    elif axis:
        s["PhaseEncodingAxis"] = axis
    bw = extra.get("BandwidthPerPixelPhaseEncode")
    if bw and recon_pe:
        s["BandwidthPerPixelPhaseEncode"] = bw
        ees = 1.0 / (bw * recon_pe)
        s["EffectiveEchoSpacing"] = round(ees, 9)
        s["TotalReadoutTime"] = round(ees * (recon_pe - 1), 9)
    return {k: v for k, v in s.items() if v is not None}


def slice_times(grid: list[list[Any]], extra: dict[str, Any], tr_s: float | None) -> list[float] | None:
    """Acquisition time (s) of each slice, in k order, relative to the earliest (``grid[t][k]``: the stack's
    records): the Siemens mosaic table (MosaicRefAcqTimes); the GE RTIA timer (0021,105E) of the second volume (the
    first one's is unreliable, as dcm2niix; units of 1e-4 s recognised by the span over TR); or the AcquisitionTime of
    single-frame images when all lie within one TR."""
    records = grid[0]
    times = extra.get("MosaicRefAcqTimes")
    if times and all(r.tile is not None and r.tile < len(times) for r in records):
        return [round(times[r.tile] / 1000.0, 6) for r in records]
    if any(r.multiframe or r.tile is not None for r in records) or len(records) < 2:
        return None
    if len(grid) > 1 and all(r.slice_time is not None for r in grid[1]):  # GE RTIA timer
        t = np.array([r.slice_time for r in grid[1]], dtype=float)
        t = t - t.min()
        if tr_s and 9.0 < t.max() / (tr_s * 1000.0) < 10.0:
            t = t / 10000.0
        return [round(float(x), 6) for x in t] if 0 < t.max() < (tr_s or np.inf) else None
    t = np.array([r.time_key[2] for r in records], dtype=float)
    t = t - t.min()
    if not tr_s or t.max() <= 0 or t.max() >= tr_s:
        return None
    return [round(float(x), 6) for x in t]
