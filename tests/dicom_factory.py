"""Write small synthetic DICOM series with pydicom (explicit VR little endian), for tests.

Geometry follows DICOM: ``iop`` = row cosine (direction of increasing column index) then column cosine;
positions are LPS mm; slice k sits at ``origin + k * spacing_z * (row x col)`` unless ``positions`` is given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
BASIC_TEXT_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.11"


def make_voxels(shape: Sequence[int], seed: int = 0, low: int = 0, high: int = 2000) -> np.ndarray:
    """Deterministic test voxels (z, y, x) as int16 with a slice-dependent offset (so order is checkable)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(low, high, size=tuple(shape), dtype=np.int16)
    data[:, 0, 0] = np.arange(shape[0], dtype=np.int16) * 10 + low  # slice marker
    return data


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid()
    return meta


def base_dataset(path: str | os.PathLike, sop_class: str, *, patient_id: str = "TEST001",
                 patient_name: str = "Test^Patient", birth_date: str = "19700101",
                 accession_number: str = "ACC123", institution_name: str = "Test Hospital",
                 study_uid: str | None = None, series_uid: str | None = None, modality: str = "MR",
                 series_number: int | None = 1, series_description: str = "test series") -> FileDataset:
    """A file dataset with patient/study/series identity filled in (values are synthetic)."""
    sop_instance = generate_uid()
    ds = FileDataset(str(path), {}, file_meta=_file_meta(sop_class, sop_instance), preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = birth_date
    ds.AccessionNumber = accession_number
    ds.InstitutionName = institution_name
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = modality
    if series_number is not None:
        ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.Manufacturer = "TestVendor"
    ds.FrameOfReferenceUID = generate_uid()
    return ds


def _set_pixels(ds: Dataset, plane: np.ndarray) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(plane.shape[-2]), int(plane.shape[-1])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if plane.dtype.kind == "i" else 0
    ds.PixelData = np.ascontiguousarray(plane).astype(plane.dtype.newbyteorder("<")).tobytes()


def slice_positions(shape, spacing, iop, origin) -> np.ndarray:
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row, col)
    return np.array([np.asarray(origin, float) + k * spacing[2] * normal for k in range(shape[0])])


