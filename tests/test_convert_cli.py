"""`imaging-pipelines convert`: same readers as the pipeline, clear errors for bad sources."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from typer.testing import CliRunner

from imaging_pipelines.cli import app
from tests.pipeline_helpers import write_patient


def test_convert_dicom_folder_with_two_series_writes_one_file_per_series(tmp_path):
    write_patient(tmp_path / "src", "PID-X", series_number=3)
    write_patient(tmp_path / "src", "PID-X", series_number=7, shape=(4, 10, 8), seed=5)
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "src"), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "s003_t1_ax.json", "s003_t1_ax.nii.gz", "s007_t1_ax.json", "s007_t1_ax.nii.gz"]  # BIDS sidecars
    img = nib.load(tmp_path / "out" / "s007_t1_ax.nii.gz")
    assert img.shape == (8, 10, 4)
    # LPS origin (-5, -8, 12) is RAS (5, 8, 12)
    assert np.allclose(img.affine[:3, 3], [5.0, 8.0, 12.0])


def test_convert_refuses_single_file_output_for_several_series(tmp_path):
    write_patient(tmp_path / "src", "PID-X", series_number=3)
    write_patient(tmp_path / "src", "PID-X", series_number=7, seed=5)
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "src"), str(tmp_path / "one.nii.gz")])
    assert result.exit_code == 1 and "holds 2 series" in result.output


def test_convert_empty_folder_names_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "empty"), str(tmp_path / "x.nii.gz")])
    assert result.exit_code == 1 and str(tmp_path / "empty") in result.output


def test_convert_nrrd_file_keeps_geometry(tmp_path, shared_data):
    src = shared_data / "medical" / "brain_tumour_mr" / "brain1_image.nrrd"
    result = CliRunner().invoke(app, ["convert", str(src), str(tmp_path / "brain.nii.gz")])
    assert result.exit_code == 0, result.output
    import SimpleITK as sitk

    ref = sitk.ReadImage(str(src))
    img = nib.load(tmp_path / "brain.nii.gz")
    lps = np.array(ref.TransformIndexToPhysicalPoint((5, 6, 7)))
    assert np.allclose((img.affine @ [5, 6, 7, 1])[:3], lps * [-1, -1, 1], atol=1e-4)
    assert np.array_equal(np.asanyarray(img.dataobj), sitk.GetArrayFromImage(ref).transpose(2, 1, 0))


def test_convert_not_an_image(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "notes.txt"), str(tmp_path / "x.nii.gz")])
    assert result.exit_code == 1 and "notes.txt" in result.output
