"""2D radiographs and other images without patient geometry: spacing, MONOCHROME1, VOI LUT, presentation intent."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from dicom_factory import base_dataset
from pydicom.uid import ExplicitVRLittleEndian

from imaging_pipelines.medical.io.dicom import read_dicom_files

DX_SOP = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def _testdata(name: str) -> str:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} not available (pydicom-data)")
    return path


def _only(paths):
    result = read_dicom_files(paths)
    assert not result.errors, result.errors
    assert len(result.series) == 1
    return result.series[0].volume


def test_cr_from_pydicom_data_is_a_2d_image_with_monochrome1_inverted():
    path = _testdata("RG3_UNCR.dcm")  # CR, MONOCHROME1, 10 bits stored, no PixelSpacing
    ds = pydicom.dcmread(path)
    vol = _only([path])
    assert vol.spatial_shape == (1, 1760, 1760)
    assert vol.attributes["modality"] == "CR"
    assert vol.spacing[:2] == (1.0, 1.0)
    assert vol.attributes["planar"]["pixel_spacing_source"].startswith("none")
    assert vol.attributes["planar"]["inverted_monochrome1"] is True
    stored = ds.pixel_array.astype(np.int64)
    assert np.array_equal(vol.array[0].astype(np.int64), (1 << int(ds.BitsStored)) - 1 - stored)
    # centred: the middle of the image is at 0 mm
    centre = vol.index_to_world_lps() @ np.array([(1760 - 1) / 2, (1760 - 1) / 2, 0, 1.0])
    assert np.allclose(centre[:3], 0.0)


def test_cr_with_zero_pixel_spacing_falls_back_and_compressed_matches_uncompressed():
    a = _only([_testdata("RG1_UNCR.dcm")])
    b = _only([_testdata("RG1_J2KR.dcm")])  # JPEG 2000 lossless of the same image
    assert a.spacing[:2] == (1.0, 1.0)  # PixelSpacing 0\0 in the file is treated as absent
    assert np.array_equal(a.array, b.array)


def test_dx_imager_pixel_spacing_voi_lut_and_presentation_intent(tmp_path):
    path = tmp_path / "dx.dcm"
    ds = base_dataset(path, DX_SOP, modality="DX", series_description="chest pa")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    plane = np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 30
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.Rows, ds.Columns = plane.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = plane.tobytes()
    ds.ImagerPixelSpacing = [0.15, 0.2]
    ds.EstimatedRadiographicMagnificationFactor = 1.1
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 2000, 4000, "LINEAR"
    ds.InstanceNumber = 1
    ds.save_as(path, enforce_file_format=True)
    vol = _only([str(path)])
    assert vol.spatial_shape == (1, 12, 10)
    assert vol.spacing[:2] == pytest.approx((0.2, 0.15))  # (x = between columns, y = between rows)
    planar = vol.attributes["planar"]
    assert planar["pixel_spacing_source"].startswith("ImagerPixelSpacing")
    assert planar["estimated_magnification"] == pytest.approx(1.1)
    assert planar["presentation_intent"] == "FOR PRESENTATION"
    assert planar["window_center"] == [2000.0] and planar["window_width"] == [4000.0]
    assert planar["voi_lut_function"] == "LINEAR"
    assert np.array_equal(vol.array[0], (4095 - plane.astype(np.int64)))  # MONOCHROME1 inverted on 12 bits
    assert "TEST001" not in repr(vol.attributes)
