"""Planted PHI through the whole chain: a DICOM cohort with a value in every attribute of the PS3.15 Basic
Profile table (descriptors, private tags and nested sequences included; a name and a date in
SeriesDescription, ProtocolName and StudyDescription) goes through ingestion -> classical segmentation ->
DICOM SEG and TID 1500 SR -> evaluation -> patient and cohort reports, real Dagster runs on an instance on disk.

Searched for every planted value (case-insensitive, as a whole token): every file the runs wrote (text as
is; gzip, zlib streams in PDFs, PNG text chunks, base64 images inside HTML/JSON decoded; SQLite databases
dumped to SQL), every path, the Dagster event log (metadata included) and every log line printed. The SEG
and SR also pass :func:`~imaging_pipelines.medical.deid.profile_violations` (every attribute allowed by the
profile table, identity = the partition's pseudonym)."""

from __future__ import annotations

import base64
import gzip
import io
import json
import re
import sqlite3
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dagster import DagsterInstance
from dagster._serdes import serialize_value
from pydicom.uid import generate_uid

from imaging_pipelines.dagster_layer.factory import build_definitions
from imaging_pipelines.dagster_layer.local_runs import run_sensor_once
from imaging_pipelines.medical.deid import profile_violations
from tests.conftest import write_catalog
from tests.dicom_factory import write_series
from tests.phi_planting import Planter

DS = "phi_ds"
SEGMENTATION = {"method": "otsu", "input": "ingested", "modalities": ["MR"], "classes": {"lesion": 1},
                "dicom_seg": True, "dicom_sr": True, "dicom_seg_type": "BINARY", "meshes": True}
DATA_URI = re.compile(rb"data:[a-z]+/[a-z+.-]+;base64,([A-Za-z0-9+/=]+)")
PDF_STREAM = re.compile(rb"stream\r?\n(.*?)\r?\nendstream", re.S)


