"""Compressed and unusual transfer syntaxes decode to the same voxels (real files from pydicom / pydicom-data)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from imaging_pipelines.medical.io.dicom import read_dicom_files

MR_SMALL_VARIANTS = [
    "MR_small_RLE.dcm",  # RLE Lossless
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "MR_small_implicit.dcm",  # implicit VR little endian
]


def _testfile(name: str) -> str:
    path = get_testdata_file(name, download=False)  # never reach for the network
    if path is None:
        pytest.skip(f"{name} not available (pydicom-data not installed)")
    return path


@pytest.mark.parametrize("name", MR_SMALL_VARIANTS)
def test_mr_small_variants_match_uncompressed(name):
    (reference,) = read_dicom_files([_testfile("MR_small.dcm")]).series
    result = read_dicom_files([_testfile(name)])
    assert not result.errors, result.errors
    (series,) = result.series
    assert np.array_equal(series.volume.array.astype(np.int32), reference.volume.array.astype(np.int32))
    assert series.volume.same_geometry(reference.volume, atol_mm=1e-6)


@pytest.mark.parametrize("name", ["JPEG-LL.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm"])
def test_jpeg_lossless_process14_decodes_like_pydicom(tmp_path, name):
    """The JPEG lossless files carry no patient geometry, so geometry is added; pixel data stays compressed."""
    ds = pydicom.dcmread(_testfile(name))
    expected = ds.pixel_array
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.SOPClassUID = pydicom.uid.MRImageStorage
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
    ds.save_as(tmp_path / "ll.dcm")
    result = read_dicom_files([tmp_path / "ll.dcm"])
    assert not result.errors, result.errors
    (series,) = result.series
    assert series.volume.attributes["transfer_syntax"].startswith("1.2.840.10008.1.2.4.70")
    assert np.array_equal(series.volume.array[0], expected)
