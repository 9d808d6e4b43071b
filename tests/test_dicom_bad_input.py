"""DICOM reader on broken or messy folders (synthetic data from tests/dicom_factory.py)."""

from __future__ import annotations

import pytest
from dicom_factory import make_voxels, write_basic_text_sr, write_series

from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.medical.io.dicom import is_dicom_file, read_dicom_folder, read_patient_id


def test_truncated_file_goes_to_errors_and_series_still_loads(tmp_path):
    paths = write_series(tmp_path, shape=(6, 8, 6))
    victim = paths[2]
    raw = victim.read_bytes()
    victim.write_bytes(raw[: len(raw) // 2])
    result = read_dicom_folder(tmp_path)
    assert [e.path for e in result.errors] == [str(victim)]
    assert "truncated" in result.errors[0].message or "pixel data" in result.errors[0].message
    assert len(result.series) == 1
    vol = result.series[0].volume
    assert vol.spatial_shape == (6, 8, 6)  # the left-out slice's position is interpolated and flagged
    assert vol.attributes["interpolated_slices"] == [2]
    text = " ".join(vol.warnings)
    assert victim.name in text  # the left-out file is named
    assert "gap of 5.000 mm" in text and paths[1].name in text and paths[3].name in text


def test_truncated_inside_pixel_data(tmp_path):
    paths = write_series(tmp_path, shape=(3, 16, 16))
    raw = paths[0].read_bytes()
    paths[0].write_bytes(raw[:-100])
    result = read_dicom_folder(tmp_path)
    assert len(result.errors) == 1 and "truncated pixel data" in result.errors[0].message
    assert result.series[0].volume.spatial_shape == (2, 16, 16)


def test_two_series_in_one_folder(tmp_path):
    write_series(tmp_path, shape=(4, 8, 6), series_number=3, file_names=[f"a{k}.dcm" for k in range(4)])
    write_series(tmp_path, shape=(3, 5, 7), series_number=7, file_names=[f"b{k}.dcm" for k in range(3)], seed=2)
    result = read_dicom_folder(tmp_path)
    assert [s.series_number for s in result.series] == [3, 7]
    assert [s.volume.spatial_shape for s in result.series] == [(4, 8, 6), (3, 5, 7)]
    assert all(len(s.files) == s.volume.spatial_shape[0] for s in result.series)


def test_missing_slice_warns_with_neighbours_and_gap(tmp_path):
    paths = write_series(tmp_path, shape=(6, 8, 6), spacing=(1, 1, 3.0), skip_slices=[3])
    result = read_dicom_folder(tmp_path)
    (series,) = result.series
    warnings = series.volume.warnings
    assert len(warnings) == 1
    w = warnings[0]
    assert "gap of 6.000 mm" in w and "slice_0002.dcm" in w and "slice_0004.dcm" in w and "missing" in w
    assert series.volume.spacing[2] == pytest.approx(3.0)
    assert len(paths) == 5
    assert series.volume.spatial_shape[0] == 6  # the missing position is interpolated (see test_dicom_gaps)
    assert series.volume.attributes["interpolated_slices"] == [3]


def test_non_image_object_is_skipped(tmp_path):
    write_series(tmp_path, shape=(3, 4, 4))
    sr = write_basic_text_sr(tmp_path / "report.dcm")
    result = read_dicom_folder(tmp_path)
    assert len(result.series) == 1
    assert [(n.path, n.message) for n in result.skipped] == [(str(sr), "skipped: non-image object (Basic Text SR)")]
    assert not result.errors


def test_empty_folder_raises_naming_folder(tmp_path):
    with pytest.raises(ImagingInputError) as info:
        read_dicom_folder(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "no DICOM image files found" in str(info.value)


def test_folder_with_only_junk_raises(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImagingInputError, match="no DICOM image files found"):
        read_dicom_folder(tmp_path)


def test_text_file_is_skipped_and_series_loads(tmp_path):
    write_series(tmp_path / "sub", shape=(3, 4, 4))
    junk = tmp_path / "README.txt"
    junk.write_text("this is not DICOM\n" * 20)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    result = read_dicom_folder(tmp_path)
    assert len(result.series) == 1
    skipped = {n.path: n.message for n in result.skipped}
    assert skipped == {str(junk): "skipped: not a DICOM file", str(empty): "skipped: not a DICOM file"}
    assert not is_dicom_file(junk)
    assert read_patient_id(junk) is None


def test_header_helpers(tmp_path):
    (path, *_) = write_series(tmp_path, shape=(2, 4, 4), patient_id="PAT-42")
    assert is_dicom_file(path)
    assert read_patient_id(path) == "PAT-42"


def test_phi_not_in_attributes_or_warnings(tmp_path):
    write_series(tmp_path, shape=(4, 4, 4), patient_id="SECRET-ID", patient_name="Secret^Name",
                 accession_number="ACC-SECRET", institution_name="Secret Clinic", skip_slices=[1])
    (series,) = read_dicom_folder(tmp_path).series
    assert series.patient_id == "SECRET-ID"
    blob = repr(series.volume.attributes) + " ".join(series.volume.warnings)
    for secret in ("SECRET", "Secret", series.series_uid, series.study_uid, "20240101"):
        assert secret not in blob
    assert set(series.volume.attributes) <= {
        "modality", "series_description", "series_number", "manufacturer", "model", "magnetic_field_strength",
        "repetition_time_ms", "echo_time_ms", "flip_angle_deg", "slice_thickness_mm", "image_type", "body_part",
        "transfer_syntax", "stack", "n_files", "intensity_scaling", "name_suffix", "bids", "interpolated_slices"}


def test_duplicate_positions_not_4d_warn(tmp_path):
    data = make_voxels((4, 4, 4))
    write_series(tmp_path, data=data, file_names=[f"s{k}.dcm" for k in range(4)])
    first = read_dicom_folder(tmp_path).series[0]
    # a second copy of slice 1 only, in the same series -> unequal counts per position
    write_series(tmp_path, data=data[1:2], origin=(-10.0, -20.0, 32.5), series_uid=first.series_uid,
                 study_uid=first.study_uid,
                 file_names=["dup.dcm"], instance_numbers=[99])
    result = read_dicom_folder(tmp_path)
    assert len(result.series) == 1
    vol = result.series[0].volume
    assert vol.spatial_shape == (4, 4, 4)
    assert any("duplicate slice positions" in w and "dup.dcm" in w for w in vol.warnings)


def test_missing_file_path_reported(tmp_path):
    from imaging_pipelines.medical.io.dicom import read_dicom_files

    result = read_dicom_files([tmp_path / "nope.dcm"])
    assert result.series == [] and len(result.errors) == 1 and "cannot read file" in result.errors[0].message
