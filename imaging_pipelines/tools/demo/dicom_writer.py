"""Write a :class:`Volume` as a real single-frame DICOM series (pydicom, explicit VR little endian).

Geometry is written exactly from the Volume (patient LPS mm):

* ``ImagePositionPatient`` of slice ``k`` = ``origin + direction[:, 2] * spacing[2] * k``
* ``ImageOrientationPatient`` = ``direction[:, 0]`` (row direction, +i) then ``direction[:, 1]`` (+j)
* ``PixelSpacing`` = ``[spacing[1], spacing[0]]`` (row spacing, column spacing)
* ``SliceThickness`` = ``SpacingBetweenSlices`` = ``spacing[2]``

Readers sort slices along ``cross(IOP row, IOP col)``; a left-handed ``direction`` therefore
reads back with the slice axis reversed (same voxels in the world, different index order).

Pixels are stored as signed int16: ``stored = round((value - intercept) / slope)``, so that
``stored * RescaleSlope + RescaleIntercept`` reproduces the value (HU for CT).  A 4D Volume
``[t, z, y, x]`` becomes ``t * z`` files with ``TemporalPositionIdentifier`` / ``TriggerTime``.

The writer is deliberately general so tests can plant PHI or craft broken inputs through
``extra_tags`` (set, override or delete any attribute, per file if needed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from imaging_pipelines.core.volume import Volume

MANUFACTURER = "imaging_pipelines demo"

_SOP_CLASS = {"MR": MRImageStorage, "CT": CTImageStorage, "PT": PositronEmissionTomographyImageStorage}


@dataclass(frozen=True)
class PatientIdentity:
    """Identifying values written into a series (all strings in DICOM format, dates ``YYYYMMDD``)."""

    patient_name: str  # PN, e.g. "DOE^JANE"
    patient_id: str
    birth_date: str
    sex: str  # "F", "M" or "O"
    accession_number: str
    institution_name: str
    referring_physician: str  # PN
    study_date: str

    def values(self) -> tuple[str, ...]:
        """All field values, in field order."""
        return astuple(self)

    def as_dict(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _ds(value: float) -> DSfloat:
    """A decimal string that fits the 16-character DS limit."""
    return DSfloat(float(value), auto_format=True)


def _stored_int16(array: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    if slope == 0 or not np.isfinite(slope) or not np.isfinite(intercept):
        raise ValueError(f"invalid rescale slope/intercept {slope}/{intercept}")
    values = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("volume contains NaN or infinite values; cannot store as int16")
    stored = np.rint((values - intercept) / slope)
    lo, hi = stored.min(initial=0.0), stored.max(initial=0.0)
    if lo < -32768 or hi > 32767:
        raise ValueError(
            f"stored values [{lo:.0f}, {hi:.0f}] do not fit int16 with slope={slope}, intercept={intercept}"
        )
    return stored.astype("<i2")


def _modality_tags(ds: Dataset, modality: str) -> None:
    """Typical acquisition attributes (overridable through ``extra_tags``)."""
    if modality == "MR":
        ds.ScanningSequence = "GR"
        ds.SequenceVariant = "SP"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D"
        ds.SequenceName = "demo_gre3d"
        ds.RepetitionTime = _ds(8.2)
        ds.EchoTime = _ds(3.7)
        ds.InversionTime = _ds(900.0)
        ds.FlipAngle = _ds(8.0)
        ds.NumberOfAverages = _ds(1.0)
        ds.ImagingFrequency = _ds(127.74)
        ds.ImagedNucleus = "1H"
        ds.EchoNumbers = "1"
        ds.MagneticFieldStrength = _ds(3.0)
        ds.EchoTrainLength = "1"
        ds.PixelBandwidth = _ds(240.0)
        ds.ReceiveCoilName = "HEAD_32"
        ds.TransmitCoilName = "BODY"
    elif modality == "CT":
        ds.KVP = _ds(120.0)
        ds.DataCollectionDiameter = _ds(500.0)
        ds.ReconstructionDiameter = _ds(380.0)
        ds.GantryDetectorTilt = _ds(0.0)
        ds.TableHeight = _ds(150.0)
        ds.RotationDirection = "CW"
        ds.ExposureTime = "500"
        ds.XRayTubeCurrent = "250"
        ds.Exposure = "125"
        ds.FilterType = "BODY FILTER"
        ds.ConvolutionKernel = "STANDARD"
        ds.RescaleType = "HU"
        ds.WindowCenter = _ds(40.0)
        ds.WindowWidth = _ds(400.0)


def _apply_extra(ds: Dataset, extra_tags: Mapping[Any, Any], index: int) -> None:
    for key, value in extra_tags.items():
        if callable(value):
            value = value(index)
        tag = Tag(key)  # accepts keywords, ints and (group, element) tuples
        if value is None:
            if tag in ds:
                del ds[tag]
        elif isinstance(value, pydicom.DataElement):
            ds[tag] = value
        else:
            keyword = pydicom.datadict.keyword_for_tag(tag)
            if not keyword:
                raise ValueError(f"extra tag {key!r} is not a standard attribute; pass a pydicom.DataElement")
            setattr(ds, keyword, value)


def write_dicom_series(
    volume: Volume,
    folder: str | Path,
    *,
    patient: PatientIdentity,
    series_number: int,
    series_description: str,
    modality: str = "MR",
    study_uid: str | None = None,
    series_uid: str | None = None,
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
    file_prefix: str = "IM",
    extra_tags: Mapping[Any, Any] | None = None,
) -> list[Path]:
    """Write ``volume`` as one DICOM file per slice into ``folder``; returns the paths in instance order.

    ``modality`` picks the SOP class (MR, CT, PT; anything else is Secondary Capture).
    ``extra_tags`` maps a keyword, int tag or (group, element) tuple to a value (set/override),
    ``None`` (delete the attribute), a ``pydicom.DataElement`` (private tags), or a callable
    ``f(file_index) -> value`` evaluated per file (0-based, instance order).
    Frame of reference and SOP instance UIDs derive deterministically from the study/series UIDs.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    modality = modality.upper()
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid(entropy_srcs=["frame-of-reference", study_uid])
    sop_class = _SOP_CLASS.get(modality, SecondaryCaptureImageStorage)

    stored = _stored_int16(volume.array, rescale_slope, rescale_intercept)
    if stored.ndim == 3:
        stored = stored[None]
    n_t, n_z, n_rows, n_cols = stored.shape
    d = volume.direction
    iop = [_ds(v) for v in (*d[:, 0], *d[:, 1])]
    normal = np.cross(d[:, 0], d[:, 1])
    step = d[:, 2] * volume.spacing[2]
    time_step_ms = (volume.time_step or 0.0) * 1000.0

    paths: list[Path] = []
    for t in range(n_t):
        for k in range(n_z):
            index = t * n_z + k
            sop_uid = generate_uid(entropy_srcs=[series_uid, str(index)])
            ipp = np.asarray(volume.origin) + step * k

            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = sop_class
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            meta.ImplementationVersionName = "IMGPIPE_DEMO"

            ds = Dataset()
            ds.file_meta = meta
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = sop_uid
            ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = patient.study_date
            ds.StudyTime = "101500"
            ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = f"{102000 + series_number * 100:06d}"
            ds.AccessionNumber = patient.accession_number
            ds.Modality = modality
            ds.Manufacturer = MANUFACTURER
            ds.InstitutionName = patient.institution_name
            ds.ReferringPhysicianName = patient.referring_physician
            ds.StationName = "DEMO01"
            ds.StudyDescription = "DEMO^RESEARCH"
            ds.SeriesDescription = series_description
            ds.ProtocolName = series_description
            ds.ManufacturerModelName = "Phantom"
            ds.SoftwareVersions = "imaging_pipelines"
            ds.DeviceSerialNumber = "0000"
            ds.PatientName = patient.patient_name
            ds.PatientID = patient.patient_id
            ds.PatientBirthDate = patient.birth_date
            ds.PatientSex = patient.sex
            ds.BodyPartExamined = "HEAD" if modality == "MR" else "ABDOMEN"
            ds.PatientPosition = "HFS"
            _modality_tags(ds, modality)
            ds.SliceThickness = _ds(volume.spacing[2])
            ds.SpacingBetweenSlices = _ds(volume.spacing[2])
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.StudyID = "1"
            ds.SeriesNumber = int(series_number)
            ds.AcquisitionNumber = t + 1
            ds.InstanceNumber = index + 1
            ds.ImagePositionPatient = [_ds(v) for v in ipp]
            ds.ImageOrientationPatient = iop
            ds.FrameOfReferenceUID = frame_uid
            ds.PositionReferenceIndicator = ""
            ds.SliceLocation = _ds(float(np.dot(ipp, normal)))
            if n_t > 1:
                ds.TemporalPositionIdentifier = t + 1
                ds.NumberOfTemporalPositions = n_t
                ds.TriggerTime = _ds(t * time_step_ms)
                ds.RepetitionTime = _ds(time_step_ms or 1000.0)
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = n_rows
            ds.Columns = n_cols
            ds.PixelSpacing = [_ds(volume.spacing[1]), _ds(volume.spacing[0])]
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 1
            if modality == "CT" or rescale_slope != 1.0 or rescale_intercept != 0.0:
                ds.RescaleIntercept = _ds(rescale_intercept)
                ds.RescaleSlope = _ds(rescale_slope)
            ds.PixelData = np.ascontiguousarray(stored[t, k]).tobytes()
            ds["PixelData"].VR = "OW"
            if extra_tags:
                _apply_extra(ds, extra_tags, index)

            path = folder / f"{file_prefix}{index + 1:05d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths
