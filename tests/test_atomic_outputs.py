"""Atomic outputs: one writer for every file, killed writers' leftovers removed, readers that recover a store
left aside, and SIGKILL during the mask, DICOM SEG, DICOM SR, evaluation and report writes and between a
store's two publishing renames (real Dagster runs of one synthetic DICOM patient, classical segmentation).
After each kill every file published before reads back bit for bit, the next reader succeeds and the next
run completes and removes the killed writer's leftovers."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance

from imaging_pipelines.core.storage import (
    PARTIAL_PREFIX,
    atomic_file,
    partition_store_path,
    write_text_atomic,
)
from imaging_pipelines.dagster_layer.factory import build_definitions
from imaging_pipelines.dagster_layer.local_runs import materialise_partitions, run_sensor_once
from imaging_pipelines.medical.io.image_files import write_nifti
from imaging_pipelines.core.volume import Volume
from imaging_pipelines.tools.demo.cohort import generate_demo_cohort
from tests.conftest import REPO, write_catalog
from tests.test_crash_safety import kill_when

DS = "kill_ds"
SEGMENTATION = {"method": "otsu", "input": "ingested", "modalities": ["MR"], "image_pattern": "t1w",
                "classes": {"lesion": 5}, "labels": {"source": "inbox"}, "dicom_seg": True, "dicom_sr": True}

# Runs assets of one partition in its own process with a trap: KILL_AT=fsync:<part>[|<part>...] stops (sleeps) once
# the atomic writer has fully written the temporary file of a target whose path holds every <part>, at its fsync;
# KILL_AT=rename:<name> stops between a store's two publishing renames (the old store moved aside). The
# test then SIGKILLs the process there.
RUN_TRAPPED = r"""
import os, sys, time
from pathlib import Path
marker, where = Path(os.environ["KILL_MARKER"]), os.environ["KILL_AT"]
kind, pattern = where.split(":", 1)
real_fsync, real_rename = os.fsync, os.rename

def stop():
    marker.write_text("stopped")
    while True:
        time.sleep(1)

def fsync(fd):
    real_fsync(fd)
    name = os.readlink(f"/proc/self/fd/{fd}")
    if kind == "fsync" and ".partial-" in name and all(part in name for part in pattern.split("|")):
        stop()

def rename(src, dst, *a, **k):
    real_rename(src, dst, *a, **k)
    if kind == "rename" and ".replaced-" in str(dst) and pattern in str(dst):
        stop()

os.fsync, os.rename = fsync, rename
from dagster import AssetKey, DagsterInstance
from imaging_pipelines.dagster_layer.factory import build_definitions
home, partition, *assets = sys.argv[1:]
job = build_definitions().resolve_job_def("kill_ds__patient_job")
with DagsterInstance.from_config(home) as instance:
    result = job.execute_in_process(partition_key=partition, instance=instance, raise_on_error=False,
                                    asset_selection=[AssetKey(["kill_ds", a]) for a in assets])
