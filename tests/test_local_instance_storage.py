"""The local instance's SQLite storages (dagster_layer.sqlite_storage): WAL with synchronous=NORMAL, one
engine per process, and runs and events stored and read back like Dagster's own SQLite storages."""

from __future__ import annotations

import os

from dagster import DagsterInstance, asset, materialize

from imaging_pipelines.dagster_layer.local_runs import dev_instance_yaml
from imaging_pipelines.dagster_layer.sqlite_storage import LocalSqliteEventLogStorage, LocalSqliteRunStorage


@asset
def tiny() -> int:
    return 1


def test_dev_instance_uses_local_storages_with_relaxed_wal_commits(tmp_path, monkeypatch):
    (tmp_path / "dagster.yaml").write_text(dev_instance_yaml(tmp_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with DagsterInstance.get() as instance:
        assert isinstance(instance.event_log_storage, LocalSqliteEventLogStorage)
        assert isinstance(instance.run_storage, LocalSqliteRunStorage)
        for connect in (instance.event_log_storage._connect, instance.run_storage.connect):
            with connect() as conn:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        engine = instance.event_log_storage.__dict__["_local_engines"].get()
        assert instance.event_log_storage.__dict__["_local_engines"].get() is engine  # reused, not re-created
        result = materialize([tiny], instance=instance)
        assert result.success
        run_id = result.run_id
    # a fresh instance (another process would do the same) reads the run and its materialisation back
    with DagsterInstance.get() as again:
        assert again.get_run_by_id(run_id).is_success
        assert again.get_latest_materialization_event(tiny.key) is not None
    assert {"event_log.db", "runs.db"} <= set(os.listdir(tmp_path / "history"))
