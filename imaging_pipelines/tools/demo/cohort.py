"""Generate a small, deterministic demo cohort (DICOM + NIfTI) with planted, fake PHI.

Layout written by :func:`generate_demo_cohort` (no PHI in any path)::

    <inbox>/dicom/case_001/s01_mr_t1/IM00001.dcm ...   one folder per DICOM series
    <inbox>/dicom/case_001/s01_mr_t1_label.nii.gz     reference labels of T1 series (the catalog's label files)
    <inbox>/nifti/sub-101/sub-101_T1w.nii.gz          NIfTI subjects (no PHI inside)
    <inbox>/nifti/sub-101/sub-101_T1w_label.nii.gz
    <inbox>/../ground_truth/case_001/s01_mr_t1_label.nii.gz
    <inbox>/../ground_truth/sub-101/sub-101_T1w_label.nii.gz
    <inbox>/../ground_truth/manifest.json             the manifest (includes the fake PHI)

Every MR image is a deformed MNI152 head with 1-3 generated lesions (:mod:`~.mni_head`); CT series are
the abdomen phantom (:func:`~.phantom.ct_like_phantom`). The inbox label files (T1 series only: the labelled training
data a user would provide) are the full label maps (tissue classes 1-4, lesion 5). The ground-truth
folder keeps every series' labels for tests, outside the inbox.  The DICOM headers
carry PHI-looking values (names, IDs, birth dates, accession numbers, institution, address)
that the pipeline must pseudonymise; :meth:`CohortManifest.planted_phi` lists them.
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from pydicom.uid import generate_uid

from imaging_pipelines.tools.demo.dicom_writer import PatientIdentity, write_dicom_series
from imaging_pipelines.tools.demo.mni_head import make_patient, render_series
from imaging_pipelines.tools.demo.phantom import centered_origin, ct_like_phantom
from imaging_pipelines.core.volume import Volume

_NAMES = [
    "DOE^JANE", "ROE^RICHARD", "MUSTERMANN^ERIKA", "SMITH^JOHN^Q", "DUPONT^MARIE",
    "ROSSI^MARIO", "JANSEN^PIETER", "NOWAK^ANNA",
]
_PHYSICIANS = ["HOUSE^GREGORY", "GREY^MEREDITH", "KILDARE^JAMES", "QUINN^MICHAELA"]
_INSTITUTIONS = ["Springfield General Hospital", "St. Elsewhere Medical Center", "Mercy West Clinic"]
_STREETS = ["742 Evergreen Terrace^Springfield", "221B Baker Street^London", "12 Grimmauld Place^London"]

# Series plans cycled over DICOM patients: (folder, modality, description, contrast, orientation).
_PLANS: list[list[tuple[str, str, str, str, str]]] = [
    [("s01_mr_t1", "MR", "T1w 3D GRE axial", "T1", "axial"), ("s02_ct", "CT", "CT abdomen 5mm", "", "axial")],
    [("s01_mr_t1", "MR", "T1w 3D GRE axial", "T1", "axial"), ("s02_mr_t2_sag", "MR", "T2w sagittal", "T2", "sagittal")],
    [("s01_ct", "CT", "CT abdomen 5mm", "", "axial")],
    [("s01_mr_t1_obl", "MR", "T1w oblique axial", "T1", "oblique")],
]

_CT_RESCALE = (1.0, -1024.0)
# Acquisition tags per contrast (the writer's defaults describe a T1-like 3D GRE).
_CONTRAST_TAGS: dict[str, dict[str, Any]] = {
    "T2": {"ScanningSequence": "SE", "SequenceVariant": "SK", "MRAcquisitionType": "2D", "SequenceName": "demo_tse2d",
           "RepetitionTime": 3200.0, "EchoTime": 90.0, "FlipAngle": 90.0, "EchoTrainLength": "15", "InversionTime": None},
}


def orientation_direction(orientation: str) -> np.ndarray:
    """Right-handed LPS direction matrix (columns = i, j, k axes) of the cohort's "axial", "sagittal" or "oblique" grids."""
    if orientation == "axial":
        return np.eye(3)
    if orientation == "sagittal":  # i: A->P, j: S->I, k: L->R (IOP 0,1,0,0,0,-1)
        return np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    if orientation == "oblique":  # axial tilted 15 degrees about L-R
        a = np.deg2rad(15.0)
        return np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])
    raise ValueError(f"unknown orientation {orientation!r}")


