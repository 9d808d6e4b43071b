"""Hostile input for the DICOM, NIfTI and GeoTIFF readers: every input loads or raises ImagingInputError.

Property tests (hypothesis, derandomized) mutate generated seed files in this process; a short campaign of
the subprocess harness (imaging_pipelines.tools.fuzz) also watches for crashes and hangs. The full run of
>= 10,000 inputs is ``bench/fuzz_readers.py``.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.tools.fuzz import mutations as mut
from imaging_pipelines.tools.fuzz.harness import run_campaign
from imaging_pipelines.tools.fuzz.seeds import EXTRA_KINDS, KINDS, build_corpus, default_shared_root, load_corpus
from imaging_pipelines.tools.fuzz.targets import CLEAN_ERROR, CRASH, HANG, LOADED, OTHER_EXCEPTION, call_reader, judge
from imaging_pipelines.core.limits import MAX_IMAGE_BYTES_ENV

READ_LIMIT_S = 5.0  # one read of a small mutated file; far above the usual few milliseconds
PROPERTY = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    """Generated seeds only, so the property tests do not depend on the shared data folder."""
    folder = tmp_path_factory.mktemp("fuzz-corpus")
    build_corpus(folder)
    return folder


@pytest.fixture(scope="module")
def seeds(corpus_dir):
    return load_corpus(corpus_dir)


@contextlib.contextmanager
def small_image_limit(nbytes: int = 64 * 2**20):
    """Readers refuse more than ``nbytes`` of pixels (keeps hostile claims cheap inside the test process)."""
    old = os.environ.get(MAX_IMAGE_BYTES_ENV)
    os.environ[MAX_IMAGE_BYTES_ENV] = str(nbytes)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(MAX_IMAGE_BYTES_ENV, None)
        else:
            os.environ[MAX_IMAGE_BYTES_ENV] = old


def read_and_judge(kind: str, folder: Path, files: list[tuple[str, bytes]]) -> str:
    """Write ``files`` into a fresh ``folder``, read them with the reader of ``kind``; assert a clean outcome."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for name, data in files:
        (folder / name).write_bytes(data)
    path = folder if kind == "dicom" else folder / files[0][0]
    t0 = time.perf_counter()
    with small_image_limit():
        try:
            call_reader(kind, path)
            exc = None
        except Exception as caught:  # noqa: BLE001 - judged below
            exc = caught
    outcome, detail = judge(exc)
    assert outcome in (LOADED, CLEAN_ERROR), detail
    assert time.perf_counter() - t0 < READ_LIMIT_S
    if exc is not None:
        assert exc.path and (exc.path == str(path) or str(folder) in exc.path)
    return outcome


def _seed(seeds, kind: str, index: int):
    return seeds[kind][index % len(seeds[kind])]


# ------------------------------------------------------------------------------------------------ properties
nifti_edit = st.tuples(st.sampled_from(sorted(set(mut.NIFTI1_FIELDS) & set(mut.NIFTI2_FIELDS) - {"magic"})),
                       st.integers(0, 11),
                       st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from(mut.NIFTI_DIM_VALUES),
                                 st.floats(allow_nan=True, allow_infinity=True)))


@PROPERTY
@given(seed_index=st.integers(0, 50), edits=st.lists(nifti_edit, min_size=1, max_size=3), gz=st.booleans())
def test_nifti_header_edits_load_or_raise_imaging_input_error(seeds, tmp_path_factory, seed_index, edits, gz):
    seed = _seed(seeds, "nifti", seed_index)
    name, data = seed.files[0]
    raw = mut.gunzip_or_none(data) if name.endswith(".gz") else data
    layout = mut.nifti_layout(raw)
    for field, index, value in edits:
        if layout[0][field][1] in "hiqB" and isinstance(value, float):  # a float drawn for an integer field
            value = int(value) if math.isfinite(value) and abs(value) < 2**63 else 0
        raw = mut.nifti_set_field(raw, field, value, index, layout)
    stem = name.split(".")[0]
    files = [(f"{stem}.nii.gz", mut.gzip_bytes(raw))] if gz else [(f"{stem}.nii", raw)]
    read_and_judge("nifti", tmp_path_factory.mktemp("nifti"), files)


