"""Headers that claim huge images are refused before any pixel memory is allocated (imaging_pipelines.core.limits)."""

from __future__ import annotations

import gzip
import time
import tracemalloc

import nibabel as nib
import numpy as np
import pytest
import rasterio
from dicom_factory import write_series
from pydicom.uid import RLELossless
from rasterio.transform import from_origin

from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.tools.fuzz.mutations import dicom_set_elements, nifti_set_field, tiff_set_tag
from imaging_pipelines.medical.io.dicom import read_dicom_folder
from imaging_pipelines.medical.io.dicom_header import SizeCappedFile
from imaging_pipelines.medical.io.image_files import read_image_file
from imaging_pipelines.core.limits import MAX_IMAGE_BYTES_ENV, check_claimed_size, max_image_bytes
from imaging_pipelines.remote_sensing.io import read_raster

FAST_S = 0.5  # seconds a refusal may take
SMALL_PEAK = 8 * 2**20  # bytes of Python/numpy allocations a refusal may make


def refused_quickly(read, path):
    """The ImagingInputError a read raises, checking it came fast and allocated little."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ImagingInputError) as info:
            read(path)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < FAST_S, f"refusal took {elapsed:.2f} s"
    assert peak < SMALL_PEAK, f"refusal allocated {peak} bytes"
    return info.value


def nifti2_claiming(shape, tmp_path, name):
    img = nib.Nifti2Image(np.zeros((2, 2, 2), np.int16), np.eye(4))
    path = tmp_path / name
    nib.save(img, path)
    raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    for i, n in enumerate(shape, start=1):
        raw = nifti_set_field(raw, "dim", n, i)
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    return path


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_nifti_claiming_100000_cubed_is_refused_before_allocating(tmp_path, name):
    path = nifti2_claiming((100000, 100000, 100000), tmp_path, name)
    err = refused_quickly(read_image_file, path)
    assert err.path == str(path) and "header claims 100000 x 100000 x 100000 voxels" in err.problem


def test_nifti_within_limit_but_larger_than_file_is_refused(tmp_path):
    path = nifti2_claiming((500, 500, 100), tmp_path, "short.nii")  # 50 MB claimed, a few hundred bytes present
    err = refused_quickly(read_image_file, path)
    assert "truncated file or corrupt header" in err.problem


def test_nifti_extension_claiming_gigabytes_is_refused(tmp_path):
    path = tmp_path / "ext.nii"
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4))
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"comment text...."))
    nib.save(img, path)
    raw = bytearray(path.read_bytes())
    raw[352:356] = (2**31 - 16).to_bytes(4, "little")  # esize of the first extension
    path.write_bytes(bytes(raw))
    err = refused_quickly(read_image_file, path)
    assert "header extension claims" in err.problem


def test_dicom_claiming_huge_rows_columns_frames_is_refused(tmp_path):
    for folder, syntax in ((tmp_path / "native", None), (tmp_path / "rle", RLELossless)):
        (path,) = write_series(folder, shape=(1, 8, 8), transfer_syntax=syntax)
        path.write_bytes(dicom_set_elements(path.read_bytes(), {"Rows": 65535, "Columns": 65535,
                                                               "NumberOfFrames": "100000"}))
        err = refused_quickly(read_dicom_folder, folder)
        assert err.path == str(folder) and "header claims 100000 x 65535 x 65535 pixels" in err.problem


def test_dicom_rle_claiming_more_frames_than_fragments_is_refused(tmp_path):
    (path,) = write_series(tmp_path, shape=(1, 8, 8), transfer_syntax=RLELossless)
    path.write_bytes(dicom_set_elements(path.read_bytes(), {"NumberOfFrames": "2000"}))
    err = refused_quickly(read_dicom_folder, tmp_path)
    assert "header claims 2000 frames but the encapsulated pixel data can hold at most" in err.problem


def test_dicom_element_length_of_gigabytes_reads_only_the_file(tmp_path):
    (path,) = write_series(tmp_path, shape=(1, 4, 4))
    raw = path.read_bytes()
    at = raw.find(b"\x08\x00\x3e\x10LO")  # SeriesDescription: make its 2-byte length point far beyond the file
    assert at > 0
    # as explicit VR UN (4-byte length) of 0xFFFFFFF0 bytes
    raw = raw[:at + 4] + b"UN\0\0" + (0xFFFFFFF0).to_bytes(4, "little") + raw[at + 8:]
    path.write_bytes(raw)
    refused_quickly(read_dicom_folder, tmp_path)
    with open(path, "rb") as fh:
        capped = SizeCappedFile(fh)
        assert capped.read(2**40) == raw and capped.read(10) == b""


def _geotiff(path, **options):
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=1, dtype="uint16", crs="EPSG:32618",
                       transform=from_origin(500000, 4200000, 30, 30), **options) as dst:
        dst.write(np.ones((1, 16, 16), np.uint16))
    return path


@pytest.mark.parametrize(("options", "reason"), [
    ({}, "bytes uncompressed, but the file holds"),  # the file is far too short for the claim
    ({"compress": "deflate", "blockysize": 16}, "more than the"),  # one compressed strip over the byte limit
])
def test_geotiff_claiming_huge_width_height_is_refused(tmp_path, options, reason):
    path = _geotiff(tmp_path / "huge.tif", **options)
    raw = path.read_bytes()
    for tag in (256, 257, 278):  # ImageWidth, ImageLength, RowsPerStrip
        raw = tiff_set_tag(raw, tag, 1_000_000)
    path.write_bytes(raw)
    err = refused_quickly(read_raster, path)
    assert err.path == str(path) and "header claims" in err.problem and "1000000 x 1000000" in err.problem
    assert reason in err.problem


def test_geotiff_claiming_thousands_of_bands_is_refused_quickly(tmp_path):
    path = _geotiff(tmp_path / "bands.tif", compress="deflate", tiled=True, blockxsize=16, blockysize=16)
    path.write_bytes(tiff_set_tag(path.read_bytes(), 277, 32767))  # SamplesPerPixel
    t0 = time.perf_counter()
    with pytest.raises(ImagingInputError, match="bands"):
        read_raster(path)
    assert time.perf_counter() - t0 < 2.0


def test_limit_is_configurable_and_applies_to_valid_files(tmp_path, monkeypatch):
    path = tmp_path / "ok.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 32), np.float32), np.eye(4)), path)
    assert read_image_file(path).spatial_shape == (32, 32, 32)
    monkeypatch.setenv(MAX_IMAGE_BYTES_ENV, str(32**3 * 4 - 1))
    assert max_image_bytes() == 32**3 * 4 - 1
    with pytest.raises(ImagingInputError, match=f"raise {MAX_IMAGE_BYTES_ENV}"):
        read_image_file(path)
    monkeypatch.setenv(MAX_IMAGE_BYTES_ENV, "lots")
    with pytest.raises(ValueError, match=MAX_IMAGE_BYTES_ENV):
        max_image_bytes()


def test_claimed_size_checks_empty_and_available_bytes():
    with pytest.raises(ImagingInputError, match="empty or negative"):
        check_claimed_size("x.nii", (4, 0, 4), 2)
    with pytest.raises(ImagingInputError, match="can hold at most 100 bytes"):
        check_claimed_size("x.nii", (10, 10), 2, available_bytes=100)
    check_claimed_size("x.nii", (10, 10), 1, available_bytes=100)