@dataclass(frozen=True)
class SeriesRecord:
    """One written image: a DICOM series folder or a NIfTI file, with its ground truth."""

    path: Path  # DICOM series folder, or the .nii.gz file
    modality: str
    series_description: str
    series_number: int | None
    study_uid: str | None
    series_uid: str | None
    n_files: int
    label_path: Path
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    volume: Volume | None = field(default=None, repr=False, compare=False)  # the rendered image, before int16 rounding

    def to_json(self) -> dict[str, Any]:
        """JSON-able summary; names the planted PHI fields but never their values."""
        v = self.volume
        return {
            "path": str(self.path), "modality": self.modality, "series_description": self.series_description,
            "series_number": self.series_number, "study_uid": self.study_uid, "series_uid": self.series_uid,
            "n_files": self.n_files, "label_path": str(self.label_path),
            "rescale_slope": self.rescale_slope, "rescale_intercept": self.rescale_intercept,
            "shape": list(v.array.shape) if v is not None else None,
            "spacing": list(v.spacing) if v is not None else None,
            "origin": list(v.origin) if v is not None else None,
            "direction": v.direction.tolist() if v is not None else None,
        }


@dataclass(frozen=True)
class PatientRecord:
    """One demo patient: ``subject`` is the non-identifying folder name (``case_001`` / ``sub-101``)."""

    subject: str
    source_format: str  # "dicom" or "nifti"
    folder: Path
    series: tuple[SeriesRecord, ...]
    identity: PatientIdentity | None = None  # planted PHI (DICOM patients only)
    extra_phi: dict[str, str] = field(default_factory=dict)  # other planted identifying tags

    def phi_values(self, include_study_date: bool = False) -> list[str]:
        """Planted identifying strings that must never appear in pipeline outputs."""
        if self.identity is None:
            return []
        values = [v for k, v in self.identity.as_dict().items() if k not in ("sex", "study_date")]
        if include_study_date:
            values.append(self.identity.study_date)
        return values + list(self.extra_phi.values())


@dataclass(frozen=True)
class CohortManifest:
    inbox: Path
    ground_truth: Path
    seed: int
    patients: tuple[PatientRecord, ...]

    @property
    def dicom_patients(self) -> list[PatientRecord]:
        return [p for p in self.patients if p.source_format == "dicom"]

    @property
    def nifti_patients(self) -> list[PatientRecord]:
        return [p for p in self.patients if p.source_format == "nifti"]

    def planted_phi(self, include_study_date: bool = False) -> set[str]:
        return {v for p in self.patients for v in p.phi_values(include_study_date)}

    def to_json(self) -> dict[str, Any]:
        """JSON-able summary; names the planted PHI fields but never their values."""
        return {
            "inbox": str(self.inbox), "ground_truth": str(self.ground_truth), "seed": self.seed,
            "patients": [
                {
                    "subject": p.subject, "source_format": p.source_format, "folder": str(p.folder),
                    "planted_phi_fields": sorted((p.identity.as_dict() if p.identity else {}) | p.extra_phi),
                    "series": [s.to_json() for s in p.series],
                }
                for p in self.patients
            ],
        }