dicom_edit = st.sampled_from(sorted(mut.DICOM_FIELD_VALUES)).flatmap(
    lambda kw: st.tuples(st.just(kw), st.one_of(
        st.sampled_from(mut.DICOM_FIELD_VALUES[kw][1]),
        st.integers(0, 65535) if mut.DICOM_FIELD_VALUES[kw][0] == "US"
        else st.text(st.sampled_from("0123456789.-+eE\\naif x"), max_size=24))))


@PROPERTY
@given(seed_index=st.integers(0, 50), edits=st.lists(dicom_edit, min_size=1, max_size=4), every_file=st.booleans())
def test_dicom_header_edits_load_or_raise_imaging_input_error(seeds, tmp_path_factory, seed_index, edits,
                                                              every_file):
    seed = _seed(seeds, "dicom", seed_index)
    files = list(seed.files)
    targets = range(len(files)) if every_file else [0]
    for i in targets:
        files[i] = (files[i][0], mut.dicom_set_elements(files[i][1], dict(edits)))
    read_and_judge("dicom", tmp_path_factory.mktemp("dicom"), files)


tiff_edit = st.tuples(st.sampled_from(mut.TIFF_SIZE_TAGS + mut.TIFF_GEO_TAGS), st.integers(0, 3),
                      st.one_of(st.sampled_from(mut.INTERESTING_INTS), st.integers(0, 2**32 - 1)))


@PROPERTY
@given(seed_index=st.integers(0, 50), edits=st.lists(tiff_edit, min_size=1, max_size=3))
def test_geotiff_tag_edits_load_or_raise_imaging_input_error(seeds, tmp_path_factory, seed_index, edits):
    seed = _seed(seeds, "geotiff", seed_index)
    name, data = seed.files[0]
    for tag, index, value in edits:
        data = mut.tiff_set_tag(data, tag, value % 2**32, index)
    read_and_judge("geotiff", tmp_path_factory.mktemp("geotiff"), [(name, data)])


@PROPERTY
@given(kind=st.sampled_from(KINDS), seed_index=st.integers(0, 50), rng_seed=st.integers(0, 2**32 - 1),
       steps=st.integers(1, 3))
def test_byte_level_damage_loads_or_raises_imaging_input_error(seeds, tmp_path_factory, kind, seed_index, rng_seed,
                                                               steps):
    seed = _seed(seeds, kind, seed_index)
    rng = random.Random(rng_seed)
    files = list(seed.files)
    i = rng.randrange(len(files))
    name, data = files[i]
    if kind == "nifti" and name.endswith(".gz"):
        data, name = mut.gunzip_or_none(data), name[:-3]
    for _ in range(steps):
        data, _ = rng.choice(mut.BYTE_MUTATORS)(data, rng)
    files[i] = (name, data)
    read_and_judge(kind, tmp_path_factory.mktemp(kind), files)


# ------------------------------------------------------------------------------------------------ harness
def test_subprocess_campaign_finds_no_crash_hang_or_foreign_exception(tmp_path):
    corpus = tmp_path / "corpus"
    kinds = KINDS + EXTRA_KINDS
    build_corpus(corpus, default_shared_root(), kinds)  # real seeds too where ../shared/data exists
    report = run_campaign(corpus, 400, kinds=kinds, seed=7, workers=2, timeout_s=20.0,
                          findings_dir=tmp_path / "findings")
    assert report.inputs == 400
    assert not report.findings, "\n\n".join(f"{f.kind} #{f.index} {f.outcome}: {f.mutation}\n{f.detail}"
                                           for f in report.findings)
    for stats in report.stats.values():
        assert stats.inputs == 100 and stats.loaded > 0 and stats.clean_errors > 0
        assert stats.peak_rss_kib < 1.5 * 2**20  # KiB: well under the workers' 2 GiB address-space limit


