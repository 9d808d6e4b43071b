"""The production instance (deploy/dagster.yaml): PostgreSQL storage, QueuedRunCoordinator, concurrency limits.

The file is checked against Dagster's own instance schema (always). Then, against a throwaway PostgreSQL server
on 127.0.0.1 (tests/postgres_server.py; skipped when PostgreSQL is not installed), the production layout runs
for real: a DAGSTER_HOME with that dagster.yaml unchanged, ``dagster-webserver`` and ``dagster-daemon run`` as
two processes sharing the database, and ``imaging-pipelines backfill`` launching a backfill of the ingestion
asset that the daemon queues, dequeues and runs, one run per partition.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus, EventRecordsFilter, RunsFilter
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.run_coordinator import QueuedRunCoordinator

from imaging_pipelines.dagster_layer.backfill_client import DagsterGraphQL, wait_for_backfill
from imaging_pipelines.dagster_layer.local_runs import run_sensor_once
from imaging_pipelines.dagster_layer.factory import build_definitions
from imaging_pipelines.core.privacy import pseudonymise
from tests.conftest import REPO
from tests.dagster_server import free_port, start_server, stop_server
from tests.pipeline_helpers import write_patient
from tests.postgres_server import postgres_server  # noqa: F401  (fixture)

BIN = Path(sys.executable).parent
PRODUCTION_YAML = REPO / "deploy" / "dagster.yaml"
PG_ENV = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")


def test_production_dagster_yaml_validates_against_dagsters_schema(tmp_path, monkeypatch):
    raw = yaml.safe_load(PRODUCTION_YAML.read_text())
    # the connection comes from the environment only, never from the file
    db = raw["storage"]["postgres"]["postgres_db"]
    assert [db[k] for k in ("hostname", "port", "username", "password", "db_name")] == [{"env": v} for v in PG_ENV]
    for name, value in zip(PG_ENV, ("db.example.org", "5432", "dagster", "secret", "dagster")):
        monkeypatch.setenv(name, value)
    shutil.copy(PRODUCTION_YAML, tmp_path / "dagster.yaml")
    config, custom_class = dagster_instance_config(str(tmp_path))  # raises DagsterInvalidConfigError if invalid
    assert custom_class is None
    # the configurable classes' own blocks are only checked when the instance is built: check them here
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    coordinator = validate_config(QueuedRunCoordinator.config_type(), config["run_coordinator"]["config"])
    assert coordinator.success, coordinator.errors
    assert config["run_launcher"]["class"] == "DefaultRunLauncher"
    launcher = validate_config(DefaultRunLauncher.config_type(), config["run_launcher"].get("config") or {})
    assert launcher.success, launcher.errors
    runs, pools = config["concurrency"]["runs"], config["concurrency"]["pools"]
    assert runs["max_concurrent_runs"] >= 1 and runs["tag_concurrency_limits"]
    assert pools["default_limit"] == 1  # `gpu`, the project's only pool: one GPU step at a time
    assert config["telemetry"] == {"enabled": False}


def start_daemon(log: Path) -> subprocess.Popen:
    """``dagster-daemon run`` on workspace.yaml (own process group, like tests/dagster_server.start_server)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")], cwd=REPO, env=os.environ.copy(),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), start_new_session=True,
        )


def tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


