"""Crash safety and idempotence of partition stores, through real Dagster runs.

A run is killed with SIGKILL while it writes a partition's Zarr store (local folder and S3): the previous
store must read back bit for bit and a re-run must succeed. Re-materialising a partition from the same
inputs must give byte-identical array data and the same metadata.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from dagster import AssetKey, DagsterEventType, DagsterInstance, EventRecordsFilter

from imaging_pipelines.dagster_layer.local_runs import run_sensor_once
from imaging_pipelines.dagster_layer.factory import build_definitions
from imaging_pipelines.medical.io.ome_zarr import read_volume_store
from imaging_pipelines.core.storage import MANIFEST, partition_store_path, published_version, storage_root
from tests.s3_server import local_s3

DS = "test_ds"
INGESTED = AssetKey([DS, "ingested_scans"])
PREPROCESSED = AssetKey([DS, "preprocessed"])

# Runs one partition's ingestion in its own process, as a Dagster run worker would (instance on disk).
RUN_ONE_PARTITION = """
import sys
from dagster import AssetKey, DagsterInstance
from imaging_pipelines.dagster_layer.factory import build_definitions
home, partition = sys.argv[1:3]
job = build_definitions().resolve_job_def("test_ds__patient_job")
with DagsterInstance.from_config(home) as instance:
    result = job.execute_in_process(partition_key=partition, instance=instance, raise_on_error=False,
                                    asset_selection=[AssetKey(["test_ds", "ingested_scans"])])