def _save_nifti(volume: Volume, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(volume.nifti_data(), volume.to_nifti_affine())
    img.set_qform(volume.to_nifti_affine(), code=1)
    img.set_sform(volume.to_nifti_affine(), code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, path)


def _identity(rng: np.random.Generator, index: int) -> tuple[PatientIdentity, dict[str, str]]:
    name = _NAMES[index % len(_NAMES)]
    year, month, day = int(rng.integers(1940, 1995)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    identity = PatientIdentity(
        patient_name=name,
        patient_id=f"PID-{int(rng.integers(10000, 99999)):05d}",
        birth_date=f"{year:04d}{month:02d}{day:02d}",
        sex="F" if index % 2 == 0 else "M",
        accession_number=f"ACC{int(rng.integers(1_000_000, 9_999_999))}",
        institution_name=_INSTITUTIONS[index % len(_INSTITUTIONS)],
        referring_physician=_PHYSICIANS[index % len(_PHYSICIANS)],
        study_date=f"2023{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
    )
    extra = {
        "OtherPatientIDs": f"MRN{int(rng.integers(100000, 999999))}",
        "PatientAddress": _STREETS[index % len(_STREETS)],
    }
    return identity, extra


_mr_patient = functools.lru_cache(maxsize=1)(make_patient)  # one patient's series are written one after another


def _series_volume(modality: str, contrast: str, orientation: str, seed: int) -> tuple[Volume, Volume]:
    """(image, labels) Volumes sharing one grid centred on world (0, 0, 0): for MR the patient ``seed``'s
    deformed MNI152 head (:mod:`~.mni_head`, the same anatomy in every series of that seed), for CT the
    abdomen phantom."""
    d = orientation_direction(orientation)
    if modality == "CT":
        shape, spacing = (40, 64, 64), (5.5, 5.5, 5.0)
        image, labels = ct_like_phantom(shape, spacing, seed, direction=d)
    else:
        shape, spacing = (48, 64, 64), (3.0, 3.0, 3.5)
        image, labels = render_series(_mr_patient(seed), shape, spacing, contrast, direction=d)
    origin = centered_origin(shape, spacing, d)
    geometry = dict(spacing=spacing, origin=origin, direction=d)
    return Volume(array=image, **geometry), Volume(array=labels, **geometry)


def _write_dicom_patient(
    index: int, inbox: Path, gt: Path, rng: np.random.Generator, seed: int
) -> PatientRecord:
    subject = f"case_{index + 1:03d}"
    identity, extra_phi = _identity(rng, index)
    study_uid = generate_uid(entropy_srcs=["imaging_pipelines-demo", str(seed), subject, "study"])
    patient_seed = seed * 1000 + index
    records = []
    for number, (folder_name, modality, description, contrast, orientation) in enumerate(_PLANS[index % len(_PLANS)], 1):
        image, labels = _series_volume(modality, contrast, orientation, patient_seed)
        slope, intercept = _CT_RESCALE if modality == "CT" else (1.0, 0.0)
        series_uid = generate_uid(entropy_srcs=["imaging_pipelines-demo", str(seed), subject, folder_name])
        folder = inbox / "dicom" / subject / folder_name
        files = write_dicom_series(
            image, folder, patient=identity, series_number=number, series_description=description,
            modality=modality, study_uid=study_uid, series_uid=series_uid,
            rescale_slope=slope, rescale_intercept=intercept, extra_tags={**_CONTRAST_TAGS.get(contrast, {}), **extra_phi},
        )
        label_path = gt / subject / f"{folder_name}_label.nii.gz"
        _save_nifti(labels, label_path)
        if contrast == "T1":
            _save_nifti(labels, folder.parent / f"{folder_name}_label.nii.gz")
        records.append(SeriesRecord(
            path=folder, modality=modality, series_description=description, series_number=number,
            study_uid=study_uid, series_uid=series_uid, n_files=len(files), label_path=label_path,
            rescale_slope=slope, rescale_intercept=intercept, volume=image,
        ))
    return PatientRecord(subject, "dicom", inbox / "dicom" / subject, tuple(records), identity, extra_phi)


def _write_nifti_patient(number: int, inbox: Path, gt: Path, seed: int) -> PatientRecord:
    subject = f"sub-{101 + number}"
    orientation = "axial" if number % 2 == 0 else "oblique"
    image, labels = _series_volume("MR", "T1", orientation, seed * 1000 + 500 + number)
    path = inbox / "nifti" / subject / f"{subject}_T1w.nii.gz"
    _save_nifti(image, path)
    label_path = gt / subject / f"{subject}_T1w_label.nii.gz"
    _save_nifti(labels, label_path)
    _save_nifti(labels, path.parent / f"{subject}_T1w_label.nii.gz")
    record = SeriesRecord(
        path=path, modality="MR", series_description="T1w", series_number=None, study_uid=None,
        series_uid=None, n_files=1, label_path=label_path, volume=image,
    )
    return PatientRecord(subject, "nifti", path.parent, (record,))


def generate_demo_cohort(inbox: Path, n_patients: int = 4, seed: int = 0) -> CohortManifest:
    """Write ``n_patients`` synthetic patients into ``inbox`` and their labels into ``inbox/../ground_truth``.

    One or two patients (none when ``n_patients == 1``) are NIfTI subjects; the rest are DICOM
    cases cycling through MR T1 + CT, axial T1 + sagittal T2, CT only, and oblique T1.
    Deterministic for a given ``seed``.  Regenerating removes ``inbox/dicom``, ``inbox/nifti``
    and ``ground_truth`` first; other content of ``inbox`` is left alone.
    """
    if n_patients < 1:
        raise ValueError("n_patients must be >= 1")
    inbox = Path(inbox).absolute()
    gt = inbox.parent / "ground_truth"
    for old in (inbox / "dicom", inbox / "nifti", gt):
        if old.exists():
            shutil.rmtree(old)
    inbox.mkdir(parents=True, exist_ok=True)
    n_nifti = 0 if n_patients == 1 else min(2, max(1, n_patients // 4))
    rng = np.random.default_rng(seed)
    patients = [_write_dicom_patient(i, inbox, gt, rng, seed) for i in range(n_patients - n_nifti)]
    patients += [_write_nifti_patient(i, inbox, gt, seed) for i in range(n_nifti)]
    manifest = CohortManifest(inbox=inbox, ground_truth=gt, seed=seed, patients=tuple(patients))
    gt.mkdir(parents=True, exist_ok=True)
    (gt / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=2))
    return manifest