def write_series(folder: str | os.PathLike, shape=(5, 8, 6), spacing=(0.8, 0.9, 2.5),
                 iop=(1, 0, 0, 0, 1, 0), origin=(-10.0, -20.0, 30.0), *, data: np.ndarray | None = None,
                 patient_id: str = "TEST001", patient_name: str = "Test^Patient", birth_date: str = "19700101",
                 accession_number: str = "ACC123", institution_name: str = "Test Hospital",
                 study_uid: str | None = None, series_uid: str | None = None, modality: str = "MR",
                 series_number: int | None = 1, series_description: str = "test series",
                 rescale: tuple[float, float] | None = None, positions: Sequence[Sequence[float]] | None = None,
                 instance_numbers: Sequence[int] | None = None, file_names: Sequence[str] | None = None,
                 skip_slices: Sequence[int] = (), extra: dict | None = None, transfer_syntax: str | None = None,
                 seed: int = 0) -> list[Path]:
    """Write one single-frame series; returns the written paths (in slice order, skipped slices left out).

    ``spacing`` is (x=column step, y=row step, z=slice step) in mm; ``data`` is the stored values (z, y, x)
    (int16/uint16; generated when None); ``rescale`` = (slope, intercept); ``positions`` overrides
    ImagePositionPatient per slice; ``extra`` sets further attributes on every file (keyword -> value);
    ``transfer_syntax`` e.g. pydicom.uid.RLELossless compresses with ``ds.compress``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = make_voxels(shape, seed) if data is None else np.asarray(data)
    nz = data.shape[0]
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    pos = np.asarray(positions, float) if positions is not None else slice_positions(data.shape, spacing, iop, origin)
    sop = CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE
    written = []
    for k in range(nz):
        if k in skip_slices:
            continue
        name = file_names[k] if file_names is not None else f"slice_{k:04d}.dcm"
        path = folder / name
        ds = base_dataset(path, sop, patient_id=patient_id, patient_name=patient_name, birth_date=birth_date,
                          accession_number=accession_number, institution_name=institution_name,
                          study_uid=study_uid, series_uid=series_uid, modality=modality,
                          series_number=series_number, series_description=series_description)
        ds.InstanceNumber = int(instance_numbers[k]) if instance_numbers is not None else k + 1
        ds.ImagePositionPatient = [f"{v:.6g}" for v in pos[k]]
        ds.ImageOrientationPatient = [f"{v:.8g}" for v in iop]
        ds.PixelSpacing = [f"{spacing[1]:g}", f"{spacing[0]:g}"]
        ds.SliceThickness = f"{spacing[2]:g}"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        if modality == "MR":
            ds.RepetitionTime = "500"
            ds.EchoTime = "10"
            ds.MagneticFieldStrength = "3"
        if rescale is not None:
            ds.RescaleSlope = f"{rescale[0]:g}"
            ds.RescaleIntercept = f"{rescale[1]:g}"
            ds.RescaleType = "HU" if modality == "CT" else "US"
        for key, value in (extra or {}).items():
            setattr(ds, key, value)
        _set_pixels(ds, data[k])
        if transfer_syntax is not None:
            ds.compress(transfer_syntax)
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written


def write_enhanced_mr(path: str | os.PathLike, shape=(5, 8, 6), spacing=(0.8, 0.9, 2.5), iop=(1, 0, 0, 0, 1, 0),
                      origin=(-10.0, -20.0, 30.0), *, data: np.ndarray | None = None, frame_order=None,
                      n_timepoints: int = 1, patient_id: str = "TEST001", series_uid: str | None = None,
                      study_uid: str | None = None, series_number: int = 1, rescale=(1.0, 0.0), seed: int = 0) -> Path:
    """One Enhanced MR Image Storage file; data (t, z, y, x) or (z, y, x). Shared PixelMeasures/PlaneOrientation/
    PixelValueTransformation; per-frame PlanePosition and FrameContent (TemporalPositionIndex, StackID "1").
    ``frame_order`` permutes the frames as stored (to check that order comes from positions)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = make_voxels(shape, seed) if data is None else np.asarray(data)
    if data.ndim == 3:
        data = data[None]
    nt, nz = data.shape[:2]
    pos = slice_positions(data.shape[1:], spacing, iop, origin)
    frames = [(t, k) for t in range(nt) for k in range(nz)]
    if frame_order is not None:
        frames = [frames[i] for i in frame_order]
    ds = base_dataset(path, ENHANCED_MR_IMAGE_STORAGE, patient_id=patient_id, study_uid=study_uid,
                      series_uid=series_uid, series_number=series_number)
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.NumberOfFrames = len(frames)
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [f"{spacing[1]:g}", f"{spacing[0]:g}"]
    pm.SliceThickness = f"{spacing[2]:g}"
    shared.PixelMeasuresSequence = DicomSequence([pm])
    po = Dataset()
    po.ImageOrientationPatient = [f"{v:.8g}" for v in iop]
    shared.PlaneOrientationSequence = DicomSequence([po])
    pvt = Dataset()
    pvt.RescaleSlope = f"{rescale[0]:g}"
    pvt.RescaleIntercept = f"{rescale[1]:g}"
    pvt.RescaleType = "US"
    shared.PixelValueTransformationSequence = DicomSequence([pvt])
    timing = Dataset()
    timing.RepetitionTime = 500.0
    timing.FlipAngle = 15.0
    shared.MRTimingAndRelatedParametersSequence = DicomSequence([timing])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for t, k in frames:
        fg = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [f"{v:.6g}" for v in pos[k]]
        fg.PlanePositionSequence = DicomSequence([pp])
        fc = Dataset()
        fc.StackID = "1"
        fc.InStackPositionNumber = k + 1
        fc.TemporalPositionIndex = t + 1
        fc.DimensionIndexValues = [1, t + 1, k + 1]
        fg.FrameContentSequence = DicomSequence([fc])
        per_frame.append(fg)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    stacked = np.stack([data[t, k] for t, k in frames])
    _set_pixels(ds, stacked)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_basic_text_sr(path: str | os.PathLike, patient_id: str = "TEST001") -> Path:
    """A Basic Text SR document (no pixel data)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = base_dataset(path, BASIC_TEXT_SR_STORAGE, patient_id=patient_id, modality="SR")
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.save_as(path, enforce_file_format=True)
    return path


def read_back(path) -> pydicom.Dataset:
    return pydicom.dcmread(path)