def test_harness_reports_crashes_hangs_and_foreign_exceptions(tmp_path):
    corpus = tmp_path / "corpus"
    for name, content in {"a_ok": b"fine", "b_refuse": b"refuse", "c_raise": b"raise", "d_crash": b"crash",
                          "e_hang": b"hang"}.items():
        (corpus / "selftest" / name).mkdir(parents=True)
        (corpus / "selftest" / name / "input.bin").write_bytes(content)
    report = run_campaign(corpus, 5, kinds=("selftest",), workers=1, timeout_s=2.0,
                          findings_dir=tmp_path / "findings")
    stats = report.stats["selftest"]
    assert (stats.loaded, stats.clean_errors, stats.other_exceptions, stats.crashes, stats.hangs) == (1, 1, 1, 1, 1)
    outcomes = {f.seed_name: f.outcome for f in report.findings}
    assert outcomes == {"c_raise": OTHER_EXCEPTION, "d_crash": CRASH, "e_hang": HANG}
    crash = next(f for f in report.findings if f.outcome == CRASH)
    assert "SIGABRT" in crash.detail and (Path(crash.saved_to) / "input" / "input.bin").read_bytes() == b"crash"


def test_mutations_are_deterministic(seeds):
    from imaging_pipelines.tools.fuzz.targets import make_case

    for kind in KINDS:
        assert make_case(seeds, kind, 11, 3) == make_case(seeds, kind, 11, 3)
        assert make_case(seeds, kind, 11, 3) != make_case(seeds, kind, 12, 3)


# ------------------------------------------------------------------------------------------------ regressions
# Inputs the fuzzer found before the readers were fixed; each must now give a clean outcome.
@pytest.mark.parametrize(("edits", "expected"), [
    ({"PixelSpacing": "inf\\1"}, CLEAN_ERROR), ({"PixelSpacing": "0\\0"}, CLEAN_ERROR),
    ({"ImagePositionPatient": "0\\0"}, CLEAN_ERROR), ({"RescaleSlope": "nan"}, CLEAN_ERROR),
    ({"ImageOrientationPatient": "nan\\0\\0\\0\\1\\0"}, CLEAN_ERROR),
    ({"ImageType": "ORIGINAL\\PRIMARY\\MOSAIC", (0x19, 0x100A): 65535}, CLEAN_ERROR),
    ({"SpacingBetweenSlices": "nan", "SliceThickness": "nan"}, LOADED),  # spacing comes from the positions
])
def test_dicom_regressions_non_finite_geometry_and_scaling(seeds, tmp_path, edits, expected):
    seed = next(s for s in seeds["dicom"] if s.name == "gen_mr")
    files = [(n, mut.dicom_set_elements(d, edits)) for n, d in seed.files]
    assert read_and_judge("dicom", tmp_path, files) == expected


def test_dicom_regression_rle_decoder_panic_is_a_clean_error(seeds, tmp_path):
    seed = next(s for s in seeds["dicom"] if s.name == "gen_rle")
    files = [(n, mut.dicom_set_elements(d, {"BitsAllocated": 1, "HighBit": 15})) for n, d in seed.files]
    read_and_judge("dicom", tmp_path, files)


def test_dicom_regression_corrupt_vr_is_reported_for_its_file(seeds, tmp_path):
    seed = next(s for s in seeds["dicom"] if s.name == "gen_mr")
    name, data = seed.files[0]
    at = data.find(b"\x20\x00\x0d\x00UI")  # StudyInstanceUID
    broken = data[:at + 4] + b"U." + data[at + 6:]
    files = [(name, broken), *seed.files[1:]]
    assert read_and_judge("dicom", tmp_path, files) == LOADED


def test_nifti_regression_unknown_time_unit_loads_without_time_step(seeds, tmp_path):
    seed = next(s for s in seeds["nifti"] if s.name == "gen_4d_scaled")
    raw = mut.nifti_set_field(seed.files[0][1], "xyzt_units", 160)
    (tmp_path / "x.nii").write_bytes(raw)
    from imaging_pipelines.medical.io.image_files import read_image_file

    assert read_image_file(tmp_path / "x.nii").time_step is None


def test_geotiff_regression_absurd_tag_counts_are_clean(seeds, tmp_path):
    """libtiff refuses tag counts of 2**31 ("Out of memory reading of ...") without allocating: a clean error."""
    seed = next(s for s in seeds["geotiff"] if s.name == "gen_int16_deflate_tiled")
    name, data = seed.files[0]
    entries, endian = mut.tiff_entries(data)
    outcomes = set()
    for entry in entries[:12]:
        at = entry.entry_at + 4
        broken = data[:at] + (2**31 - 1).to_bytes(4, "little" if endian == "<" else "big") + data[at + 4:]
        outcomes.add(read_and_judge("geotiff", tmp_path, [(name, broken)]))
    assert CLEAN_ERROR in outcomes