sys.exit(0 if result.success else 1)
"""


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def killed_run(home: Path, partition: str, assets: list[str], kill_at: str, tmp_path: Path) -> None:
    """Run ``assets`` of ``partition`` in a subprocess and SIGKILL it at the trap ``kill_at``."""
    marker = tmp_path / f"stopped-{time.monotonic_ns()}"
    env = {**os.environ, "KILL_AT": kill_at, "KILL_MARKER": str(marker),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", RUN_TRAPPED, str(home), partition, *assets], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_when(proc, marker.exists)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """One synthetic MR patient through ingestion, classical segmentation, evaluation and its report, with a
    persistent instance (the killed subprocesses use it too)."""
    root = tmp_path_factory.mktemp("kill")
    mp = pytest.MonkeyPatch()
    mp.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(root))
    mp.setenv("IMAGING_PIPELINES_STORAGE_ROOT", str(root / "storage"))
    mp.setenv("IMAGING_PIPELINES_CATALOG", str(write_catalog(root, DS, segmentation=json.dumps(SEGMENTATION),
                                                             file_modality="MR")))
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    mp.setenv("DAGSTER_HOME", str(home))
    generate_demo_cohort(root / "inbox", n_patients=1, seed=3)
    defs = build_definitions()
    with DagsterInstance.get() as instance:
        (key,) = [r.partition_key for r in run_sensor_once(defs, DS, instance).run_requests]
        (first,) = materialise_partitions(defs, DS, [key], instance, progress=False).values()
    assert first.success
    yield {"root": root, "home": home, "key": key, "defs": defs}
    mp.undo()


def rerun(chain, assets: list[str]):
    with DagsterInstance.get() as instance:
        (result,) = materialise_partitions(chain["defs"], DS, [chain["key"]], instance, progress=False,
                                           asset_selection=[AssetKey([DS, a]) for a in assets]).values()
    return result


def leftovers(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.name.startswith(PARTIAL_PREFIX) or ".replaced-" in p.name
                  or ".staging-" in p.name)


def published(chain) -> dict[str, bytes]:
    """Every file of the dataset's storage but the atomic writer's leftovers, relative path -> bytes."""
    return {k: v for k, v in files(chain["root"] / "storage" / DS).items() if PARTIAL_PREFIX not in k}


@pytest.mark.parametrize("asset, relative, suffix", [
    ("segmentation_evaluation", "segmentation_evaluation/{key}.json", ".json"),
    ("patient_report", "reports/{key}.html", ".html"),
])
def test_sigkill_during_an_output_write_keeps_the_published_file(chain, tmp_path, asset, relative, suffix):
    output = chain["root"] / "storage" / DS / relative.format(key=chain["key"])
    before, everything = output.read_bytes(), published(chain)
    killed_run(chain["home"], chain["key"], [asset], f"fsync:{output.name}", tmp_path)
    assert output.read_bytes() == before and published(chain) == everything  # every published file, bit for bit
    (partial,) = [p for p in output.parent.iterdir() if p.name.startswith(PARTIAL_PREFIX)]
    assert partial.name.endswith(output.name) and partial.stat().st_size > 0  # the killed writer's whole temp file
    if asset == "segmentation_evaluation":
        assert rerun(chain, ["patient_report"]).success  # the next reader of the evaluation
    assert rerun(chain, [asset]).success  # the next run completes...
    assert not partial.exists() and leftovers(output.parent) == []  # ...and removed the leftover
    if suffix == ".json":
        assert json.loads(output.read_text()) == json.loads(before)
    else:
        assert "<html" in output.read_text()


# one publishing code path for the three (the set is flushed before any rename); the SR case runs by default:
# its kill is the last of the set's writes, the one that published a new SEG beside the old SR before
@pytest.mark.parametrize("suffix", [pytest.param(".nii.gz", marks=pytest.mark.slow),
                                    pytest.param(".seg.dcm", marks=pytest.mark.slow), ".sr.dcm"])
def test_sigkill_during_the_mask_seg_or_sr_write_keeps_every_published_output(chain, tmp_path, suffix):
    """Killed while the mask, the DICOM SEG or the SR is written (its temporary file complete, at its fsync):
    the mask, SEG and SR are published as one set, so none of them changed, nor anything else stored; the
    next readers (evaluation, report) succeed; the next run completes, removes the leftovers and writes a
    SEG and an SR that references it."""
    import pydicom

    folder = chain["root"] / "storage" / DS / "segmentation_masks" / chain["key"]
    before = published(chain)
    names = sorted(p.name for p in folder.iterdir())
    assert [n.split(".", 1)[1] for n in names] == ["nii.gz", "seg.dcm", "sr.dcm"]
    killed_run(chain["home"], chain["key"], ["segmentation"], f"fsync:/segmentation_masks/{chain['key']}/|{suffix}",
               tmp_path)
    leftover = sorted(p.name.split(".", 3)[3] for p in folder.iterdir() if p.name.startswith(PARTIAL_PREFIX))
    assert leftover == ["nii.gz", "seg.dcm", "sr.dcm"]  # the killed writer's temporary files, none renamed
    assert published(chain) == before  # every previously published output, bit for bit
    assert rerun(chain, ["segmentation_evaluation", "patient_report"]).success  # the next readers
    assert rerun(chain, ["segmentation"]).success  # the next run completes...
    assert leftovers(folder) == [] and sorted(p.name for p in folder.iterdir()) == names  # ...leftovers gone
    mask = names[0]
    assert files(folder)[mask] == before[f"segmentation_masks/{chain['key']}/{mask}"]  # same mask again
    seg, sr = (pydicom.dcmread(folder / n) for n in names[1:])
    old_seg = pydicom.dcmread(io.BytesIO(before[f"segmentation_masks/{chain['key']}/{names[1]}"]))
    assert seg.SOPInstanceUID != old_seg.SOPInstanceUID
    referenced = {str(e.value) for e in sr.iterall() if e.keyword == "ReferencedSOPInstanceUID"}
    assert seg.SOPInstanceUID in referenced  # the new SR goes with the new SEG


def test_sigkill_between_store_renames_then_the_report_recovers_it(chain, tmp_path):
    root = chain["root"] / "storage"
    store = partition_store_path(root, DS, "segmentation", chain["key"])
    before, everything = files(store), published(chain)
    killed_run(chain["home"], chain["key"], ["segmentation"], f"rename:{store.name}", tmp_path)
    assert not store.exists()  # killed between the renames: the store is aside
    (aside,) = [p for p in store.parent.iterdir() if p.name.startswith(f"{store.name}.replaced-")]
    assert files(aside) == before
    report = rerun(chain, ["patient_report"])  # the next reader puts it back before reading
    assert report.success
    assert files(store) == before and leftovers(store.parent) == []
    # all else as published before the kill, but the report just rewritten and the mask set the killed run had
    # published, complete, before it switched the store
    def kept(outputs: dict) -> dict:
        return {k: v for k, v in outputs.items()
                if k != f"reports/{chain['key']}.html" and "segmentation_masks/" not in k}

    assert kept(published(chain)) == kept(everything)
    (mat,) = [e.step_materialization_data.materialization for e in report.get_asset_materialization_events()]
    html = (root / DS / "reports" / f"{chain['key']}.html").read_text()
    assert "Volumes" in html and "segmentation method otsu" in html  # the overlay and volumes are not dropped
    assert rerun(chain, ["segmentation", "segmentation_evaluation"]).success  # and the next run completes


def test_atomic_file_keeps_the_old_file_on_error_and_removes_dead_writers_leftovers(tmp_path):
    target = tmp_path / "out" / "mask.nii.gz"
    vol = Volume(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), spacing=(1.0, 1.0, 2.0))
    write_nifti(vol, target)
    good = target.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_bytes(b"half a mask")
            raise RuntimeError("disk full")
    assert target.read_bytes() == good and sorted(p.name for p in target.parent.iterdir()) == ["mask.nii.gz"]
    # a writer killed in another process of this host: its temp file goes at the next write
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host_token = readable_host_token()
    leftover = target.with_name(f"{PARTIAL_PREFIX}{host_token}-{int(dead.stdout)}-deadbeef.{target.name}")
    leftover.write_bytes(b"\0" * 10)
    old_style = target.with_name(f".{target.name}.abc123.partial")  # the older write_text_atomic's temp name
    old_style.write_bytes(b"x")
    os.utime(old_style, (time.time() - 7200, time.time() - 7200))
    write_nifti(vol.with_array(vol.array * 2), target)
    assert not leftover.exists() and not old_style.exists()
    assert np.array_equal(np.asarray(nib.load(target).dataobj).transpose(2, 1, 0), vol.array * 2)
    write_text_atomic(tmp_path / "a.json", "{}")
    assert (tmp_path / "a.json").read_text() == "{}"


def readable_host_token() -> str:
    """The host part of this machine's writer ids (``<host>-<pid>-<random>``)."""
    import hashlib
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def test_only_the_atomic_writer_writes_files():
    """`grep write_text|write_bytes|open(...'w'` over the package: only the writer itself (and the test-data
    generators and fuzzing tools, which write inputs, not outputs), plus the one stage another branch owns."""
    import re

    pattern = re.compile(r"write_text\(|write_bytes\(|open\([^)]*[\"']w")
    allowed = {"imaging_pipelines/core/storage.py", "imaging_pipelines/remote_sensing/io.py",
               "imaging_pipelines/medical/stages/segmentation.py"}  # io.py: rasterio writes the writer's temp file
    offenders = []
    for path in sorted((REPO / "imaging_pipelines").rglob("*.py")):
        rel = str(path.relative_to(REPO))
        if rel in allowed or rel.startswith("imaging_pipelines/tools/"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and "_atomic(" not in line:
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == []
