"""What the DICOM reader keeps per file (imaging_pipelines.medical.io.dicom_slim): uncompressed files read by the raw
scan leave their pixel bytes in the file until the stack is assembled (PixelLocation: same volume, files changed
meanwhile refused by name), and values equal across files are stored once."""

from __future__ import annotations

import os

import numpy as np
import pytest

from dicom_factory import make_voxels, write_series
from imaging_pipelines.medical.io import dicom
from imaging_pipelines.medical.io.dicom_files import read_file
from imaging_pipelines.medical.io.dicom_header import records_for
from imaging_pipelines.medical.io.dicom_pixels import PixelDecodeError, decode_all
from imaging_pipelines.medical.io.dicom_slim import PixelLocation, SlimHeader, slim_source


def _source(path, shared=None):
    records = records_for(str(path), read_file(str(path)))
    slim_source(records, shared)
    return records[0].source


def _records(path, shared):
    records = records_for(str(path), read_file(str(path)))
    slim_source(records, shared)
    return records


def test_pixels_stay_in_the_file_until_decoded(tmp_path):
    data = make_voxels((3, 8, 6), seed=4)
    paths = write_series(tmp_path, data=data)
    source = _source(paths[1])
    assert isinstance(source.dataset, SlimHeader) and "PixelData" not in source.dataset
    assert isinstance(source.pixels_at, PixelLocation) and source.pixels_at.length == data[1].nbytes
    np.testing.assert_array_equal(source.frames()[0], data[1])
    source.release()
    np.testing.assert_array_equal(source.frames()[0], data[1])  # read again after a release


def test_volume_same_as_from_pixels_kept_in_memory(tmp_path, monkeypatch):
    data = make_voxels((6, 8, 6), seed=5)
    write_series(tmp_path, data=data, rescale=(2.0, -100.0))
    lazy = dicom.read_dicom_folder(tmp_path).series[0].volume
    monkeypatch.setattr("imaging_pipelines.medical.io.dicom_slim.RawDataset", type("NoRaw", (), {}))
    eager = dicom.read_dicom_folder(tmp_path).series[0].volume  # every source keeps its PixelData bytes
    np.testing.assert_array_equal(lazy.array, eager.array)
    np.testing.assert_array_equal(lazy.array, data.astype(np.int32) * 2 - 100)
    assert lazy.attributes == eager.attributes


def test_changed_file_is_refused_not_misread(tmp_path):
    paths = write_series(tmp_path, data=make_voxels((3, 8, 6), seed=6))
    source = _source(paths[0])
    with open(paths[0], "ab") as fh:  # the file grows after its header was read
        fh.write(b"\0\0")
    assert isinstance(decode_all([source])[0], PixelDecodeError)
    with pytest.raises(PixelDecodeError, match="file changed while the series was being read"):
        source.frames()
    os.remove(paths[0])
    with pytest.raises(PixelDecodeError, match="cannot read the pixel data again"):
        source.frames()


def test_file_changed_during_the_read_is_left_out_by_name(tmp_path, monkeypatch):
    data = make_voxels((5, 8, 6), seed=7)
    paths = write_series(tmp_path, data=data)
    real = dicom.decode_all

    def change_one_then_decode(sources, *args, **kwargs):
        with open(paths[2], "r+b") as fh:  # same size, new content and modification time
            fh.seek(-2, os.SEEK_END)
            fh.write(b"\x01\x02")
        st = os.stat(paths[2])
        os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        return real(sources, *args, **kwargs)

    monkeypatch.setattr(dicom, "decode_all", change_one_then_decode)
    res = dicom.read_dicom_folder(tmp_path)
    assert [os.path.basename(e.path) for e in res.errors] == [paths[2].name]
    assert "file changed while the series was being read" in res.errors[0].message
    vol = res.series[0].volume
    assert vol.array.shape[0] == 5  # the missing slice is interpolated from its neighbours
    np.testing.assert_array_equal(vol.array[[0, 1, 3, 4]], data[[0, 1, 3, 4]])
    assert any(paths[2].name in w for w in vol.warnings)


def test_values_equal_across_files_are_stored_once(tmp_path):
    paths = write_series(tmp_path, data=make_voxels((3, 8, 6), seed=8), iop=(0.6, 0.8, 0, -0.8, 0.6, 0))
    shared: dict = {}
    a, b = (_records(p, shared)[0] for p in paths[:2])
    for name in ("split_key", "split_labels", "pixel_spacing", "row_cos", "col_cos", "normal"):
        assert getattr(a, name) is getattr(b, name), name
    assert a.position is not b.position and a.time_key != b.time_key  # what differs stays per file
    ha, hb = a.source.dataset, b.source.dataset
    assert ha["SeriesDescription"] is hb["SeriesDescription"] and ha["ImageType"] is hb["ImageType"]
    assert ha.file_meta is hb.file_meta
    assert ha["InstanceNumber"] != hb["InstanceNumber"]
    alone = _records(paths[0], None)[0]  # without a shared table: equal values, own objects
    assert alone.split_key == a.split_key and alone.split_key is not a.split_key
    np.testing.assert_array_equal(alone.normal, a.normal)