sys.exit(0 if result.success else 1)
"""


def write_subject(inbox: Path, shape_zyx: tuple[int, int, int], seed: int) -> None:
    """One NIfTI subject (int16, 1 x 1 x 2 mm) in the inbox; a larger shape makes a slower store write."""
    data = np.random.default_rng(seed).integers(0, 3000, shape_zyx[::-1]).astype(np.int16)
    folder = inbox / "nifti" / "sub-001"
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), folder / "sub-001_T1w.nii.gz")


def local_files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def run_in_subprocess(home: str, partition: str, env: dict | None = None) -> subprocess.Popen:
    import os

    return subprocess.Popen([sys.executable, "-c", RUN_ONE_PARTITION, home, partition],
                            env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when(proc: subprocess.Popen, writing, timeout_s: float = 240) -> None:
    """SIGKILL ``proc`` as soon as ``writing()`` says it is inside a store write."""
    deadline = time.time() + timeout_s
    try:
        while not writing():
            if proc.poll() is not None:
                raise AssertionError(f"the run ended before it was killed: {proc.stderr.read().decode()[-2000:]}")
            assert time.time() < deadline, "the run never started writing"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def ingest_once(workspace: Path, home: Path) -> str:
    """Write a small subject, let the sensor add its partition to the instance at ``home`` and ingest it
    once (the good store a killed run must not damage); returns the partition key."""
    write_subject(workspace / "inbox", (16, 48, 40), seed=1)
    home.mkdir()
    with DagsterInstance.local_temp(str(home)) as instance:
        defs = build_definitions()
        (partition,) = [r.partition_key for r in run_sensor_once(defs, DS, instance).run_requests]
        assert defs.resolve_job_def(f"{DS}__patient_job").execute_in_process(
            partition_key=partition, instance=instance, asset_selection=[INGESTED]).success
    return partition


def test_sigkill_during_local_write_keeps_previous_store_then_rerun_succeeds(workspace, tmp_path):
    home = tmp_path / "dagster_home"
    partition = ingest_once(workspace, home)
    store = Path(str(partition_store_path(storage_root(), DS, "ingested_scans", partition)))
    before = local_files(store)
    previous = read_volume_store(store)
    write_subject(workspace / "inbox", (96, 512, 512), seed=2)  # new scan: a write of several seconds

    proc = run_in_subprocess(str(home), partition)
    # the staging folder exists from the start of the store write to its publication (the write itself is
    # now a fraction of a second, too short a window to wait for a chunk folder under a loaded CI machine)
    kill_when(proc, lambda: any(store.parent.glob(f"{store.name}.staging-*")))

    assert local_files(store) == before, "the killed run changed the published store"
    after = read_volume_store(store)
    assert after.keys() == previous.keys()
    assert all(np.array_equal(after[k].array, previous[k].array) for k in previous)
    rerun = run_in_subprocess(str(home), partition)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read().decode()[-2000:]
    assert next(iter(read_volume_store(store).values())).array.shape == (96, 512, 512)
    assert not list(store.parent.glob(f"{store.name}.*")), "staging or replaced folders left behind"


def test_sigkill_during_s3_write_keeps_previous_store_then_rerun_succeeds(workspace, tmp_path, monkeypatch):
    with local_s3(monkeypatch) as s3:
        monkeypatch.setenv("IMAGING_PIPELINES_STORAGE_ROOT", f"s3://{s3.bucket}/crash")
        home = tmp_path / "dagster_home"
        partition = ingest_once(workspace, home)
        store = partition_store_path(storage_root(), DS, "ingested_scans", partition)
        prefix = f"crash/{DS}/ingested_scans/{partition}.zarr/"
        before = s3.objects(prefix)
        good = published_version(store)
        assert good and prefix + MANIFEST in before
        previous = read_volume_store(store)
        write_subject(workspace / "inbox", (96, 512, 512), seed=2)

        def writing_new_version() -> bool:
            return any("/c/" in k and f"/{good}/" not in k for k in s3.keys(prefix))

        proc = run_in_subprocess(str(home), partition, env=s3.env())
        kill_when(proc, writing_new_version)

        after_kill = s3.objects(prefix)
        assert {k: v for k, v in after_kill.items() if k in before} == before, "the published objects changed"
        assert published_version(store) == good
        restored = read_volume_store(store)
        assert all(np.array_equal(restored[k].array, previous[k].array) for k in previous)
        rerun = run_in_subprocess(str(home), partition, env=s3.env())
        assert rerun.wait(timeout=300) == 0, rerun.stderr.read().decode()[-2000:]
        assert published_version(store) not in (None, good)
        assert next(iter(read_volume_store(store).values())).array.shape == (96, 512, 512)
        left = {k.split("/")[4] for k in s3.objects(prefix)}
        assert left == {MANIFEST, published_version(store)}, f"replaced or killed versions left behind: {left}"


def latest_metadata(instance, key: AssetKey, partition: str) -> dict:
    (record,) = instance.get_event_records(
        EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION, asset_key=key, asset_partitions=[partition]),
        limit=1)
    return dict(record.asset_materialization.metadata)  # MetadataValue records compare by value


# Wall-clock durations are the only metadata that may differ between two runs of the same inputs.
TIMING_KEYS = {"runtime_s"}


def test_rematerialising_a_partition_is_idempotent(workspace, tmp_path):
    write_subject(workspace / "inbox", (16, 48, 40), seed=3)
    (tmp_path / "home").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "home")) as instance:
        defs = build_definitions()
        (partition,) = [r.partition_key for r in run_sensor_once(defs, DS, instance).run_requests]
        job = defs.resolve_job_def(f"{DS}__patient_job")
        snapshots = []
        for _ in range(2):
            assert job.execute_in_process(partition_key=partition, instance=instance,
                                          asset_selection=[INGESTED, PREPROCESSED]).success
            stores = {k.path[-1]: Path(str(partition_store_path(storage_root(), DS, k.path[-1], partition)))
                      for k in (INGESTED, PREPROCESSED)}
            snapshots.append({
                "files": {name: local_files(path) for name, path in stores.items()},
                "metadata": {k.path[-1]: {m: v for m, v in latest_metadata(instance, k, partition).items()
                                          if m not in TIMING_KEYS} for k in (INGESTED, PREPROCESSED)},
            })
    first, second = snapshots
    for name in first["files"]:
        assert first["files"][name].keys() == second["files"][name].keys()
        differing = [f for f in first["files"][name] if first["files"][name][f] != second["files"][name][f]]
        assert not differing, f"{name}: re-materialising changed {differing[:5]}"
    for asset_name, metadata in first["metadata"].items():
        changed = sorted(m for m in metadata.keys() | second["metadata"][asset_name].keys()
                         if metadata.get(m) != second["metadata"][asset_name].get(m))
        assert not changed, f"{asset_name}: re-materialising changed the metadata entries {changed}"
