"""Demo cohort generator: DICOM geometry/voxels, NIfTI affines, determinism, PHI placement."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from imaging_pipelines.tools.demo import (
    PatientIdentity,
    brain_like_phantom,
    ct_like_phantom,
    generate_demo_cohort,
    write_dicom_series,
)
from imaging_pipelines.tools.demo.cohort import CohortManifest, SeriesRecord
from imaging_pipelines.core.volume import Volume

HAS_READER = importlib.util.find_spec("imaging_pipelines.medical.io.dicom") is not None

PATIENT = PatientIdentity(
    patient_name="TEST^PERSON", patient_id="PID-99999", birth_date="19700101", sex="O",
    accession_number="ACC0000001", institution_name="Test Hospital", referring_physician="DOC^TOR",
    study_date="20240102",
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> CohortManifest:
    return generate_demo_cohort(tmp_path_factory.mktemp("demo") / "inbox", n_patients=4, seed=0)


def _dicom_series(m: CohortManifest) -> list[SeriesRecord]:
    return [s for p in m.dicom_patients for s in p.series]


def _read_sorted(folder: Path) -> list[pydicom.Dataset]:
    return sorted((pydicom.dcmread(f) for f in folder.glob("*.dcm")), key=lambda d: int(d.InstanceNumber))


def test_cohort_layout(cohort: CohortManifest) -> None:
    assert len(cohort.patients) == 4
    assert 1 <= len(cohort.nifti_patients) <= 2
    assert {s.modality for s in _dicom_series(cohort)} == {"MR", "CT"}
    assert any(len(p.series) == 2 for p in cohort.dicom_patients)
    for p in cohort.dicom_patients:
        assert p.folder.parent == cohort.inbox / "dicom"
        for s in p.series:
            assert s.n_files == len(list(s.path.glob("*.dcm"))) == s.volume.spatial_shape[0]
    for p in cohort.nifti_patients:
        (s,) = p.series
        assert s.path == cohort.inbox / "nifti" / p.subject / f"{p.subject}_T1w.nii.gz"
    for s in (s for p in cohort.patients for s in p.series):  # ground truth outside the inbox
        assert s.label_path.is_file() and cohort.inbox not in s.label_path.parents
        assert s.label_path.parent.parent == cohort.inbox.parent / "ground_truth"
    assert (cohort.ground_truth / "manifest.json").is_file()


def test_no_phi_in_paths_but_phi_in_headers(cohort: CohortManifest) -> None:
    phi = cohort.planted_phi()
    assert len(phi) >= 6 * len(cohort.dicom_patients)
    for path in cohort.inbox.rglob("*"):
        rel = str(path.relative_to(cohort.inbox)).upper()
        assert not any(v.upper() in rel for v in phi), rel
    for p in cohort.dicom_patients:
        ds = pydicom.dcmread(next(p.series[0].path.glob("*.dcm")))
        assert str(ds.PatientName) == p.identity.patient_name
        assert ds.PatientID == p.identity.patient_id and ds.PatientBirthDate == p.identity.birth_date
        assert ds.AccessionNumber == p.identity.accession_number
        assert ds.InstitutionName == p.identity.institution_name
        assert ds.PatientAddress == p.extra_phi["PatientAddress"]


def test_dicom_geometry_and_voxels(cohort: CohortManifest) -> None:
    for s in _dicom_series(cohort):
        vol = s.volume
        d = vol.direction
        slices = _read_sorted(s.path)
        ds0 = slices[0]
        assert ds0.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds0.SOPClassUID == (pydicom.uid.CTImageStorage if s.modality == "CT" else pydicom.uid.MRImageStorage)
        assert ds0.SeriesInstanceUID == s.series_uid and ds0.Modality == s.modality
        assert (ds0.Rows, ds0.Columns) == vol.spatial_shape[1:]
        np.testing.assert_allclose([float(v) for v in ds0.PixelSpacing], [vol.spacing[1], vol.spacing[0]])
        np.testing.assert_allclose([float(v) for v in ds0.ImageOrientationPatient], [*d[:, 0], *d[:, 1]], atol=1e-12)
        assert float(ds0.SliceThickness) == pytest.approx(vol.spacing[2])
        assert float(ds0.SpacingBetweenSlices) == pytest.approx(vol.spacing[2])
        stack = []
        for k, ds in enumerate(slices):
            expected_ipp = np.asarray(vol.origin) + d[:, 2] * vol.spacing[2] * k
            np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], expected_ipp, atol=1e-9)
            assert ds.pixel_array.dtype == np.int16
            stack.append(ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0)))
        np.testing.assert_allclose(np.stack(stack), vol.array, atol=0.5 * s.rescale_slope + 1e-3)


def test_nifti_round_trip(cohort: CohortManifest) -> None:
    for s in (s for p in cohort.patients for s in p.series):
        if s.series_uid is None:  # a NIfTI subject image
            img = nib.load(s.path)
            np.testing.assert_allclose(img.affine, s.volume.to_nifti_affine(), atol=1e-5)
            np.testing.assert_array_equal(np.asarray(img.dataobj), s.volume.nifti_data())
            assert Volume.from_nifti(np.asarray(img.dataobj), img.affine).same_geometry(s.volume)
        label = nib.load(s.label_path)
        assert label.get_data_dtype() == np.uint8
        np.testing.assert_allclose(label.affine, s.volume.to_nifti_affine(), atol=1e-5)
        labels = Volume.from_nifti(np.asarray(label.dataobj), label.affine)
        assert labels.same_geometry(s.volume) and labels.array.max() >= 3


def test_mr_series_are_deformed_mni_heads_with_lesions(cohort: CohortManifest) -> None:
    """Every MR series (DICOM T1 axial / oblique, T2 sagittal, NIfTI) is a real-anatomy head with a lesion; the
    axial T1 and sagittal T2 of one patient show the same brain (volume within 2 %)."""
    brain_ml: dict[str, dict[str, float]] = {}
    for p in cohort.patients:
        for s in p.series:
            labels = np.asarray(nib.load(s.label_path).dataobj)
            voxel_ml = float(np.prod(s.volume.spacing)) / 1000.0
            if s.modality == "CT":
                assert set(np.unique(labels)) <= {0, 1, 2, 3, 4}  # the abdomen phantom's labels
                continue
            assert set(np.unique(labels)) == {0, 1, 2, 3, 4, 5}, s.path
            brain = np.isin(labels, (2, 3, 4, 5)).sum() * voxel_ml
            assert 1000 <= brain <= 1800 and (labels == 5).sum() * voxel_ml >= 0.5, (s.path, brain)
            brain_ml.setdefault(p.subject, {})[s.series_description] = brain
    two = [v for v in brain_ml.values() if len(v) == 2]
    assert two and all(max(v.values()) / min(v.values()) < 1.02 for v in two), brain_ml


def test_deterministic_and_idempotent(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    a = generate_demo_cohort(inbox, n_patients=2, seed=3)
    first = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*.dcm")}
    (inbox / "dicom" / "case_001" / "stale").mkdir()
    (inbox / "keep.txt").write_text("not ours")
    b = generate_demo_cohort(inbox, n_patients=2, seed=3)
    second = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*.dcm")}
    assert first == second
    assert not (inbox / "dicom" / "case_001" / "stale").exists() and (inbox / "keep.txt").exists()
    assert a.planted_phi() == b.planted_phi()
    assert [s.series_uid for p in a.patients for s in p.series] == [s.series_uid for p in b.patients for s in p.series]
    c = generate_demo_cohort(inbox, n_patients=2, seed=4)
    assert c.planted_phi() != a.planted_phi()


def test_phantoms_ground_truth() -> None:
    img, lab = brain_like_phantom(seed=1)
    img2, lab2 = brain_like_phantom(seed=1)
    np.testing.assert_array_equal(img, img2)
    assert img.dtype == np.float32 and lab.dtype == np.uint8 and img.shape == lab.shape == (48, 64, 64)
    assert set(np.unique(lab)) >= {0, 1, 2, 3, 4}
    wm, gm, csf = (float(np.median(img[lab == k])) for k in (4, 3, 2))
    assert wm > gm > csf  # T1-like contrast
    hu, ct = ct_like_phantom(seed=1)
    assert abs(float(np.median(hu[ct == 0])) + 1000) < 30
    assert abs(float(np.median(hu[ct == 2])) - 700) < 30
    assert abs(float(np.median(hu[ct == 3])) - 60) < 10 and (ct == 4).sum() > 0


def test_write_dicom_series_extra_tags_and_4d(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    vol = Volume(arr, spacing=(0.5, 0.7, 2.0), origin=(1, 2, 3), time_step=2.5)
    files = write_dicom_series(
        vol, tmp_path / "s", patient=PATIENT, series_number=7, series_description="fmri", rescale_slope=0.5,
        extra_tags={"SliceThickness": None, "OperatorsName": "OP^ONE", "AcquisitionNumber": lambda i: 100 + i},
    )
    assert len(files) == 6
    dss = [pydicom.dcmread(f) for f in files]
    assert all("SliceThickness" not in ds for ds in dss)
    assert [int(ds.AcquisitionNumber) for ds in dss] == list(range(100, 106))
    assert [int(ds.TemporalPositionIdentifier) for ds in dss] == [1, 1, 1, 2, 2, 2]
    assert float(dss[3].TriggerTime) == pytest.approx(2500.0)
    assert str(dss[0].OperatorsName) == "OP^ONE" and str(dss[0].PatientName) == "TEST^PERSON"
    np.testing.assert_allclose(dss[4].pixel_array * float(dss[4].RescaleSlope), arr[1, 1])
    with pytest.raises(ValueError, match="int16"):
        write_dicom_series(Volume(np.full((1, 2, 2), 1e6)), tmp_path / "bad", patient=PATIENT,
                           series_number=1, series_description="x")


@pytest.mark.skipif(not HAS_READER, reason="imaging_pipelines.medical.io.dicom not available yet")
def test_read_dicom_folder_matches_phantom(cohort: CohortManifest) -> None:
    from imaging_pipelines.medical.io.dicom import read_dicom_folder

    for p in cohort.dicom_patients:
        result = read_dicom_folder(p.folder)
        assert not result.errors, result.errors
        assert sorted(ls.series_uid for ls in result.series) == sorted(s.series_uid for s in p.series)
        by_uid = {ls.series_uid: ls for ls in result.series}
        for s in p.series:
            loaded = by_uid[s.series_uid]
            assert loaded.modality == s.modality and loaded.patient_id == p.identity.patient_id
            assert len(loaded.files) == s.n_files
            assert loaded.volume.same_geometry(s.volume), (loaded.volume, s.volume)
            np.testing.assert_allclose(
                np.asarray(loaded.volume.array, dtype=np.float64), s.volume.array, atol=0.5 * s.rescale_slope + 1e-3
            )