@pytest.mark.parametrize(("name", "field", "target"), [
    ("a.mhd", "ElementDataFile = a.raw", "ElementDataFile = /dev/zero"),
    ("a.mhd", "ElementDataFile = a.raw", "ElementDataFile = ../a.raw"),
    ("b.nhdr", "data file: b.raw", "data file: /etc/hostname"),
    ("b.nhdr", "data file: b.raw", "data file: LIST\nb.raw\n../../b.raw"),
])
def test_detached_headers_cannot_name_data_files_outside_their_folder(tmp_path, name, field, target):
    import numpy as np
    import SimpleITK as sitk

    from imaging_pipelines.medical.io.image_files import read_image_file

    path = tmp_path / "inbox" / name
    path.parent.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4), np.int16)), str(path))
    assert read_image_file(path).spatial_shape == (2, 3, 4)
    path.write_text(path.read_text().replace(field, target))
    with pytest.raises(ImagingInputError, match="outside its own folder"):
        read_image_file(path)


METAIMAGE_HEADER = ("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
                    "CompressedData = {compressed}\n{extra}DimSize = 10 6 4\nElementType = MET_SHORT\n"
                    "ElementDataFile = {data_file}\n")
READ_EACH = """
import sys
from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.medical.io.image_files import read_image_file
for path in sys.argv[1:]:
    try:
        read_image_file(path)
        print(path, "loaded", flush=True)
    except ImagingInputError as exc:
        print(path, "ImagingInputError", exc.problem, flush=True)
"""


def test_metaimage_headers_that_crashed_or_hung_simpleitk_are_refused(tmp_path):
    """Each of these segfaulted, aborted or hung SimpleITK before the header checks (read in a child process)."""
    import subprocess
    import sys
    import zlib

    needs_dictionary = b"x\xbb" + zlib.compress(bytes(480))[2:]  # zlib header with the preset-dictionary flag
    cases = {
        "ndims_negative.mha": (METAIMAGE_HEADER.replace("NDims = 3", "NDims = -1"), b"", "NDims"),
        "ndims_huge.mha": (METAIMAGE_HEADER.replace("NDims = 3", "NDims = 100000"), b"", "NDims"),
        "format_string.mha": (METAIMAGE_HEADER.format(compressed="False", extra="", data_file="x%s%s%s%s.raw"),
                              b"", "single %d"),
        "control_chars.mha": (METAIMAGE_HEADER.format(compressed="True", extra="", data_file="LOCA\x01\x7f"),
                              b"", "not plain text"),
        "nul_in_key.mha": ("ObjectType = Image\nNDims\0=-5\nOffset=T\nElementDataFile = LOCAL\n", b"",
                           "not plain text"),  # MetaIO reads C strings: this is NDims = -5 (segfault)
        "size_huge.mha": (METAIMAGE_HEADER.format(compressed="True", extra="CompressedDataSize = 4294967297\n",
                                                  data_file="LOCAL"), zlib.compress(bytes(480)), "CompressedDataSize"),
        "needs_dictionary.mha": (METAIMAGE_HEADER.format(compressed="True", extra="", data_file="LOCAL"),
                                 needs_dictionary, "corrupt"),
    }
    paths = []
    for name, (header, payload, _) in cases.items():
        header = header.format(compressed="False", extra="", data_file="LOCAL") if "{" in header else header
        (tmp_path / name).write_bytes(header.encode("latin-1") + payload)
        paths.append(str(tmp_path / name))
    run = subprocess.run([sys.executable, "-c", READ_EACH, *paths], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"reader process died ({run.returncode}):\n{run.stdout}\n{run.stderr[-2000:]}"
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines())
    for name, (_, _, message) in cases.items():
        outcome = lines[str(tmp_path / name)]
        assert outcome.startswith("ImagingInputError") and message in outcome, (name, outcome)
