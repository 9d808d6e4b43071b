"""nnU-Net v2 raw dataset export (checked by nnU-Net's own integrity check) and DICOM SEG round trips."""

from __future__ import annotations

import signal
import json

import numpy as np
import pytest

from imaging_pipelines.tools.demo.dicom_writer import PatientIdentity, write_dicom_series
from imaging_pipelines.tools.demo.phantom import BRAIN_LABELS, BRAIN_LESION, brain_like_phantom
from imaging_pipelines.medical.io.image_files import read_nifti, write_nifti
from imaging_pipelines.medical.segment.nnunet_export import export_nnunet_dataset
from imaging_pipelines.core.volume import Volume

SHAPE = (16, 24, 20)
SPACING = (7.5, 8.0, 10.0)


def phantom_case(seed: int, direction: np.ndarray | None = None, origin=None) -> tuple[Volume, Volume]:
    """(image, labels) Volumes of a small brain phantom with at least one lesion."""
    kwargs = dict(spacing=SPACING, seed=seed, direction=direction, origin=origin)
    image, labels = brain_like_phantom(SHAPE, **kwargs)
    if origin is None:
        from imaging_pipelines.tools.demo.phantom import centered_origin

        origin = centered_origin(SHAPE, SPACING, np.eye(3) if direction is None else direction)
    geometry = dict(spacing=SPACING, origin=tuple(origin), direction=np.eye(3) if direction is None else direction)
    return Volume(array=image, **geometry), Volume(array=labels, **geometry)


def rotation(deg_x: float, deg_z: float) -> np.ndarray:
    ax, az = np.radians(deg_x), np.radians(deg_z)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ rx


# --------------------------------------------------------------------------- nnU-Net export
def lesion_cases(n: int = 3) -> list[tuple[str, Volume, Volume]]:
    cases = []
    for i in range(n):
        image, labels = phantom_case(seed=i, direction=rotation(10.0 * i, 5.0 * i))
        lesion = labels.with_array((labels.array == BRAIN_LESION).astype(np.uint8))
        cases.append((f"case{i:03d}", image, lesion))
    return cases


