"""Missing slices: resampled onto a uniform grid by position; original slices keep voxels and world position."""

from __future__ import annotations

import numpy as np
import pytest
from dicom_factory import make_voxels, slice_positions, write_series

from imaging_pipelines.medical.convert import convert
from imaging_pipelines.medical.io.dicom import read_dicom_folder
from imaging_pipelines.medical.io.dicom_gaps import fill_gaps, gap_plan


def _oblique_iop():
    a, b = np.radians(25), np.radians(12)
    row = np.array([np.cos(a), np.sin(a), 0.0])
    col = np.array([-np.sin(a) * np.cos(b), np.cos(a) * np.cos(b), np.sin(b)])
    return tuple(row.tolist() + col.tolist())


@pytest.mark.parametrize("removed", [[4], [1], [3, 4]])
def test_removed_slices_stay_at_their_world_positions_and_the_gap_is_flagged(tmp_path, removed):
    iop, spacing, origin = _oblique_iop(), (0.7, 0.8, 2.2), (-31.0, 12.5, 40.0)
    data = make_voxels((9, 6, 5), seed=4)
    write_series(tmp_path, data=data, iop=iop, spacing=spacing, origin=origin, skip_slices=removed)
    (series,) = read_dicom_folder(tmp_path).series
    vol = series.volume
    assert vol.spatial_shape == (9, 6, 5)
    assert vol.attributes["interpolated_slices"] == removed
    assert any("missing slices" in w for w in vol.warnings)
    true_positions = slice_positions(data.shape, spacing, iop, origin)
    index_to_world = vol.index_to_world_lps()
    for k in range(9):
        world = index_to_world @ np.array([0.0, 0.0, k, 1.0])
        assert np.linalg.norm(world[:3] - true_positions[k]) < 0.01, f"slice {k} misplaced"
        if k not in removed:
            assert np.array_equal(vol.array[k], data[k])
    lo, hi = min(removed) - 1, max(removed) + 1
    for k in removed:  # linear in position between the neighbours that exist
        w = (k - lo) / (hi - lo)
        expected = np.rint((1 - w) * data[lo].astype(float) + w * data[hi].astype(float))
        assert np.array_equal(vol.array[k], expected)


def test_converted_nifti_has_the_resampled_grid(tmp_path):
    import nibabel as nib

    data = make_voxels((6, 4, 4), seed=1)
    write_series(tmp_path / "src", data=data, spacing=(1, 1, 3.0), skip_slices=[2])
    written, _ = convert(tmp_path / "src", tmp_path / "out.nii.gz")
    img = nib.load(written[0])
    assert img.shape == (4, 4, 6)
    assert img.header.get_zooms()[2] == pytest.approx(3.0)


def test_gaps_that_are_not_whole_steps_are_not_resampled():
    assert gap_plan(np.array([0.0, 2.0, 4.0, 7.0, 9.0]), 2.0) is None  # 3 mm gap in a 2 mm stack
    assert gap_plan(np.array([0.0, 2.0, 4.0]), 2.0) is None  # nothing missing
    plan = gap_plan(np.array([0.0, 2.0, 6.0, 8.0]), 2.0)
    assert plan is not None and plan.filled == [2] and plan.step == pytest.approx(2.0)
    stack = np.arange(4, dtype=np.int16)[:, None, None] * np.ones((1, 2, 2), np.int16) * 10
    assert fill_gaps(stack, plan)[:, 0, 0].tolist() == [0, 10, 15, 20, 30]
