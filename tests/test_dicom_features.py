"""DICOM reader features on synthetic data: ordering, orientation, enhanced multi-frame, compression, 4D, splits."""

from __future__ import annotations

import numpy as np
import pytest
from dicom_factory import make_voxels, slice_positions, write_enhanced_mr, write_series
from pydicom.uid import RLELossless, generate_uid

from imaging_pipelines.medical.io.dicom import read_dicom_folder


def _only(result):
    assert not result.errors, result.errors
    assert len(result.series) == 1, [s.volume.attributes.get("stack") for s in result.series]
    return result.series[0].volume


def _oblique_iop():
    a = np.radians(20)
    b = np.radians(10)
    row = np.array([np.cos(a), np.sin(a), 0.0])
    col = np.array([-np.sin(a) * np.cos(b), np.cos(a) * np.cos(b), np.sin(b)])
    return tuple(row.tolist() + col.tolist())


def test_shuffled_instance_numbers_and_names_sorted_by_position(tmp_path):
    data = make_voxels((7, 6, 5))
    perm = [4, 0, 6, 2, 5, 1, 3]
    write_series(tmp_path, data=data, instance_numbers=[perm[k] + 1 for k in range(7)],
                 file_names=[f"img_{perm[k]}.dcm" for k in range(7)], origin=(1.0, 2.0, -50.0))
    vol = _only(read_dicom_folder(tmp_path))
    assert np.array_equal(vol.array, data)
    assert vol.origin == pytest.approx((1.0, 2.0, -50.0))
    assert vol.warnings == ()


def test_positions_against_normal_give_positive_spacing(tmp_path):
    data = make_voxels((5, 4, 4))
    pos = slice_positions(data.shape, (1, 1, 2.0), (1, 0, 0, 0, 1, 0), (0, 0, 0))[::-1]  # z = 8, 6, ..., 0
    write_series(tmp_path, data=data, positions=pos)
    vol = _only(read_dicom_folder(tmp_path))
    assert vol.spacing[2] == pytest.approx(2.0)
    assert vol.origin == pytest.approx((0, 0, 0))
    assert np.allclose(vol.direction, np.eye(3))
    assert np.array_equal(vol.array, data[::-1])  # first slice is the lowest along the normal


def test_oblique_direction_matches_iop_and_world_positions(tmp_path):
    iop = _oblique_iop()
    spacing = (0.7, 0.8, 3.0)
    data = make_voxels((4, 6, 5))
    paths = write_series(tmp_path, data=data, iop=iop, spacing=spacing, origin=(5.0, -3.0, 12.0))
    vol = _only(read_dicom_folder(tmp_path))
    row, col = np.array(iop[:3]), np.array(iop[3:])
    assert np.allclose(vol.direction[:, 0], row, atol=1e-6)
    assert np.allclose(vol.direction[:, 1], col, atol=1e-6)
    assert np.allclose(vol.direction[:, 2], np.cross(row, col), atol=1e-6)
    assert vol.spacing == pytest.approx(spacing, abs=1e-4)
    import pydicom

    last = pydicom.dcmread(paths[-1])
    world = vol.index_to_world_lps() @ np.array([0, 0, 3, 1.0])
    assert np.allclose(world[:3], [float(v) for v in last.ImagePositionPatient], atol=1e-3)
    assert vol.warnings == ()


@pytest.mark.parametrize("oblique", [False, True])
def test_enhanced_multiframe_equals_single_frame(tmp_path, oblique):
    iop = _oblique_iop() if oblique else (1, 0, 0, 0, 1, 0)
    data = make_voxels((5, 7, 6), seed=3)
    single = write_series(tmp_path / "single", data=data, iop=iop, spacing=(0.8, 0.9, 2.5))
    assert len(single) == 5
    write_enhanced_mr(tmp_path / "multi" / "enh.dcm", data=data, iop=iop, spacing=(0.8, 0.9, 2.5),
                      frame_order=[3, 1, 4, 0, 2])
    a = _only(read_dicom_folder(tmp_path / "single"))
    b = _only(read_dicom_folder(tmp_path / "multi"))
    assert np.array_equal(a.array, b.array)
    # single-frame stacks take dcm2niix's spacing (first two images), multi-frame the mean over the stack: with
    # positions rounded to DS strings these differ by ~3e-5 mm per slice, within the 1e-3 mm dcm2niix criterion
    assert a.same_geometry(b, atol_mm=1e-3)
    assert np.allclose(a.direction, b.direction)
    assert b.attributes["repetition_time_ms"] == 500.0 and b.attributes["flip_angle_deg"] == 15.0


def test_enhanced_multiframe_timeseries(tmp_path):
    data = np.stack([make_voxels((3, 4, 5), seed=s) for s in range(4)])
    write_enhanced_mr(tmp_path / "enh.dcm", data=data, frame_order=list(np.random.default_rng(1).permutation(12)))
    vol = _only(read_dicom_folder(tmp_path))
    assert vol.array.shape == (4, 3, 4, 5)
    assert np.array_equal(vol.array, data)
    assert vol.time_step == pytest.approx(0.5)


def test_rle_compressed_identical_to_uncompressed(tmp_path):
    data = make_voxels((4, 9, 7), seed=5)
    write_series(tmp_path / "raw", data=data, series_number=1)
    write_series(tmp_path / "rle", data=data, series_number=1, transfer_syntax=RLELossless)
    a = _only(read_dicom_folder(tmp_path / "raw"))
    b = _only(read_dicom_folder(tmp_path / "rle"))
    assert b.attributes["transfer_syntax"] == RLELossless
    assert np.array_equal(a.array, b.array) and a.array.dtype == b.array.dtype
    assert a.same_geometry(b)


