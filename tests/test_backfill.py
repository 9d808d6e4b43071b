"""`imaging-pipelines backfill` against a real `dagster dev` (webserver + daemon): every partition is
materialised; after one input is damaged, a second backfill fails that partition only, and the run-failure
recorder lists it for the reports."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from dagster import AssetKey, DagsterInstance

from imaging_pipelines.dagster_layer.local_runs import run_sensor_once
from imaging_pipelines.dagster_layer.factory import build_definitions
from imaging_pipelines.dagster_layer.operations import read_failures
from imaging_pipelines.core.storage import storage_root
from imaging_pipelines.core.privacy import pseudonymise
from tests.conftest import REPO
from tests.pipeline_helpers import write_patient
from tests.dagster_server import free_port, start_server, stop_server

BIN = Path(sys.executable).parent


def backfill(*args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "imaging-pipelines"), "backfill", *args], cwd=REPO, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=timeout)


def wait_for(predicate, timeout_s: float):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    return predicate()


def test_backfill_command_materialises_every_partition_and_records_failures(workspace, tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    files_a = write_patient(workspace / "inbox" / "case_a", "PID-A")
    write_patient(workspace / "inbox" / "case_b", "PID-B", seed=1)
    keys = sorted([pseudonymise("PID-A", "dicom-patient-id"), pseudonymise("PID-B", "dicom-patient-id")])
    with DagsterInstance.get() as instance:  # the inbox sensor's scan creates the partitions
        run_sensor_once(build_definitions(), "test_ds", instance)
        assert sorted(instance.get_dynamic_partitions("test_ds__patients")) == keys

    unreachable = backfill("test_ds", "--all", "--port", str(free_port()))
    assert unreachable.returncode == 2 and "cannot reach the Dagster webserver" in unreachable.stderr

    port = free_port()
    proc = start_server("dev", port, tmp_path / "dagster_dev.log")
    try:
        unknown = backfill("no_such_ds", "--all", "--port", str(port))
        assert unknown.returncode == 2 and "unknown dataset 'no_such_ds'" in unknown.stderr and "test_ds" in unknown.stderr

        first = backfill("test_ds", "--all", "--wait", "--port", str(port))
        assert first.returncode == 0, first.stdout + first.stderr
        assert "launched backfill" in first.stdout and "2 partition(s) materialised, 0 failed" in first.stdout
        with DagsterInstance.get() as instance:
            for asset in ("ingested_scans", "preprocessed"):
                assert sorted(instance.get_materialized_partitions(AssetKey(["test_ds", asset]))) == keys

        data = files_a[2].read_bytes()
        files_a[2].write_bytes(data[: len(data) // 2])  # unreadable input for patient A
        second = backfill("test_ds", "--all", "--wait", "--port", str(port))
        assert second.returncode == 1, second.stdout + second.stderr
        key_a = pseudonymise("PID-A", "dicom-patient-id")
        assert "1 partition(s) materialised, 1 failed" in second.stdout and f"FAILED {key_a}" in second.stdout
        failures = wait_for(lambda: read_failures(storage_root(), "test_ds"), timeout_s=60)
        assert [f["partition"] for f in failures] == [key_a], failures
        assert failures[0]["failed_assets"] == ["ingested_scans"] and failures[0]["asset"] == "ingested_scans"
        assert files_a[2].name in failures[0]["error"]
        assert failures[0]["backfill_id"] and "PID-A" not in str(failures[0])
        # the cohort summary lists the failed partition with its error, and links the other patient's report
        with DagsterInstance.get() as instance:
            summary = build_definitions().resolve_job_def("test_ds__cohort_job").execute_in_process(instance=instance)
        assert summary.success
        index = (storage_root() / "test_ds" / "reports" / "index.html").read_text()
        failed_section = index[index.index('id="failed"'):]
        assert key_a in failed_section and files_a[2].name in failed_section
        key_b = next(k for k in keys if k != key_a)
        assert f'href="{key_b}.html"' in index and "PID-A" not in index
    finally:
        stop_server(proc)