def plant_patient(folder: Path, planter: Planter, seed: int) -> list[Path]:
    """One MR series (14 x 40 x 40 voxels of 2 x 2 x 3 mm: an ellipsoid head of two tissues, a bright lesion) with
    ``planter``'s values in every Basic Profile attribute of every file (the same values in each file)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(np.arange(14) * 3.0, np.arange(40) * 2.0, np.arange(40) * 2.0, indexing="ij")
    head = ((z - 19.5) / 20) ** 2 + ((y - 39) / 36) ** 2 + ((x - 39) / 34) ** 2 <= 1
    lesion = (z - 19.5) ** 2 + (y - 36) ** 2 + (x - 48) ** 2 <= 5.0 ** 2
    data = (rng.normal(20, 5, z.shape) + head * np.where(x < 39, 450, 700) + 500 * lesion).astype(np.int16)
    files = write_series(folder, data=data, spacing=(2.0, 2.0, 3.0), file_names=[f"IM{k:04d}" for k in range(14)],
                         extra={"FrameOfReferenceUID": generate_uid()})
    count = planter.count
    for f in files:
        ds = pydicom.dcmread(f)
        planter.count = count  # same values in every file
        planter.plant(ds)
        ds.save_as(f, enforce_file_format=True)
    return files


def needles_of(planter: Planter) -> set[bytes]:
    """Every planted value (upper case), each date also written as YYYY-MM-DD, YYYY_MM_DD, YYYY.MM.DD,
    YYYY/MM/DD, DD.MM.YYYY and DD/MM/YYYY."""
    out = set()
    for value in planter.needles:
        out.add(value.upper().encode())
        digits = value.replace("-", "")
        if re.fullmatch(r"(19|20)\d{6}", digits):
            y, m, d = digits[:4], digits[4:6], digits[6:]
            out.update(f.encode() for f in (y + m + d, f"{y}-{m}-{d}", f"{y}_{m}_{d}", f"{y}.{m}.{d}", f"{y}/{m}/{d}",
                                            f"{d}.{m}.{y}", f"{d}/{m}/{y}"))
    return out


def png_texts(data: bytes) -> list[bytes]:
    """The text chunks (tEXt, zTXt, iTXt; compressed ones inflated) of a PNG."""
    texts, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"tEXt":
            texts.append(body)
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            texts.append(key + b"\0" + zlib.decompress(rest[1:]))
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            compressed, rest = rest[0], rest[2:]
            texts.append(key + b"\0" + (zlib.decompress(rest.split(b"\0", 2)[-1]) if compressed else rest))
        pos += 12 + length
    return texts


def readable(path: Path) -> list[bytes]:
    """The bytes of ``path`` in every form a planted value could be read from."""
    data = path.read_bytes()
    out = [data]
    if data[:2] == b"\x1f\x8b":
        out.append(gzip.decompress(data))
    if data.startswith(b"SQLite format 3"):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            out.append("\n".join(db.iterdump()).encode())
    if data[128:132] == b"DICM":  # every element's value on a line of its own (pixel data stays in the raw bytes)
        ds = pydicom.dcmread(io.BytesIO(data))
        out.append("\n".join(f"{e.tag} {e.value}" for e in ds.iterall()
                             if e.VR != "SQ" and e.tag != 0x7FE00010).encode("utf-8", "replace"))
    if data.startswith(b"%PDF"):
        for stream in PDF_STREAM.findall(data):
            try:
                out.append(zlib.decompress(stream))
            except zlib.error:
                pass
    out += embedded(out)
    return out


def embedded(texts: list[bytes]) -> list[bytes]:
    """Images embedded in text as base64 data URIs, decoded, with their PNG text chunks."""
    found = []
    for text in texts:
        for b64 in DATA_URI.findall(text.replace(b"\\/", b"/")):  # JSON may escape "/"
            raw = base64.b64decode(b64[:len(b64) // 4 * 4])  # a cut-off image still decodes up to the cut
            found.append(raw)
            if raw.startswith(b"\x89PNG"):
                found += png_texts(raw)
    return found


def leaks(needles: set[bytes], where: str, texts: list[bytes]) -> list[tuple[str, str]]:
    """(where, needle) for every needle in one of ``texts`` (case-insensitive) that does not follow a digit:
    an 8-digit planted date could turn up by chance in the middle of a long random UID or number (at the
    start of one only once in 10^8), a planted ``PHIQ0042Z`` nowhere. What follows a needle is not looked
    at (a DateTime's date is followed by its time; binary neighbours are arbitrary bytes)."""
    upper = [DATA_URI.sub(b"", t).upper() for t in texts]
    pattern = re.compile(rb"(?<![0-9])(" + b"|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True))
                         + rb")")
    return sorted({(where, m.decode()) for t in upper for m in pattern.findall(t)})


def run_chain(root: Path, n_patients: int) -> dict:
    """Plant ``n_patients`` patients, run sensor -> every per-patient asset -> cohort job on an instance on
    disk under ``root/dagster_home`` (console at DEBUG: every log line is printed); returns what the test needs."""
    planters, needles = [], set()
    for p in range(n_patients):
        planter = Planter(count=3000 * p)
        plant_patient(root / "inbox" / f"case_{p}", planter, seed=p)
        planters.append(planter)
        needles |= needles_of(planter)
    home = root / "dagster_home"
    home.mkdir()
    defs = build_definitions()
    with DagsterInstance.local_temp(str(home)) as instance:
        sensor = run_sensor_once(defs, DS, instance)
        keys = [r.partition_key for r in sensor.run_requests]
        job = defs.resolve_job_def(f"{DS}__patient_job")
        runs = {k: job.execute_in_process(partition_key=k, instance=instance, raise_on_error=False) for k in keys}
        cohort = defs.resolve_job_def(f"{DS}__cohort_job").execute_in_process(instance=instance, raise_on_error=False)
        events = [serialize_value(r) for run in [*runs.values(), cohort] for r in instance.all_logs(run.run_id)]
        events += [serialize_value(instance.get_run_by_id(run.run_id)) for run in [*runs.values(), cohort]]
        events += [serialize_value(list(sensor.run_requests)), sensor.cursor or "",
                   " ".join(instance.get_dynamic_partitions(f"{DS}__patients"))]
    return {"keys": keys, "runs": runs, "cohort": cohort, "events": events, "needles": needles,
            "planters": planters}


def check_chain(root: Path, n_patients: int, capfd) -> None:
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(root))
        mp.setenv("IMAGING_PIPELINES_STORAGE_ROOT", str(root / "storage"))
        mp.setenv("IMAGING_PIPELINES_CATALOG", str(write_catalog(root, DS, segmentation=json.dumps(SEGMENTATION),
                                                                 file_modality="MR")))
        chain = run_chain(root, n_patients)
    finally:
        mp.undo()
    out, err = capfd.readouterr()
    keys, needles = chain["keys"], chain["needles"]
    planter = chain["planters"][0]
    assert len(keys) == n_patients and len(planter.planted_tags) >= 600 and len(needles) >= 500 * n_patients
    failed = {k: r for k, r in chain["runs"].items() if not r.success}
    assert not failed and chain["cohort"].success, [e.event_specific_data.error.message for r in failed.values()
                                                    for e in r.all_events if e.event_type_value == "STEP_FAILURE"]
    storage = root / "storage"
    dicom = sorted(storage.rglob("*.dcm"))
    assert len(list(storage.rglob("*.glb"))) == len(list(storage.rglob("*.stl"))) == n_patients  # meshes searched too
    for mask in storage.rglob("*.nii.gz"):  # the lesion is found: the SEG and SR hold a segment and its measurements
        assert np.count_nonzero(np.asarray(nib.load(mask).dataobj)) > 20, mask.name
    assert sorted(p.name.split(".", 1)[1] for p in dicom) == ["seg.dcm"] * n_patients + ["sr.dcm"] * n_patients
    reports = sorted(p.name for p in (storage / DS / "reports").glob("*.html"))
    assert len(reports) == n_patients + 1  # one per patient and the cohort's
    assert "ASSET_MATERIALIZATION" in "".join(chain["events"]) and "DEBUG" in out + err  # metadata and logs searched

    inbox_file = next((root / "inbox" / "case_0").iterdir())  # positive control: the source holds them all
    planted = {n.upper().encode() for n in planter.needles}
    missing = planted - {n.encode() for _, n in leaks(planted, "inbox", readable(inbox_file))}
    assert not missing, sorted(missing)[:20]
    found = []
    written = [p for folder in (storage, root / "dagster_home") for p in sorted(folder.rglob("*")) if p.is_file()]
    assert len(written) > 20
    for path in written:
        found += leaks(needles, str(path.relative_to(root)), readable(path))
    paths = [str(p.relative_to(root)).encode() for folder in (storage, root / "dagster_home")
             for p in folder.rglob("*")]
    found += leaks(needles, "paths", [b"\n".join(paths)])
    events = [e.encode() for e in chain["events"]]
    found += leaks(needles, "event log", events + embedded(events))
    found += leaks(needles, "printed logs", [out.encode(), err.encode()])
    assert not found, f"{len(found)} planted value(s) found: {found[:30]}"

    for path in dicom:  # every attribute allowed by the profile table; identity is the partition's pseudonym
        ds = pydicom.dcmread(path)
        key = path.parent.name
        assert key in keys and profile_violations(ds, pseudonym=key) == [], path.name
        assert ds.PatientName == ds.PatientID == key and ds.PatientIdentityRemoved == "YES"
        assert not [e for e in ds.iterall() if e.tag.is_private]