@pytest.fixture
def nnunet_env(tmp_path, monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        folder = tmp_path / var
        folder.mkdir()
        monkeypatch.setenv(var, str(folder))
    return tmp_path / "nnUNet_raw"


def verify_integrity():
    pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed (optional dependency)")
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    def verify(*args, **kwargs):
        """nnU-Net's check with SIGTERM at its default action: its pool ends workers with SIGTERM, and a handler
        left by an earlier in-process Dagster run (or SIGTERM ignored by the job runner) hangs that shutdown."""
        previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            return verify_dataset_integrity(*args, **kwargs)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return verify


def test_export_layout_and_dataset_json(tmp_path):
    cases = lesion_cases(2)
    folder = export_nnunet_dataset(cases, tmp_path, 7, "Phantom")
    assert folder == tmp_path / "Dataset007_Phantom"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "MR"}
    assert meta["labels"] == {"background": 0, "lesion": 1}
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["case000_0000.nii.gz", "case001_0000.nii.gz"]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == ["case000.nii.gz", "case001.nii.gz"]
    for case_id, image, label in cases:
        written = read_nifti(folder / "labelsTr" / f"{case_id}.nii.gz")
        assert written.array.dtype == np.uint8
        assert np.array_equal(written.array, label.array)
        assert written.same_geometry(image)
        img = read_nifti(folder / "imagesTr" / f"{case_id}_0000.nii.gz")
        np.testing.assert_allclose(img.array, image.array, rtol=1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folder left behind"
    with pytest.raises(FileExistsError):
        export_nnunet_dataset(cases, tmp_path, 7, "Phantom")


def test_export_refuses_bad_input(tmp_path):
    (case_id, image, label), *_ = lesion_cases(1)
    with pytest.raises(ValueError, match="not declared"):
        export_nnunet_dataset([(case_id, image, label.with_array(label.array * 2))], tmp_path, 1, "X")
    shifted = Volume(array=label.array, spacing=label.spacing, origin=(0.0, 0.0, 9.0), direction=label.direction)
    with pytest.raises(ValueError, match="not on the grid"):
        export_nnunet_dataset([(case_id, image, shifted)], tmp_path, 1, "X")
    with pytest.raises(ValueError, match="case id"):
        export_nnunet_dataset([("DOE^JANE", image, label)], tmp_path, 1, "X")
    with pytest.raises(ValueError, match="consecutive"):
        export_nnunet_dataset([(case_id, image, label)], tmp_path, 1, "X", labels={"background": 0, "lesion": 2})
    assert not any(tmp_path.iterdir()), "a refused export must leave nothing behind"


def test_nnunet_integrity_check_passes(nnunet_env, capfd):
    verify = verify_integrity()
    folder = export_nnunet_dataset(lesion_cases(3), nnunet_env, 11, "PhantomLesion")
    verify(str(folder), num_processes=1)
    out = capfd.readouterr().out
    assert "Error" not in out and "Warning" not in out, out


def test_nnunet_integrity_check_multilabel(nnunet_env, capfd):
    verify = verify_integrity()
    names = {name: value for value, name in BRAIN_LABELS.items()}
    cases = [(f"brain{i}", *phantom_case(seed=i)) for i in range(3)]
    folder = export_nnunet_dataset(cases, nnunet_env, 12, "PhantomBrain", labels=names)
    verify(str(folder), num_processes=1)
    assert "Error" not in capfd.readouterr().out


@pytest.mark.parametrize("defect", ["extra_label", "wrong_grid"])
def test_nnunet_integrity_check_catches_broken_labels(nnunet_env, defect, capfd):
    verify = verify_integrity()
    folder = export_nnunet_dataset(lesion_cases(3), nnunet_env, 13, "Broken")
    label_path = folder / "labelsTr" / "case001.nii.gz"
    label = read_nifti(label_path)
    if defect == "extra_label":
        array = label.array.copy()
        array[0, 0, 0] = 3  # undeclared label value
        write_nifti(label.with_array(array), label_path)
    else:  # one slice fewer: shape mismatch with the image
        write_nifti(Volume(array=label.array[:-1].copy(), spacing=label.spacing, origin=label.origin,
                           direction=label.direction), label_path)
    with pytest.raises(RuntimeError):
        verify(str(folder), num_processes=1)
    assert "Error" in capfd.readouterr().out


# --------------------------------------------------------------------------- DICOM SEG
PATIENT = PatientIdentity(
    patient_name="DOE^JANE", patient_id="PID-4711", birth_date="19700101", sex="F",
    accession_number="ACC123", institution_name="General Hospital", referring_physician="SMITH^JOHN",
    study_date="20240102",
)


@pytest.fixture
def hd():
    return pytest.importorskip("highdicom", reason="highdicom is not installed (optional dependency)")


def source_series(tmp_path, direction=None, origin=None, shuffle=True):
    image, labels = phantom_case(seed=1, direction=direction, origin=origin)
    files = write_dicom_series(image, tmp_path / "src", patient=PATIENT, series_number=3,
                               series_description="T1 demo", modality="MR")
    if shuffle:  # the writer must match slices by position, not by file order
        files = list(np.random.default_rng(0).permutation(np.array(files, dtype=object)))
    return image, labels, files


@pytest.mark.parametrize(
    "direction",
    [None, rotation(20.0, 30.0), np.diag([-1.0, 1.0, -1.0]), np.diag([1.0, 1.0, -1.0])],
    ids=["axial", "oblique", "flipped", "left_handed"],
)
def test_dicom_seg_round_trip(tmp_path, hd, direction):
    import pydicom

    from imaging_pipelines.medical.io.dicom import read_dicom_folder
    from imaging_pipelines.medical.segment.dicom_seg import read_dicom_seg_labels, write_dicom_seg

    image, labels, files = source_series(tmp_path, direction=direction)
    assert np.count_nonzero(labels.array == BRAIN_LESION) > 0
    seg_path = write_dicom_seg(labels, files, tmp_path / "seg" / "seg.dcm",
                               segment_names={v: n for v, n in BRAIN_LABELS.items() if v})

    seg = hd.seg.segread(seg_path)
    sources = [pydicom.dcmread(f) for f in files]
    assert seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == {
        s.SOPInstanceUID for s in sources}
    assert seg.SeriesInstanceUID != sources[0].SeriesInstanceUID
    lesion = seg.get_segment_description(5)
    assert lesion.segment_label == "lesion" and lesion.segmented_property_type.value == "52988006"

    # highdicom's own view: pixels by source instance reproduce each source slice
    k_of_uid = {}
    for s in sources:
        delta = np.asarray(s.ImagePositionPatient, float) - np.asarray(image.origin)
        k_of_uid[s.SOPInstanceUID] = int(round(np.dot(delta, image.direction[:, 2]) / image.spacing[2]))
    uids = [s.SOPInstanceUID for s in sources]
    by_instance = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, skip_overlap_checks=True)
    for n, uid in enumerate(uids):
        assert np.array_equal(by_instance[n], labels.array[k_of_uid[uid]])

    # our reader, onto the grid read from the DICOM series (sorted by the reader, not by us)
    reference = read_dicom_folder(tmp_path / "src").series[0].volume
    back = read_dicom_seg_labels(seg_path, reference)
    assert back.same_geometry(reference)
    if np.linalg.det(labels.direction) > 0:
        assert reference.same_geometry(labels)
        assert np.array_equal(back.array, labels.array)
    else:  # left-handed direction: the DICOM reader reverses the slice axis; the world content is the same
        assert not reference.same_geometry(labels)
        assert np.array_equal(back.array, labels.array[::-1])
    assert back.attributes["segment_names"][5] == "lesion"
    # and onto the original label grid directly
    assert np.array_equal(read_dicom_seg_labels(seg_path, labels).array, labels.array)


