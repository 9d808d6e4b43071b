"""The raw little-endian header scan (imaging_pipelines.medical.io.dicom_raw) gives pydicom's values, declines what
it cannot reproduce, and `convert` of an uncompressed series imports none of the heavy libraries."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ImplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from dicom_factory import write_series
from imaging_pipelines.medical.io import dicom, dicom_raw
from imaging_pipelines.medical.io.dicom_files import DETAIL_TAG_SET, DETAIL_TAGS, READ_TAG_SET, READ_TAGS
from imaging_pipelines.medical.io.dicom_raw_tags import KEYWORD_TAGS

REPO = Path(__file__).resolve().parents[1]


def _same(raw_value, py_value) -> bool:
    if isinstance(py_value, (list, tuple)) or type(py_value).__name__ == "MultiValue":
        return isinstance(raw_value, list) and len(raw_value) == len(py_value) and all(
            _same(a, b) for a, b in zip(raw_value, py_value))
    if isinstance(py_value, float) and py_value != py_value:
        return raw_value != raw_value
    return raw_value == py_value and (py_value is None or isinstance(raw_value, type(py_value).__mro__[-2])
                                      or isinstance(raw_value, (int, float, str, bytes)))


def assert_same_as_pydicom(buf: bytes, tags: list, tag_set: frozenset[int], **kwargs) -> None:
    raw = dicom_raw.parse(buf, tag_set)
    assert raw is not None
    ds = pydicom.dcmread(io.BytesIO(buf), specific_tags=tags, **kwargs)
    assert set(raw.keys()) == {int(e.tag) for e in ds}
    for elem in ds:
        got = raw[int(elem.tag)]
        assert got.VR == elem.VR, elem
        assert _same(got.value, elem.value), (elem, got.value)
        if elem.keyword:
            assert _same(raw.get(elem.keyword), ds.get(elem.keyword))
            assert _same(getattr(raw, elem.keyword), getattr(ds, elem.keyword))
    assert raw.file_meta.get("TransferSyntaxUID") == str(ds.file_meta.TransferSyntaxUID)


def test_keyword_table_is_pydicoms_dictionary():
    keywords = {k for k in READ_TAGS + DETAIL_TAGS if isinstance(k, str)}
    assert keywords <= set(KEYWORD_TAGS)
    for keyword, (tag, vr) in KEYWORD_TAGS.items():
        assert (tag_for_keyword(keyword), dictionary_VR(tag)) == (tag, vr), keyword


def _rich_series(folder: Path, **kwargs) -> list[Path]:
    """A series whose headers exercise the value conversions: multi-valued CS/DS/IS/US, empty values, private
    elements, a UTF-8 description, and an undefined-length sequence before the wanted elements."""
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator = "T-A0100", "SRT"
    extra = {
        "SpecificCharacterSet": "ISO_IR 192", "SeriesDescription": "Kopf T1 \u00e4\u00f6 ", "SequenceName": "",
        "AcquisitionMatrix": [0, 64, 64, 0], "EchoNumbers": "2", "InversionTime": None, "ScanningSequence": ["EP", "GR"],
        "WindowCenter": ["40", "400 "], "SoftwareVersions": ["syngo MR E11", "x "], "AcquisitionTime": "114815.5 ",
        "AnatomicRegionSequence": DicomSequence([item]), "ImagesInAcquisition": "3",
    }
    paths = write_series(folder, shape=(3, 8, 6), extra=extra, **kwargs)
    for p in paths:  # private elements as vendors write them (GE diffusion values, a Philips FL)
        ds = pydicom.dcmread(p)
        ds.add_new(0x00430010, "LO", "GEMS_PARM_01")
        ds.add_new(0x00431039, "IS", ["1000", "8", "0", "0"])
        ds.add_new(0x00190010, "LO", "GEMS_ACQU_01")
        ds.add_new(0x001910BB, "DS", "0.5")
        ds.add_new(0x20050010, "LO", "Philips MR Imaging DD 001")
        ds["AnatomicRegionSequence"].is_undefined_length = True
        ds.save_as(p, enforce_file_format=True)
    return paths


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_values_equal_pydicoms(tmp_path, implicit):
    paths = _rich_series(tmp_path / "s")
    for p in paths:
        buf = p.read_bytes()
        if implicit:  # no private elements: their VR would come from pydicom's private dictionary
            ds = pydicom.dcmread(p)
            for tag in [t for t in ds.keys() if t.group % 2]:
                del ds[tag]
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            out = io.BytesIO()
            ds.save_as(out, implicit_vr=True, little_endian=True, enforce_file_format=True)
            buf = out.getvalue()
        assert_same_as_pydicom(buf, READ_TAGS, READ_TAG_SET)
        assert_same_as_pydicom(buf, DETAIL_TAGS, DETAIL_TAG_SET, stop_before_pixels=True)


def _modified(path: Path, change) -> bytes:
    ds = pydicom.dcmread(path)
    change(ds)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_declines_what_it_cannot_reproduce(tmp_path):
    path = write_series(tmp_path / "s", shape=(1, 8, 6))[0]
    assert dicom_raw.parse(path.read_bytes(), READ_TAG_SET) is not None
    declined = {
        "wanted sequence": lambda ds: setattr(ds, "SharedFunctionalGroupsSequence", DicomSequence([Dataset()])),
        "UN element": lambda ds: (ds.add_new(0x00430010, "LO", "GEMS_PARM_01"),
                                  ds.add_new(0x00431039, "UN", b"1000\\8\\0\\0 ")),
        "decimal IS": lambda ds: setattr(ds, "InstanceNumber", "1.0"),
        "NaN DS": lambda ds: setattr(ds, "SliceThickness", "NaN"),
        "other character set": lambda ds: setattr(ds, "SpecificCharacterSet", "ISO_IR 144"),
    }
    for why, change in declined.items():
        assert dicom_raw.parse(_modified(path, change), READ_TAG_SET) is None, why
    assert dicom_raw.parse(path.read_bytes()[:-10], READ_TAG_SET) is None  # PixelData runs past the end
    assert dicom_raw.parse(path.read_bytes()[128:], READ_TAG_SET) is None  # no preamble
    rle = write_series(tmp_path / "rle", shape=(1, 8, 6), transfer_syntax=RLELossless)[0]
    assert dicom_raw.parse(rle.read_bytes(), READ_TAG_SET) is None  # compressed: pydicom decodes it


def _series_summary(folder: Path) -> list:
    res = dicom.read_dicom_folder(folder)
    return [(s.volume.array.tobytes(), s.volume.array.dtype.str, list(s.volume.spacing), list(s.volume.origin),
             np.asarray(s.volume.direction).tolist(), s.volume.warnings, json.dumps(s.volume.attributes, sort_keys=True, default=str),
             s.series_uid, s.patient_id, s.files) for s in res.series] + [
        [(n.path, n.message) for n in res.skipped], [(n.path, n.message) for n in res.errors]]


def test_reader_output_identical_with_and_without_raw_scan(tmp_path, monkeypatch, shared_data):
    _rich_series(tmp_path / "rich")
    (tmp_path / "rich" / "notes.txt").write_text("not DICOM")
    folders = [tmp_path / "rich", shared_data / "medical/dcm_qa_nih/In/20180918GE/mr_0004"]
    with_raw = [_series_summary(f) for f in folders]
    monkeypatch.setattr(dicom_raw, "parse", lambda buf, wanted: None)
    assert [_series_summary(f) for f in folders] == with_raw


@pytest.mark.parametrize("source", ["synthetic", "medical/ct_totalseg/example_ct_dicom"],
                         ids=["uncompressed", "siemens-jpeg2000-ct"])
def test_convert_imports_no_heavy_library(tmp_path, shared_data, source):
    if source == "synthetic":
        write_series(tmp_path / "src", shape=(4, 8, 6), series_description="t1")
        src = tmp_path / "src"
    else:
        src = shared_data / source
    code = (
        "import sys; from imaging_pipelines.entry import main; status = main(['convert', sys.argv[1], sys.argv[2]]);"
        "heavy = {'pydicom', 'nibabel', 'typer', 'click', 'pydantic', 'upath', 'fsspec', 'SimpleITK', 'zarr',"
        " 'dagster', 'torch', 'monai', 'scipy', 'skimage'};"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules})); sys.exit(status)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code, str(src), str(tmp_path / "out")], env=env,
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "[]"
    assert "wrote" in out.stdout and len(list((tmp_path / "out").glob("*.nii.gz"))) == 1


def test_entry_point_runs_typer_for_other_commands(capsys):
    from imaging_pipelines.entry import main

    assert main(["convert", "--help"]) == 0
    assert "Convert scans to NIfTI" in capsys.readouterr().out


def test_jpeg2000_series_reads_like_uncompressed(tmp_path):
    data = np.arange(3 * 64 * 64, dtype=np.int16).reshape(3, 64, 64) % 1000
    write_series(tmp_path / "plain", data=data)
    try:
        write_series(tmp_path / "j2k", data=data, transfer_syntax=JPEG2000Lossless)
    except Exception as exc:  # no JPEG 2000 encoder installed
        pytest.skip(f"cannot write JPEG 2000: {exc}")
    plain = dicom.read_dicom_folder(tmp_path / "plain").series[0].volume.array
    j2k = dicom.read_dicom_folder(tmp_path / "j2k").series[0].volume.array
    np.testing.assert_array_equal(plain, j2k)


@pytest.mark.parametrize("folder", ["medical/ct_totalseg/example_ct_dicom",
                                    "medical/dcm_qa_more/dcm_qa_frag/In/6001_anat-T1w_acq-tfl"])
def test_jpeg2000_decoded_without_pydicom_equals_pydicom(shared_data, folder):
    from pydicom.pixels import pixel_array

    from imaging_pipelines.medical.io.dicom_files import read_file
    from imaging_pipelines.medical.io.dicom_j2k import decode_single_frame

    paths = sorted(p for p in (shared_data / folder).iterdir() if p.is_file())[:4]
    if not paths:
        pytest.skip(f"{folder} not in the shared data")
    for path in paths:
        raw = read_file(str(path))
        assert isinstance(raw, dicom_raw.RawDataset) and raw.file_meta["TransferSyntaxUID"] in dicom_raw.JPEG2000_SYNTAXES
        ours = decode_single_frame(raw)
        expected = pixel_array(pydicom.dcmread(path))
        assert ours is not None and ours.dtype == expected.dtype
        np.testing.assert_array_equal(ours[0], expected)
        raw._elements[0x00280103].value = 1 - raw.PixelRepresentation  # signedness differs from the codestream
        assert decode_single_frame(raw) is None  # pydicom's sign correction: decoded by pydicom instead


def test_decoding_in_processes_equals_threads(tmp_path, monkeypatch):
    """Forked decoder processes (single-threaded callers) and the thread fallback give the same frames and the same
    per-file error for a corrupt codestream."""
    from imaging_pipelines.medical.io import dicom_parallel
    from imaging_pipelines.medical.io.dicom_files import read_file
    from imaging_pipelines.medical.io.dicom_pixels import decode_all
    from imaging_pipelines.medical.io.dicom_slices import PixelSource

    data = np.arange(5 * 64 * 64, dtype=np.int16).reshape(5, 64, 64) % 900
    try:
        paths = write_series(tmp_path / "j2k", data=data, transfer_syntax=JPEG2000Lossless)
    except Exception as exc:
        pytest.skip(f"cannot write JPEG 2000: {exc}")

    def sources():
        out = [PixelSource(path=str(p), dataset=read_file(str(p))) for p in paths]
        ds = pydicom.dcmread(paths[3])  # a truncated codestream in file 3, for pydicom and the raw scan alike
        ds.PixelData = ds.PixelData[:40] + b"\0" * 8
        ds.save_as(paths[3], enforce_file_format=True)
        out[3] = PixelSource(path=str(paths[3]), dataset=read_file(str(paths[3])))
        return out

    monkeypatch.setattr(dicom_parallel, "can_fork", lambda: True)  # earlier tests may leave idle threads behind
    forked = sources()
    errors_forked = decode_all(forked, workers=2)
    monkeypatch.setattr(dicom_parallel, "can_fork", lambda: False)
    threaded = sources()
    errors_threaded = decode_all(threaded, workers=2)
    assert list(errors_forked) == list(errors_threaded) == [3]
    import re

    def message(exc):  # pydicom's message names a BytesIO object by its address
        return re.sub(r"0x[0-9a-f]+", "0x", str(exc))

    assert message(errors_forked[3]) == message(errors_threaded[3]) and "cannot decode pixel data" in message(
        errors_forked[3])
    for n in (0, 1, 2, 4):
        np.testing.assert_array_equal(forked[n].frames()[0], data[n])
        np.testing.assert_array_equal(threaded[n].frames()[0], data[n])