def test_planted_phi_never_leaves_the_chain(tmp_path, capfd):
    """One patient: the non-slow variant."""
    check_chain(tmp_path, 1, capfd)


@pytest.mark.slow
def test_planted_phi_never_leaves_the_chain_of_a_cohort(tmp_path, capfd):
    """Three patients with different planted values (cohort tables and plots hold every patient)."""
    check_chain(tmp_path, 3, capfd)


def test_the_search_finds_a_value_in_every_form(tmp_path):
    """The search itself: a planted value is found in plain text, gzip, SQLite, a PDF stream, a PNG text chunk
    of a base64 image in JSON (with escaped slashes), and not inside a longer number."""
    from PIL import Image, PngImagePlugin

    needles = {b"PHIQ0042Z", b"19310212"}
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "phiq0042z", zip=True)
    png = io.BytesIO()
    Image.new("L", (4, 4)).save(png, "PNG", pnginfo=info)
    uri = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    (tmp_path / "a.json").write_text(json.dumps({"preview": uri}).replace("/", "\\/"))  # as some JSON writers escape
    (tmp_path / "b.nii.gz").write_bytes(gzip.compress(b"header 19310212 end"))
    with sqlite3.connect(tmp_path / "c.db") as db:
        db.execute("CREATE TABLE t (x TEXT)")
        db.execute("INSERT INTO t VALUES (?)", ("x" * 5000 + " PHIQ0042Z",))  # spills into an overflow page
    (tmp_path / "d.pdf").write_bytes(b"%PDF-1.4\nstream\n" + zlib.compress(b"(PHIQ0042Z) Tj") + b"\nendstream\n")
    (tmp_path / "e.txt").write_text("1.2.840.11931021299 PHIQ00421Z")  # inside a longer number: no hit
    found = {where: [n for _, n in leaks(needles, where, readable(tmp_path / where))]
             for where in ("a.json", "b.nii.gz", "c.db", "d.pdf", "e.txt")}
    assert found == {"a.json": ["PHIQ0042Z"], "b.nii.gz": ["19310212"], "c.db": ["PHIQ0042Z"],
                     "d.pdf": ["PHIQ0042Z"], "e.txt": []}