@pytest.mark.timeout(400)
def test_backfill_on_the_postgres_instance_runs_through_the_queue(postgres_server, workspace, tmp_path,  # noqa: F811
                                                                   monkeypatch):
    pg = postgres_server
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PRODUCTION_YAML, home / "dagster.yaml")  # unchanged: only the environment points it at the server
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name, value in pg.dagster_env().items():
        monkeypatch.setenv(name, value)
    # runs execute in-process: one Python process (one import of the definitions) per run instead of two
    (tmp_path / "deployment.yaml").write_text("executor:\n  kind: in_process\n")
    monkeypatch.setenv("IMAGING_PIPELINES_DEPLOYMENT", str(tmp_path / "deployment.yaml"))
    write_patient(workspace / "inbox" / "case_a", "PID-A")
    write_patient(workspace / "inbox" / "case_b", "PID-B", seed=1)
    keys = sorted(pseudonymise(p, "dicom-patient-id") for p in ("PID-A", "PID-B"))

    with DagsterInstance.get() as instance:
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert type(instance.run_storage).__module__.startswith("dagster_postgres")
        assert type(instance.event_log_storage).__module__.startswith("dagster_postgres")
        assert type(instance.schedule_storage).__module__.startswith("dagster_postgres")
        concurrency = instance.get_concurrency_config()
        queue = concurrency.run_queue_config
        assert queue.max_concurrent_runs >= 2 and "dagster/backfill" in [t["key"] for t in queue.tag_concurrency_limits]
        assert concurrency.pool_config.default_pool_limit == 1
        run_sensor_once(build_definitions(), "test_ds", instance)  # the inbox scan adds the partitions
        assert sorted(instance.get_dynamic_partitions("test_ds__patients")) == keys
    assert sorted(r[0] for r in pg.query("SELECT partition FROM dynamic_partitions")) == keys

    port = free_port()
    web_log, daemon_log = tmp_path / "webserver.log", tmp_path / "daemon.log"
    webserver = start_server("webserver", port, web_log)
    daemon = None
    try:
        launched = subprocess.run(
            [str(BIN / "imaging-pipelines"), "backfill", "test_ds", "--all", "--assets", "ingested_scans",
             "--port", str(port)], cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, timeout=120)
        assert launched.returncode == 0, launched.stdout + launched.stderr
        backfill_id = re.search(r"launched backfill (\S+):", launched.stdout).group(1)
        # the webserver wrote the backfill into PostgreSQL; the daemon (started now) picks it up on its first pass
        assert pg.query("SELECT status FROM bulk_actions WHERE key = %s", (backfill_id,)) == [("REQUESTED",)]
        daemon = start_daemon(daemon_log)
        try:
            outcome = wait_for_backfill(DagsterGraphQL(port=port), backfill_id, keys, poll_s=1, timeout_s=240,
                                        progress=False)
        except Exception as exc:
            raise AssertionError(f"{exc}\n--- daemon log:\n{tail(daemon_log)}") from None
        assert sorted(outcome.materialised) == keys and not outcome.failed, (outcome, tail(daemon_log))
    finally:
        if daemon is not None:
            stop_server(daemon)
        stop_server(webserver)

    with DagsterInstance.get() as instance:
        runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert len(runs) == len(keys) and all(r.status == DagsterRunStatus.SUCCESS for r in runs), runs
        # the tag the per-dataset run limit of deploy/dagster.yaml counts
        assert all(r.tags.get("imaging_pipelines/dataset") == "test_ds" for r in runs), [r.tags for r in runs]
        for run in runs:  # every run went through the queue: enqueued, then launched by the daemon's dequeue loop
            kinds = [e.dagster_event.event_type for e in instance.all_logs(run.run_id) if e.dagster_event]
            assert kinds.index(DagsterEventType.RUN_ENQUEUED) < kinds.index(DagsterEventType.RUN_STARTING) \
                < kinds.index(DagsterEventType.RUN_SUCCESS), kinds
        asset = AssetKey(["test_ds", "ingested_scans"])
        assert sorted(instance.get_materialized_partitions(asset)) == keys
        records = instance.get_event_records(
            EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION, asset_key=asset))
        assert sorted(r.partition_key for r in records) == keys

    # ... and all of it is in PostgreSQL, nothing in a SQLite file under DAGSTER_HOME
    run_ids = [r.run_id for r in runs]
    assert pg.query("SELECT count(*) FROM runs WHERE run_id = ANY(%s) AND status = 'SUCCESS'",
                    (run_ids,)) == [(len(keys),)]
    assert pg.query("SELECT count(*) FROM event_logs WHERE run_id = ANY(%s) AND dagster_event_type = %s",
                    (run_ids, "ASSET_MATERIALIZATION")) == [(len(keys),)]
    daemons = {r[0] for r in pg.query("SELECT daemon_type FROM daemon_heartbeats")}
    assert {"BACKFILL", "QUEUED_RUN_COORDINATOR"} <= daemons, daemons
    assert not [p for p in home.rglob("*.db")], list(home.rglob("*.db"))