def test_dicom_seg_lesion_only_and_no_extra_phi(tmp_path, hd):
    import pydicom

    from imaging_pipelines.medical.segment.dicom_seg import read_dicom_seg_labels, write_dicom_seg

    image, labels, files = source_series(tmp_path)
    lesion = labels.with_array((labels.array == BRAIN_LESION).astype(np.uint8) * BRAIN_LESION)
    with pytest.raises(ValueError, match="no entry in segment_names"):
        write_dicom_seg(labels, files, tmp_path / "x.dcm", segment_names={BRAIN_LESION: "lesion"})
    seg_path = write_dicom_seg(lesion, files, tmp_path / "lesion.dcm", segment_names={BRAIN_LESION: "lesion"})
    back = read_dicom_seg_labels(seg_path, image)
    assert np.array_equal(back.array, (labels.array == BRAIN_LESION).astype(np.uint8))  # segment number 1
    assert back.attributes == {"segment_names": {1: "lesion"}}

    raw = pydicom.dcmread(seg_path)
    assert raw.SeriesDescription == "Segmentation"
    text = str(raw)
    # a SEG must carry the source's patient/study module (it lives next to the source series) ...
    assert raw.PatientID == PATIENT.patient_id
    # ... but nothing else identifying from the source header
    for value in (PATIENT.institution_name, "T1 demo", "DEMO01"):
        assert value not in text


def test_dicom_seg_refuses_labels_off_the_source_grid(tmp_path, hd):
    from imaging_pipelines.medical.segment.dicom_seg import write_dicom_seg

    image, labels, files = source_series(tmp_path)
    shifted = Volume(array=labels.array, spacing=labels.spacing,
                     origin=tuple(np.asarray(labels.origin) + [0.0, 0.0, 2.0]), direction=labels.direction)
    with pytest.raises(ValueError, match="not on a slice"):
        write_dicom_seg(shifted, files, tmp_path / "seg.dcm", segment_names={v: n for v, n in BRAIN_LABELS.items() if v})
    with pytest.raises(ValueError, match="no source file"):
        write_dicom_seg(labels, files[:-1], tmp_path / "seg.dcm", segment_names={v: n for v, n in BRAIN_LABELS.items() if v})
