"""DICOM Segmentation (SEG) objects for label Volumes, written with highdicom and read back by frame geometry.

* :func:`write_dicom_seg` - a multi-frame SEG of type BINARY (one frame per segment and slice, SOP class
  Segmentation Storage) or LABELMAP (one frame per slice holding segment numbers, SOP class Label Map
  Segmentation Storage, new in highdicom 0.28), referencing a source single-frame DICOM series (MR, CT,
  PT...) whose grid the label Volume lies on.
* :func:`read_dicom_seg_labels` - the segments of a SEG (BINARY, FRACTIONAL or LABELMAP) as an integer
  label Volume on a reference grid.

Geometry follows :mod:`imaging_pipelines.core.volume`: arrays ``[z, y, x]``, world = patient LPS mm, which is
also DICOM's patient coordinate system, so ``ImagePositionPatient`` / ``ImageOrientationPatient`` compare
directly with a Volume's ``origin`` / ``direction``. Slice ``k`` of a Volume sits at
``origin + direction[:, 2] * spacing[2] * k``; SEG frames and source files are matched to slices by that
position, never by file name or instance number.

Patient data: a SEG is a derived object, so the DICOM standard requires it to carry the source's Patient
and Study context; highdicom copies about 90 such attributes from the source. With ``patient_pseudonym``
(what the pipeline always passes) the SEG is de-identified by DICOM PS3.15 Annex E
(:func:`imaging_pipelines.medical.deid.deidentify`, the Basic Profile table with Clean Descriptors): identity
becomes the pseudonym, dates, names, descriptors and private attributes go, and UIDs are replaced by keyed
hashes except the source's study, series, instance and frame-of-reference UIDs that the SEG references.
Without a pseudonym the SEG stays identifiable like its source (for a PACS next to the source series):
only the site details highdicom would record for the source's equipment are removed.
Needs the optional dependency ``highdicom`` (imported lazily).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from imaging_pipelines.core.storage import atomic_local_file
from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.deid import DeidOptions, deidentify, reference_uids

__all__ = ["SEG_TYPES", "complete_type2", "default_segment_codes", "read_dicom_seg_labels", "write_dicom_seg"]

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"

# identifying site details highdicom would copy into ContributingEquipmentSequence (not required there)
_SITE_KEYWORDS = ("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
                  "DeviceSerialNumber", "OperatorsName")
SEG_TYPES = ("BINARY", "LABELMAP")


# Type 2 patient/study attributes highdicom copies from a source image and requires to exist (may be empty)
TYPE2_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "StudyDate",
                       "StudyTime", "AccessionNumber", "ReferringPhysicianName")


def complete_type2(ds: pydicom.Dataset) -> pydicom.Dataset:
    """``ds`` with every missing :data:`TYPE2_PATIENT_STUDY` attribute added empty (in memory; files that leave
    out Type 2 attributes exist, and highdicom refuses them)."""
    for keyword in TYPE2_PATIENT_STUDY:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


# (segmented property category, segmented property type) by normalised segment name; anything else: Tissue.
_SEGMENT_CODES: dict[str, tuple[Any, Any]] = {
    "lesion": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion),
    "neoplasm": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm),
    "tumor": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm),
    "tumour": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm),
    "brain": (codes.SCT.AnatomicalStructure, codes.SCT.Brain),
    "greymatter": (codes.SCT.AnatomicalStructure, codes.SCT.GrayMatter),
    "graymatter": (codes.SCT.AnatomicalStructure, codes.SCT.GrayMatter),
    "whitematter": (codes.SCT.AnatomicalStructure, codes.SCT.WhiteMatter),
    "csf": (codes.SCT.Tissue, codes.SCT.CerebrospinalFluid),
    "cerebrospinalfluid": (codes.SCT.Tissue, codes.SCT.CerebrospinalFluid),
}


def default_segment_codes(name: str) -> tuple[Any, Any]:
    """SNOMED CT ``(category, type)`` codes for a segment name ("lesion", "grey_matter"...); generic Tissue otherwise."""
    key = re.sub(r"[^a-z]", "", name.lower())
    return _SEGMENT_CODES.get(key, (codes.SCT.Tissue, codes.SCT.Tissue))


# --------------------------------------------------------------------------- geometry helpers
def _slice_index(
    position: Sequence[float], orientation: Sequence[float], spacing_rc: Sequence[float], shape_rc: tuple[int, int],
    grid: Volume, atol_mm: float, what: str,
) -> int:
    """Index ``k`` of the grid slice a DICOM plane (IPP, IOP, PixelSpacing, Rows/Columns) lies on; raises if none."""
    d = grid.direction
    nz, ny, nx = grid.spatial_shape
    iop = np.asarray(orientation, dtype=float)
    if not (np.allclose(iop[:3], d[:, 0], atol=1e-4) and np.allclose(iop[3:], d[:, 1], atol=1e-4)):
        raise ValueError(f"{what}: orientation {iop.round(5).tolist()} differs from the grid's "
                         f"{np.concatenate([d[:, 0], d[:, 1]]).round(5).tolist()}")
    # PixelSpacing is (row spacing = step along j, column spacing = step along i)
    if not np.allclose([spacing_rc[1], spacing_rc[0]], grid.spacing[:2], rtol=1e-4, atol=1e-5):
        raise ValueError(f"{what}: pixel spacing {list(spacing_rc)} differs from the grid's "
                         f"{[grid.spacing[1], grid.spacing[0]]}")
    if tuple(shape_rc) != (ny, nx):
        raise ValueError(f"{what}: {shape_rc[0]} rows x {shape_rc[1]} columns, the grid has {ny} x {nx}")
    delta = np.asarray(position, dtype=float) - np.asarray(grid.origin)
    k_float = float(np.dot(delta, d[:, 2]) / grid.spacing[2])
    k = int(round(k_float))
    residual = np.linalg.norm(delta - d[:, 2] * grid.spacing[2] * k)
    if residual > atol_mm or not 0 <= k < nz:
        raise ValueError(f"{what}: position {np.round(position, 4).tolist()} is not on a slice of the grid "
                         f"(nearest k={k} of {nz}, {residual:.4f} mm off)")
    return k


def _segment_number_map(labels: np.ndarray, segment_names: Mapping[int, str]) -> tuple[np.ndarray, list[int]]:
    """Label values -> segment numbers 1..n (in increasing label value); raises for unnamed non-zero values."""
    values = sorted(int(v) for v in segment_names)
    if not values or any(v <= 0 for v in values):
        raise ValueError(f"segment_names must name positive label values; got {sorted(segment_names)}")
    present = {int(v) for v in np.unique(labels)} - {0}
    unnamed = sorted(present - set(values))
    if unnamed:
        raise ValueError(f"label values {unnamed} have no entry in segment_names (named: {values}); "
                         "map or zero them first")
    lut = np.zeros(int(labels.max(initial=0)) + 1 if labels.size else 1, dtype=np.uint16)
    for number, value in enumerate(values, start=1):
        if value < lut.size:
            lut[value] = number
    numbers = lut[labels.astype(np.int64)]
    dtype = np.uint8 if len(values) <= 255 else np.uint16
    return numbers.astype(dtype), values


# --------------------------------------------------------------------------- writing
def write_dicom_seg(
    labels: Volume,
    source_files: Sequence[str | Path],
    out_path: str | Path,
    segment_names: Mapping[int, str],
    algorithm_name: str = "imaging_pipelines",
    *,
    algorithm_version: str = "1",
    segment_codes: Mapping[int, tuple[Any, Any]] | None = None,
    series_number: int = 9001,
    series_description: str = "Segmentation",
    atol_mm: float = 0.01,
    patient_pseudonym: str | None = None,
    seg_type: str = "BINARY",
    deid_options: DeidOptions | None = None,
) -> Path:
    """Write ``labels`` as a DICOM SEG referencing the single-frame series ``source_files``; returns ``out_path``.

    ``labels`` is an integer 3D Volume on exactly the source series grid (same rows, columns, pixel spacing,
    orientation; every slice position matching one source file within ``atol_mm`` mm and every file
    matching one slice). ``segment_names`` maps each non-zero label value to a segment label; segments are
    numbered 1..n in increasing label value (read them back with :func:`read_dicom_seg_labels`, whose
    ``attributes["segment_names"]`` keeps the number -> name map). Segment codes come from
    ``segment_codes[value] = (category, type)`` (pydicom ``Code`` s) or :func:`default_segment_codes`.
    Each segment is AUTOMATIC, identified by ``algorithm_name`` / ``algorithm_version`` (family: artificial
    intelligence). Frames that contain no segment are omitted (standard highdicom behaviour).

    ``seg_type``: ``"BINARY"`` (one 1-bit frame per segment and slice that holds it) or ``"LABELMAP"`` (one
    8/16-bit frame per slice with a segment, pixel = segment number). Either reproduces ``labels`` exactly.

    Patient/study attributes are copied from the source by highdicom, as the standard requires for a SEG
    (see the module docstring). With ``patient_pseudonym`` the SEG is de-identified by PS3.15 Annex E
    (``deid_options``, default :class:`~imaging_pipelines.medical.deid.DeidOptions`); the source's study,
    series, instance and frame-of-reference UIDs and the SEG's own UIDs are kept (added to ``keep_uids``).
    The file is written atomically (temporary sibling, then rename).
    """
    import highdicom as hd

    seg_type = str(seg_type).upper()
    if seg_type not in SEG_TYPES:
        raise ValueError(f"seg_type must be one of {SEG_TYPES}; got {seg_type!r}")
    if labels.is_timeseries:
        raise ValueError(f"labels must be a 3D Volume; got shape {labels.array.shape}")
    array = np.asarray(labels.array)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        if not np.array_equal(array, np.round(array)):
            raise ValueError("labels must hold integer values")
    if array.min(initial=0) < 0:
        raise ValueError("labels must be non-negative")
    if not source_files:
        raise ValueError("no source files given")

    datasets = [complete_type2(pydicom.dcmread(str(path))) for path in source_files]
    series_uids = {ds.SeriesInstanceUID for ds in datasets}
    if len(series_uids) != 1:
        raise ValueError(f"source files belong to {len(series_uids)} series; pass the files of one series")
    by_slice: dict[int, pydicom.Dataset] = {}
    for path, ds in zip(source_files, datasets):
        if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1:
            raise ValueError(f"{Path(path).name}: multi-frame source images are not supported")
        k = _slice_index(ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing,
                         (int(ds.Rows), int(ds.Columns)), labels, atol_mm, f"source file {Path(path).name}")
        if k in by_slice:
            raise ValueError(f"source files {Path(path).name} and another lie on the same slice k={k}")
        by_slice[k] = ds
    missing = sorted(set(range(labels.spatial_shape[0])) - set(by_slice))
    if missing:
        raise ValueError(f"label slices {missing[:10]} have no source file; the labels must be on the source grid")

    order = sorted(by_slice)  # k = 0 .. nz-1
    numbers, values = _segment_number_map(array.astype(np.int64), segment_names)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=algorithm_version
    )
    descriptions = []
    for number, value in enumerate(values, start=1):
        category, kind = (segment_codes or {}).get(value) or default_segment_codes(segment_names[value])
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=str(segment_names[value])[:64],
            segmented_property_category=category,
            segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        ))

    seg = hd.seg.Segmentation(
        source_images=[by_slice[k] for k in order],
        pixel_array=numbers[order],
        segmentation_type=hd.seg.SegmentationTypeValues[seg_type],
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=int(series_number),
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="imaging_pipelines",
        manufacturer_model_name=algorithm_name[:64],
        software_versions=algorithm_version,
        device_serial_number="0",
        series_description=series_description,
        content_label="SEGMENTATION",
        content_description=f"{algorithm_name} segmentation"[:64],
    )
    # highdicom records the source's acquisition equipment (optional, type 3); keep make/model, drop site details
    for item in seg.get("ContributingEquipmentSequence", []):
        for keyword in _SITE_KEYWORDS:
            if keyword in item:
                delattr(item, keyword)
    if patient_pseudonym is not None:
        options = deid_options or DeidOptions()
        keep = reference_uids([*datasets, seg])
        deidentify(seg, patient_pseudonym, replace(options, keep_uids=options.keep_uids | keep))
    out_path = Path(out_path)
    with atomic_local_file(out_path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return out_path


# --------------------------------------------------------------------------- reading
def _frame_item(ds: pydicom.Dataset, index: int, sequence: str) -> pydicom.Dataset | None:
    """Item of a functional group macro for frame ``index`` (per-frame first, then shared)."""
    for groups in (ds.get("PerFrameFunctionalGroupsSequence"), ds.get("SharedFunctionalGroupsSequence")):
        if not groups:
            continue
        group = groups[index] if groups is ds.get("PerFrameFunctionalGroupsSequence") else groups[0]
        if sequence in group and len(group[sequence].value):
            return group[sequence].value[0]
    return None


def read_dicom_seg_labels(seg_path: str | Path, reference: Volume, *, atol_mm: float = 0.01) -> Volume:
    """The segments of the SEG ``seg_path`` as an integer label Volume (value = segment number) on ``reference``'s grid.

    Every frame is placed on the reference slice at its ``ImagePositionPatient`` (within ``atol_mm`` mm);
    its orientation, pixel spacing and size must equal the reference's (no resampling is done).
    BINARY, FRACTIONAL (voxel in segment when >= half of ``MaximumFractionalValue``) and LABELMAP SEGs are
    read. Overlapping segments raise ``ValueError``. Missing (omitted empty) frames are background.
    ``attributes["segment_names"]`` maps segment number -> segment label. Returns ``uint8`` (``uint16``
    above 255 segments).
    """
    ds = pydicom.dcmread(str(seg_path))
    if ds.SOPClassUID not in (SEGMENTATION_STORAGE, LABEL_MAP_SEGMENTATION_STORAGE):
        raise ValueError(f"{Path(seg_path).name} is not a DICOM Segmentation (SOP class {ds.SOPClassUID})")
    if reference.is_timeseries:
        raise ValueError("reference must be a 3D Volume")
    seg_type = str(ds.SegmentationType).upper()
    names = {int(item.SegmentNumber): str(item.get("SegmentLabel", "")) for item in ds.get("SegmentSequence", [])
             if int(item.SegmentNumber) > 0}  # a LABELMAP may describe the background as segment 0
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    frames = ds.pixel_array.reshape(n_frames, int(ds.Rows), int(ds.Columns))

    dtype = np.uint8 if max(names, default=0) <= 255 else np.uint16
    out = np.zeros(reference.spatial_shape, dtype=dtype)
    for f in range(n_frames):
        position = _frame_item(ds, f, "PlanePositionSequence")
        orientation = _frame_item(ds, f, "PlaneOrientationSequence")
        measures = _frame_item(ds, f, "PixelMeasuresSequence")
        if position is None or orientation is None or measures is None:
            raise ValueError(f"{Path(seg_path).name}: frame {f + 1} has no plane position/orientation/pixel measures")
        k = _slice_index(position.ImagePositionPatient, orientation.ImageOrientationPatient, measures.PixelSpacing,
                         (int(ds.Rows), int(ds.Columns)), reference, atol_mm, f"SEG frame {f + 1}")
        frame = frames[f]
        if seg_type == "LABELMAP":
            values = frame.astype(dtype)
        else:
            identification = _frame_item(ds, f, "SegmentIdentificationSequence")
            if identification is None:
                raise ValueError(f"{Path(seg_path).name}: frame {f + 1} names no segment")
            number = int(identification.ReferencedSegmentNumber)
            if seg_type == "FRACTIONAL":
                inside = frame >= float(ds.MaximumFractionalValue) / 2.0
            else:
                inside = frame > 0
            values = np.where(inside, number, 0).astype(dtype)
        mask = values > 0
        clash = mask & (out[k] > 0) & (out[k] != values)
        if np.any(clash):
            raise ValueError(f"{Path(seg_path).name}: segments overlap on slice k={k}; read them one by one instead")
        out[k][mask] = values[mask]
    return replace(reference, array=out, time_step=None, warnings=(), attributes={"segment_names": names})
