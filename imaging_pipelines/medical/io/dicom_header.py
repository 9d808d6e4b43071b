"""Reading one DICOM file and turning its header into slice records (no pixel decoding here).

Geometry conventions: see :mod:`imaging_pipelines.medical.io.dicom_slices` (LPS mm, DICOM cosines).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .dicom_components import classic_component, from_image_type, ge_pepolar, ge_slice_time
from .dicom_diffusion import classic_gradient, frame_gradient
from .dicom_files import (DETAIL_TAGS, READ_TAGS, NotDicom, SizeCappedFile, convert_elements,  # noqa: F401
                          is_dicom_file, read_details, read_file, read_identity)
from .dicom_mosaic import mosaic_first_tile_position, mosaic_info, tile_shape, uih_grid
from .dicom_multiframe import (FrameLookup, frame_values, has_functional_groups, macro_item, philips_scale_in,
                               private_scale_slope, shared_mr_parameters)
from .dicom_pixels import PixelDecodeError, check_pixel_data, is_supported_colour, n_frames, transfer_syntax
from .dicom_planar import PLANAR_ORIENTATION, planar_position
from .dicom_radiograph import planar_spacing
from .dicom_slices import PixelSource, SliceRecord, orientation_key, orientation_label, unit_cosines

MAX_POSITION_MM = 1e6  # |ImagePositionPatient| beyond 1 km is a corrupt header, not a patient


class SkipFile(Exception):
    """A DICOM file that holds no volume image (skipped, with the reason as message)."""


@dataclass(slots=True)
class FileHeader:
    """Identity of the series a file belongs to (PatientID is PHI: used only by the caller)."""

    path: str
    dataset: Any
    study_uid: str
    series_uid: str
    patient_id: str


def sop_class(ds) -> str:
    sop = str(ds.get("SOPClassUID", "") or "")
    if not sop and getattr(ds, "file_meta", None) is not None:
        sop = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "")
    return sop


def sop_name(sop: str) -> str:
    if not sop:
        return "unknown SOP class"
    from pydicom.uid import UID

    name = UID(sop).name
    return name[: -len(" Storage")] if name.endswith(" Storage") else name


def is_image_object(ds) -> bool:
    """True for objects that should hold pixel data of an image."""
    name = sop_name(sop_class(ds))
    return "Image" in name or "Rows" in ds


def header_identity(path: str, ds) -> FileHeader:
    return FileHeader(
        path=path,
        dataset=ds,
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        patient_id=str(ds.get("PatientID", "") or ""),
    )


def classify(ds) -> None:
    """Raise SkipFile for non-image objects, PixelDecodeError for images whose pixel data is missing/truncated."""
    if "PixelData" not in ds:
        if is_image_object(ds):
            check_pixel_data(ds)  # raises with a clear message
        raise SkipFile(f"skipped: non-image object ({sop_name(sop_class(ds))})")
    check_pixel_data(ds)
    if not is_supported_colour(ds):
        raise PixelDecodeError(f"unsupported colour image (SamplesPerPixel={ds.SamplesPerPixel})")


# --------------------------------------------------------------------------- values
def _float(v: Any, default: float | None = None) -> float | None:
    """``float(v)``; ``default`` when absent, unparseable or not finite."""
    try:
        x = float(v) if v is not None and v != "" else default
    except (TypeError, ValueError, OverflowError):
        return default
    return x if x is None or math.isfinite(x) else default


def _int(v: Any) -> int | None:
    try:
        return int(v) if v is not None and v != "" else None
    except (TypeError, ValueError, OverflowError):
        return None


def _scaling(v: Any, name: str, default: float) -> float:
    """RescaleSlope / RescaleIntercept: ``default`` when absent or unparseable; ValueError when NaN/infinite."""
    try:
        x = float(v) if v is not None and v != "" else None
    except (TypeError, ValueError, OverflowError):
        return default
    if x is None:
        return default
    if not math.isfinite(x):
        raise ValueError(f"{name} is not a finite number")
    return x


def _positive(v: Any) -> float | None:
    """A positive finite length in mm, else None (SliceThickness, SpacingBetweenSlices)."""
    x = _float(v)
    return x if x is not None and x > 0 else None


def _vector(values: Any, n: int, name: str, limit: float = MAX_POSITION_MM) -> np.ndarray:
    """The first ``n`` numbers of a multi-valued element; ValueError when fewer, non-numeric or not finite."""
    try:
        v = np.asarray([float(x) for x in values], dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} holds non-numeric values") from None
    if v.size < n:
        raise ValueError(f"{name} must have {n} values, got {v.size}")
    v = v[:n]
    if not np.all(np.isfinite(v)) or np.any(np.abs(v) > limit):
        raise ValueError(f"{name} holds non-finite or out-of-range values")
    return v


def _pixel_spacing(values: Any) -> tuple[float, float]:
    """(between rows, between columns) in mm: two positive finite numbers, else ValueError."""
    ps = _vector(values, 2, "PixelSpacing")
    if np.any(ps <= 0):
        raise ValueError("PixelSpacing must be positive")
    return float(ps[0]), float(ps[1])


def dicom_time_seconds(v: Any) -> float:
    """DICOM TM ('HHMMSS.ffffff') or DT to seconds since midnight; 0 when absent/unparseable."""
    s = str(v or "").strip()
    if len(s) >= 14 and s[:8].isdigit():  # DT: YYYYMMDDHHMMSS
        s = s[8:]
    m = re.match(r"^(\d{2})(\d{2})?(\d{2})?(\.\d+)?", s)
    if not m:
        return 0.0
    h, mi, se, frac = m.groups()
    return int(h) * 3600 + int(mi or 0) * 60 + int(se or 0) + float(frac or 0)


def _image_type(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(value.split("\\"))
    return tuple(str(v) for v in value)


def series_attributes(ds) -> dict[str, Any]:
    """Non-identifying series attributes (never names, IDs, dates, times, UIDs, institution or station)."""
    attrs: dict[str, Any] = {
        "modality": str(ds.get("Modality", "") or ""),
        "series_description": str(ds.get("SeriesDescription", "") or ""),
        "series_number": _int(ds.get("SeriesNumber")),
        "manufacturer": str(ds.get("Manufacturer", "") or ""),
        "model": str(ds.get("ManufacturerModelName", "") or ""),
        "magnetic_field_strength": _float(ds.get("MagneticFieldStrength")),
        "repetition_time_ms": _float(ds.get("RepetitionTime")),
        "echo_time_ms": _float(ds.get("EchoTime")),
        "flip_angle_deg": _float(ds.get("FlipAngle")),
        "slice_thickness_mm": _float(ds.get("SliceThickness")),
        "image_type": list(_image_type(ds.get("ImageType"))),
        "body_part": str(ds.get("BodyPartExamined", "") or ""),
        "transfer_syntax": transfer_syntax(ds),
    }
    if has_functional_groups(ds):
        for key, value in shared_mr_parameters(ds).items():
            if attrs.get(key) is None:
                attrs[key] = _float(value)
    return attrs


# --------------------------------------------------------------------------- records
def _record(source, frame, tile, n_tiles, rows, cols, iop_vectors, position, pixel_spacing, slope, intercept,
            time_key, acquisition, extra_key: tuple, extra_labels: dict, nominal, multiframe=False,
            private_scale: float | None = None) -> SliceRecord:
    row, col, normal = iop_vectors
    key = (orientation_key(row, col, normal), rows, cols, tuple(round(float(p), 4) for p in pixel_spacing), *extra_key)
    labels = {"orientation": orientation_label(normal), "matrix": f"{rows}x{cols}",
              "pixel spacing": "x".join(f"{float(p):g}" for p in pixel_spacing), **extra_labels}
    return SliceRecord(
        source=source, frame=frame, tile=tile, n_tiles=n_tiles, rows=rows, cols=cols, row_cos=row, col_cos=col,
        normal=normal, position=np.asarray(position, dtype=float), pixel_spacing=tuple(float(p) for p in pixel_spacing),
        slope=slope, intercept=intercept, time_key=time_key, acquisition=acquisition, split_key=key,
        split_labels=labels, nominal_spacing=nominal, multiframe=multiframe, private_scale=private_scale,
    )


def _geometry_missing(ds) -> bool:
    return "ImageOrientationPatient" not in ds or "ImagePositionPatient" not in ds


def records_for(path: str, ds) -> list[SliceRecord]:
    """Slice records of one image file (single-frame, Siemens mosaic or enhanced multi-frame), with their
    diffusion weighting when the file has one."""
    records = _records_for(path, ds)
    if records and not has_functional_groups(ds):
        flip_rows, reversed_series = ge_pepolar(ds)
        slice_time = ge_slice_time(ds)
        for r in records:
            r.flip_rows, r.series_offset = flip_rows, 1000 if reversed_series else 0
            r.slice_time = slice_time
    if records and not has_functional_groups(ds):
        first = records[0]
        gradient = classic_gradient(ds, first.row_cos, first.col_cos, first.normal)
        for r in records:
            r.gradient = gradient
    return records


def _records_for(path: str, ds) -> list[SliceRecord]:
    source = PixelSource(path=path, dataset=ds)
    if has_functional_groups(ds):
        return _enhanced_records(source, ds)
    uih = uih_grid(ds) if n_frames(ds) == 1 else None
    synthetic = "ImageOrientationPatient" not in ds and "ImagePositionPatient" not in ds and not uih
    if _geometry_missing(ds) and not synthetic and not (uih and "ImageOrientationPatient" in ds):
        raise SkipFile("skipped: image with incomplete patient geometry (ImagePositionPatient or "
                       "ImageOrientationPatient missing)")
    rows, cols = int(ds.Rows), int(ds.Columns)
    if synthetic:  # radiographs, secondary captures: see dicom_planar
        row, col, normal = unit_cosines(PLANAR_ORIENTATION)
        ipp = planar_position(ds)
    else:
        row, col, normal = unit_cosines(ds.ImageOrientationPatient)
        ipp = _vector(uih[2][0] if uih else ds.ImagePositionPatient, 3, "ImagePositionPatient")
    if synthetic:
        ps = planar_spacing(ds)[0]
    else:
        ps = _pixel_spacing(ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or [1.0, 1.0])
    if synthetic and (mosaic_info(ds) is not None or n_frames(ds) > 1):
        raise SkipFile("skipped: multi-slice image without patient geometry")
    slope = _scaling(ds.get("RescaleSlope"), "RescaleSlope", 1.0) or 1.0
    intercept = _scaling(ds.get("RescaleIntercept"), "RescaleIntercept", 0.0)
    nominal = _positive(ds.get("SpacingBetweenSlices")) or _positive(ds.get("SliceThickness"))
    instance = _int(ds.get("InstanceNumber")) or 0
    acq = _int(ds.get("AcquisitionNumber"))
    # images at one position are ordered by TemporalPositionIdentifier, AcquisitionTime, InstanceNumber: not by
    # AcquisitionNumber, which some Philips DWI series vary within a volume (dcm2niix orders by InstanceNumber)
    time_key = (0, _int(ds.get("TemporalPositionIdentifier")) or 0,
                dicom_time_seconds(ds.get("AcquisitionTime")), instance, path)
    image_type = _image_type(ds.get("ImageType"))
    echo = _int(ds.get("EchoNumbers"))
    component = classic_component(ds, image_type)
    reversed_series = ge_pepolar(ds)[1]
    extra_key = (echo, image_type, component, reversed_series)
    extra_labels = {"echo": f"echo {echo}" if echo is not None else "echo ?",
                    "image type": "\\".join(image_type), "component": component}
    if reversed_series:
        extra_labels["phase encoding"] = "reversed phase encoding"

    scale = philips_scale_in(ds)
    if uih is not None:
        n_tiles, tile_cols, positions = uih
        tr, tc = rows // -(-n_tiles // tile_cols), cols // tile_cols
        recs = [_record(source, 0, t, n_tiles, tr, tc, (row, col, normal),
                        _vector(p, 3, "ImagePositionPatient"), ps, slope, intercept, time_key, acq,
                        (*extra_key, "grid"), extra_labels, nominal, private_scale=scale)
                for t, p in enumerate(positions)]
        for r in recs:
            r.tile_cols = tile_cols
        return recs
    mosaic = mosaic_info(ds)
    if mosaic is not None and n_frames(ds) == 1:
        n_tiles, csa_normal = mosaic
        tr, tc = tile_shape(rows, cols, n_tiles)
        if tr < 1 or tc < 1:
            raise PixelDecodeError(f"mosaic header claims {n_tiles} tiles in a {rows}x{cols} image")
        first = mosaic_first_tile_position(ipp, row, col, ps, rows, cols, tr, tc)
        slice_normal = csa_normal if csa_normal is not None else normal
        dz = nominal or 1.0
        vectors = (row, col, slice_normal)
        return [
            _record(source, 0, t, n_tiles, tr, tc, vectors, first + t * dz * slice_normal, ps, slope, intercept,
                    time_key, acq, (*extra_key, "mosaic"), extra_labels, dz, private_scale=scale)
            for t in range(n_tiles)
        ]
    nf = n_frames(ds)
    if nf > 1:  # legacy multi-frame without functional groups: frames stacked along the normal
        dz = nominal or 1.0
        return [
            _record(source, f, None, 0, rows, cols, (row, col, normal), ipp + f * dz * normal, ps, slope, intercept,
                    (*time_key[:-1], f), acq, extra_key, extra_labels, dz, multiframe=True, private_scale=scale)
            for f in range(nf)
        ]
    record = _record(source, 0, None, 0, rows, cols, (row, col, normal), ipp, ps, slope, intercept, time_key, acq,
                     extra_key, extra_labels, nominal, private_scale=scale)
    record.synthetic_geometry = synthetic
    return [record]


def _enhanced_records(source: PixelSource, ds) -> list[SliceRecord]:
    lookup = FrameLookup(ds)
    rows, cols = int(ds.Rows), int(ds.Columns)
    records = []
    for f in range(n_frames(ds)):
        v = frame_values(ds, f, lookup)
        if v["position"] is None or v["orientation"] is None:
            raise SkipFile(f"skipped: frame {f + 1} has no PlanePositionSequence/PlaneOrientationSequence")
        vectors = unit_cosines(v["orientation"])
        ps = _pixel_spacing(v["pixel_spacing"] or [1.0, 1.0])
        nominal = _positive(v["spacing_between_slices"]) or _positive(v["slice_thickness"])
        echo = _float(v["echo_time"])
        stack_id = str(v["stack_id"]) if v["stack_id"] not in (None, "") else None
        image_type = _image_type(v["image_type"])
        acq = _int(v["acquisition_number"])
        # frames at one position: ordered by their DimensionIndexValues, last dimension slowest (as dcm2niix),
        # then TemporalPositionIndex, acquisition time and frame number
        raw_dims = v["dimension_index"]
        raw_dims = [raw_dims] if isinstance(raw_dims, (int, float, str)) else list(raw_dims or [])
        dims = tuple(_int(x) or 0 for x in reversed(raw_dims))
        time_key = (dims, _int(v["temporal_index"]) or 0,
                    dicom_time_seconds(v["acquisition_datetime"]), f, source.path)
        component = from_image_type(image_type, v["complex_component"])
        labels = {"echo": f"TE {echo:g} ms" if echo is not None else "TE ?", "stack": f"stack {stack_id}",
                  "image type": "\\".join(image_type), "component": component}
        records.append(_record(
            source, f, None, 0, rows, cols, vectors, _vector(v["position"], 3, "ImagePositionPatient"), ps,
            _scaling(v["slope"], "RescaleSlope", 1.0) or 1.0, _scaling(v["intercept"], "RescaleIntercept", 0.0),
            time_key, acq,
            (echo, stack_id, image_type, component), labels, nominal, multiframe=True,
            private_scale=private_scale_slope(ds, f, lookup),
        ))
        records[-1].gradient = frame_gradient(macro_item(lookup, f, "MRDiffusionSequence"))
    return records
