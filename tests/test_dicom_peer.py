"""DICOM reader vs dcm2niix references (dcm_qa_nih) and the TotalSegmentator CT example (JPEG 2000).

Data: $IMAGING_SHARED_DATA or <repo>/../shared/data.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from imaging_pipelines.medical.io.dicom import read_dicom_folder

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IMAGING_SHARED_DATA", REPO.parent / "shared" / "data"))
QA = SHARED / "medical" / "dcm_qa_nih"
CT = SHARED / "medical" / "ct_totalseg"


def _require(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"shared test data not found: {path} (set IMAGING_SHARED_DATA)")


def _canonical(img: nib.Nifti1Image) -> nib.Nifti1Image:
    return nib.as_closest_canonical(img)


def _corners(shape, affine) -> np.ndarray:
    ijk = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]).T
    return (affine @ ijk)[:3]


def _assert_same_grid(ours: nib.Nifti1Image, ref: nib.Nifti1Image) -> None:
    assert ours.shape == ref.shape
    np.testing.assert_allclose(_corners(ours.shape, ours.affine), _corners(ref.shape, ref.affine), atol=1e-3)
    np.testing.assert_allclose(ours.affine, ref.affine, atol=1e-4)


def _series_folders():
    if not QA.exists():
        return []
    return sorted(glob.glob(str(QA / "In" / "*" / "mr_*")))


@pytest.mark.parametrize("folder", _series_folders() or ["<missing>"], ids=lambda f: "/".join(Path(f).parts[-2:]))
def test_dcm_qa_nih_matches_dcm2niix(folder):
    _require(QA)
    result = read_dicom_folder(folder)
    assert not result.errors
    assert len(result.series) == 1
    series = result.series[0]
    vendor = "GE" if "GE" in Path(folder).parent.name else "Si"
    pattern = f"DCM2NIIX_regression_test_{series.series_number}.nii" if vendor == "GE" else f"EPI_PE=*_{series.series_number}.nii"
    refs = glob.glob(str(QA / "Ref" / pattern))
    assert len(refs) == 1, f"no unique reference for series {series.series_number}"
    ref_path = Path(refs[0])
    assert json.loads(ref_path.with_suffix(".json").read_text())["SeriesNumber"] == series.series_number
    vol = series.volume
    ours = _canonical(nib.Nifti1Image(vol.nifti_data(), vol.to_nifti_affine()))
    ref = _canonical(nib.load(ref_path))
    _assert_same_grid(ours, ref)
    assert np.array_equal(np.asanyarray(ours.dataobj), np.asanyarray(ref.dataobj))
    assert vol.is_timeseries and vol.time_step is not None
    assert vol.warnings == ()


def test_ct_jpeg2000_on_segmentation_grid_in_hu():
    _require(CT / "example_ct_dicom")
    result = read_dicom_folder(CT / "example_ct_dicom")
    assert not result.errors
    assert len(result.series) == 1
    series = result.series[0]
    vol = series.volume
    assert vol.attributes["transfer_syntax"].startswith("1.2.840.10008.1.2.4.9")  # JPEG 2000
    assert vol.array.dtype == np.int16  # integer slope/intercept -> integer HU
    ours = _canonical(nib.Nifti1Image(vol.nifti_data(), vol.to_nifti_affine()))
    seg = _canonical(nib.load(CT / "example_seg_dicom.nii.gz"))
    _assert_same_grid(ours, seg)
    a = vol.array
    assert a.min() >= -1024 and a.min() <= -1000  # air / outside the field of view
    assert a.max() < 4000
    # corner of the field of view is air (HU ~ -1000); RescaleIntercept (-1024) applied
    assert np.median(a[:, :20, :20]) <= -900
    # soft tissue present around 0..100 HU
    assert np.count_nonzero((a > 0) & (a < 100)) > 10000
    assert vol.warnings == ()


def test_pydicom_testdata_ct_small():
    from pydicom.data import get_testdata_file

    try:
        path = get_testdata_file("CT_small.dcm", download=False)
    except Exception as exc:  # pydicom-data download not possible offline
        pytest.skip(f"pydicom test file not available: {exc}")
    if path is None:
        pytest.skip("CT_small.dcm not available (pydicom test data)")
    from imaging_pipelines.medical.io.dicom import read_dicom_files

    result = read_dicom_files([path])
    assert len(result.series) == 1
    vol = result.series[0].volume
    assert vol.spatial_shape == (1, 128, 128)
    assert vol.attributes["modality"] == "CT"