def test_ct_rescale_to_hu_integer_and_float(tmp_path):
    stored = make_voxels((3, 4, 4), low=0, high=3000).astype(np.uint16)
    write_series(tmp_path / "int", data=stored, modality="CT", rescale=(1, -1024))
    write_series(tmp_path / "float", data=stored, modality="CT", rescale=(0.5, -1024.25))
    a = _only(read_dicom_folder(tmp_path / "int"))
    assert a.array.dtype == np.int16
    assert np.array_equal(a.array, stored.astype(np.int32) - 1024)
    b = _only(read_dicom_folder(tmp_path / "float"))
    assert b.array.dtype == np.float32
    assert np.allclose(b.array, stored * 0.5 - 1024.25)
    write_series(tmp_path / "wide", data=stored, modality="CT", rescale=(20, 0))
    c = _only(read_dicom_folder(tmp_path / "wide"))
    assert c.array.dtype == np.int32 and np.array_equal(c.array, stored.astype(np.int32) * 20)


def test_single_frame_4d_ordered_by_acquisition(tmp_path):
    nt, shape = 3, (4, 5, 6)
    vols = [make_voxels(shape, seed=t) for t in range(nt)]
    study, series = generate_uid(), generate_uid()
    for t in range(nt):
        write_series(tmp_path, data=vols[t], study_uid=study, series_uid=series,
                     instance_numbers=[100 - (t * 4 + k) for k in range(4)],  # misleading instance numbers
                     file_names=[f"f{(7 * (t * 4 + k)) % 13:02d}_{t}{k}.dcm" for k in range(4)],
                     extra={"AcquisitionNumber": t + 1, "RepetitionTime": "2000"})
    vol = _only(read_dicom_folder(tmp_path))
    assert vol.array.shape == (3, 4, 5, 6)
    assert np.array_equal(vol.array, np.stack(vols))
    assert vol.time_step == pytest.approx(2.0)
    assert vol.warnings == ()


def test_mixed_orientations_split_with_warning(tmp_path):
    study, series = generate_uid(), generate_uid()
    write_series(tmp_path, shape=(3, 4, 4), study_uid=study, series_uid=series, iop=(1, 0, 0, 0, 1, 0),
                 file_names=["ax0.dcm", "ax1.dcm", "ax2.dcm"])
    write_series(tmp_path, shape=(2, 4, 4), study_uid=study, series_uid=series, iop=(0, 1, 0, 0, 0, -1),
                 file_names=["sag0.dcm", "sag1.dcm"])
    result = read_dicom_folder(tmp_path)
    assert len(result.series) == 2
    stacks = sorted(s.volume.attributes["stack"] for s in result.series)
    assert stacks == ["axial", "sagittal"]
    for s in result.series:
        assert any("mixed orientations" in w for w in s.volume.warnings)
    assert {len(s.files) for s in result.series} == {3, 2}


def test_echo_split(tmp_path):
    study, series = generate_uid(), generate_uid()
    for echo in (1, 2):
        write_series(tmp_path, shape=(3, 4, 4), study_uid=study, series_uid=series, seed=echo,
                     file_names=[f"e{echo}_{k}.dcm" for k in range(3)], extra={"EchoNumbers": echo})
    result = read_dicom_folder(tmp_path)
    assert sorted(s.volume.attributes["stack"] for s in result.series) == ["echo 1", "echo 2"]
    assert all(s.volume.spatial_shape == (3, 4, 4) for s in result.series)


def test_acquisitions_with_different_geometry_split(tmp_path):
    study, series = generate_uid(), generate_uid()
    write_series(tmp_path, shape=(4, 4, 4), study_uid=study, series_uid=series, origin=(0, 0, 0),
                 spacing=(1, 1, 2), file_names=[f"a{k}.dcm" for k in range(4)], extra={"AcquisitionNumber": 1})
    write_series(tmp_path, shape=(3, 4, 4), study_uid=study, series_uid=series, origin=(0, 0, 1),
                 spacing=(1, 1, 3), file_names=[f"b{k}.dcm" for k in range(3)], extra={"AcquisitionNumber": 2})
    result = read_dicom_folder(tmp_path)
    assert [s.volume.attributes["stack"] for s in result.series] == ["acquisition 1", "acquisition 2"]
    assert [s.volume.spacing[2] for s in result.series] == pytest.approx([2.0, 3.0])


def test_gantry_tilt_warning(tmp_path):
    shape = (5, 4, 4)
    pos = np.array([[0.0, 0.5 * k, 2.0 * k] for k in range(shape[0])])  # y shifts 0.5 mm per slice
    write_series(tmp_path, shape=shape, positions=pos)
    vol = _only(read_dicom_folder(tmp_path))
    assert vol.spacing[2] == pytest.approx(2.0)
    assert np.allclose(vol.direction, np.eye(3))
    assert any("gantry tilt" in w and "0.500 mm" in w for w in vol.warnings)


def test_attributes(tmp_path):
    write_series(tmp_path, shape=(2, 4, 4), series_number=12, series_description="t1 axial")
    result = read_dicom_folder(tmp_path)
    s = result.series[0]
    attrs = s.volume.attributes
    assert s.series_number == 12 and s.series_description == "t1 axial" and s.modality == "MR"
    assert attrs["series_number"] == 12 and attrs["n_files"] == 2 and attrs["stack"] is None
    assert attrs["repetition_time_ms"] == 500.0 and attrs["image_type"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
