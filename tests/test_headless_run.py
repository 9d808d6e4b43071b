"""`imaging-pipelines run`: a dataset through its jobs without webserver or daemon, into the persistent
instance of DAGSTER_HOME; a broken partition fails alone; bad arguments exit 2. And the inbox index: a
partition's ingestion reads only its own files, and picks up a changed file."""

from __future__ import annotations

import os
import time

import nibabel as nib
import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance
from typer.testing import CliRunner

from imaging_pipelines.cli import app
from imaging_pipelines.config.catalog import load_catalog
from imaging_pipelines.core.privacy import pseudonymise
from imaging_pipelines.core.storage import storage_root
from imaging_pipelines.dagster_layer.operations import read_failures
from imaging_pipelines.medical import inbox as inbox_module
from imaging_pipelines.medical.inbox_index import partition_files, shard_path
from imaging_pipelines.medical.inbox_scan import scan_patients
from imaging_pipelines.medical.io import image_files
from imaging_pipelines.medical.ingest import ingest_partition

SUBJECTS = ["sub-01", "sub-02", "sub-03"]
PER_PARTITION = ["ingested_scans", "preprocessed"]


def write_subject(inbox, subject: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    data = (rng.random((12, 14, 10)) * 100 + 50).astype(np.float32)
    path = inbox / subject / f"{subject}_T1w.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 2.0, 1.0])), path)
    return path


def key(subject: str) -> str:
    return pseudonymise(subject, "inbox-subject")


@pytest.fixture
def headless(workspace, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(workspace / "dagster_home"))
    monkeypatch.delenv("IMAGING_PIPELINES_DEPLOYMENT", raising=False)
    return {s: write_subject(workspace / "inbox", s, i) for i, s in enumerate(SUBJECTS)}


def invoke(*args: str):
    return CliRunner().invoke(app, ["run", *args])


def materialised(instance, asset: str) -> set[str]:
    records = instance.fetch_materializations(AssetKey(["test_ds", asset]), limit=100).records
    return {r.partition_key for r in records}


def test_run_all_then_truncated_file_fails_alone(headless, workspace):
    result = invoke("test_ds", "--all", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "3 partition(s) done, 0 failed" in result.output
    keys = {key(s) for s in SUBJECTS}
    with DagsterInstance.get() as instance:  # the persistent instance of DAGSTER_HOME, no webserver
        assert set(instance.get_dynamic_partitions("test_ds__patients")) == keys
        for asset in PER_PARTITION:
            assert materialised(instance, asset) == keys, asset
        runs = instance.get_runs()
        assert all(r.tags["imaging_pipelines/dataset"] == "test_ds" for r in runs)
        runs = [r for r in runs if r.job_name == "test_ds__patient_job"]
        assert len(runs) == 3
        assert {r.tags["dagster/run_key"].split(":")[0] for r in runs} == keys
    # nothing new or changed: nothing runs
    again = invoke("test_ds")
    assert again.exit_code == 0 and "0 to run, 3 up to date" in again.output
    # cut sub-02's file: its partition fails with the file named; the others succeed
    bad = headless["sub-02"]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    result = invoke("test_ds", "--all", "--assets", ",".join(PER_PARTITION), "--workers", "2")
    assert result.exit_code == 1, result.output
    assert "2 partition(s) done, 1 failed" in result.output
    failed_line = next(line for line in result.output.splitlines() if "FAILED" in line)
    assert key("sub-02") in failed_line and "sub-02_T1w.nii.gz" in failed_line
    # recorded for the cohort report without a daemon (the run-failure sensor is not running here)
    (failure,) = read_failures(storage_root(), "test_ds")
    assert failure["partition"] == key("sub-02") and "sub-02_T1w.nii.gz" in failure["error"]


def test_run_selected_partitions_and_assets(headless):
    result = invoke("test_ds", "--partitions", key("sub-01"), "--assets", "ingested_scans", "--workers", "1")
    assert result.exit_code == 0, result.output
    with DagsterInstance.get() as instance:
        assert materialised(instance, "ingested_scans") == {key("sub-01")}
        assert materialised(instance, "preprocessed") == set()


@pytest.mark.parametrize("args, message", [
    (["no_such_ds"], "datasets: test_ds"),
    (["test_ds", "--assets", "ingested_scans,bogus"], "valid: ingested_scans, preprocessed"),
    (["test_ds", "--partitions", "pdeadbeef"], "unknown partition"),
    (["test_ds", "--all", "--partitions", "x"], "not both"),
    (["test_ds", "--workers", "0"], ""),
])
def test_bad_arguments_exit_2(headless, args, message):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_ingestion_reads_only_its_own_files_from_the_index(headless, workspace, monkeypatch):
    dataset = next(d for d in load_catalog() if d.id == "test_ds")
    root = storage_root()
    scan_patients(dataset, {}, root)
    assert shard_path(root, "test_ds", key("sub-01")).exists()
    text = shard_path(root, "test_ds", key("sub-01")).read_text()
    assert "sub-02" not in text and "sub-03" not in text
    reads = []
    real_read = image_files.read_image_file
    monkeypatch.setattr(inbox_module, "_identity_cache", {})  # no identity known in this process
    real_subject = inbox_module.file_subject
    monkeypatch.setattr(inbox_module, "file_subject", lambda rel: reads.append(("identity", rel)) or real_subject(rel))
    monkeypatch.setattr("imaging_pipelines.medical.ingest.read_image_file",
                        lambda path, *a, **k: reads.append(("image", str(path))) or real_read(path, *a, **k))
    result = ingest_partition(dataset, key("sub-01"), root)
    assert list(result.images) == ["t1w"]
    assert reads == [("image", str(headless["sub-01"]))]  # no other file's identity or pixels read
    # a changed file: the index is stale for that partition, which is found by a scan and read afresh
    time.sleep(0.01)
    write_subject(workspace / "inbox", "sub-01", seed=9)
    files, from_index = partition_files(dataset, root, key("sub-01"))
    assert not from_index and [f.relpath for f in files] == ["sub-01/sub-01_T1w.nii.gz"]
    assert {rel for kind, rel in reads if kind == "identity"} == {f"{s}/{s}_T1w.nii.gz" for s in SUBJECTS}  # full scan
    assert files[0].size == os.stat(headless["sub-01"]).st_size
    scan_patients(dataset, {}, root)  # the next scan refreshes the shard
    files, from_index = partition_files(dataset, root, key("sub-01"))
    assert from_index and files[0].mtime_ns == os.stat(headless["sub-01"]).st_mtime_ns
