"""Run a dataset's jobs in this process against a Dagster instance: evaluate a sensor, materialise
partitions one run each, run an unpartitioned job. Used by the demo and the tests; every run is recorded
in the instance like a launched one."""

from __future__ import annotations

import json
import os

from imaging_pipelines.core.storage import write_text_atomic
from imaging_pipelines.config.paths import PROJECT_ROOT

DEFAULT_DAGSTER_HOME = PROJECT_ROOT / "var" / "dagster_home"
# Console shows warnings and errors only; the full event log is in the instance (and the UI).
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def dev_instance_yaml(home: str | os.PathLike) -> str:
    """The dagster.yaml of a local SQLite instance in ``home``: telemetry off, every run's events in one
    SQLite database under ``home/history`` and the runs in ``home/history/runs.db``, through
    :mod:`imaging_pipelines.dagster_layer.sqlite_storage` (one engine per process, WAL commits without an
    fsync each). Dagster's default SQLite event log creates and migrates a database file per run and writes
    asset events twice, which costs a small partition's run about as much as its imaging."""
    base_dir = json.dumps(os.path.join(os.path.abspath(home), "history"))
    return ("telemetry:\n  enabled: false\n"
            "event_log_storage:\n  module: imaging_pipelines.dagster_layer.sqlite_storage\n"
            "  class: LocalSqliteEventLogStorage\n"
            f"  config:\n    base_dir: {base_dir}\n"
            "run_storage:\n  module: imaging_pipelines.dagster_layer.sqlite_storage\n"
            "  class: LocalSqliteRunStorage\n"
            f"  config:\n    base_dir: {base_dir}\n")


_held_databases: dict = {}  # per process: database path -> the connection hold_sqlite_databases keeps open


def hold_sqlite_databases(instance) -> int:
    """Keep one idle connection open to every SQLite database of a local instance, for the life of this
    process; returns how many. Dagster opens and closes a connection per operation (``NullPool``), and
    SQLite checkpoints and deletes a database's WAL file whenever its last connection closes: a few ms of
    fsync per close, about a hundred closes per small run. With a connection held open those closes are
    cheap; WAL checkpoints still happen automatically (every 1000 pages) and nothing about durability
    changes. A no-op for instances without SQLite files (PostgreSQL)."""
    import glob
    import sqlite3

    root = getattr(instance, "root_directory", None)
    if not root or not os.path.isdir(root):
        return 0
    for path in sorted(glob.glob(os.path.join(root, "**", "*.db"), recursive=True)):
        if path not in _held_databases:
            connection = sqlite3.connect(path, check_same_thread=False)
            connection.execute("SELECT count(*) FROM sqlite_master").fetchall()  # opens the file and its WAL index
            _held_databases[path] = connection
    return len(_held_databases)


def ensure_dagster_home() -> str:
    """Create ``DAGSTER_HOME`` (default ``var/dagster_home``) with the dagster.yaml of
    :func:`dev_instance_yaml` when it has none (an existing dagster.yaml is left as it is)."""
    home = os.environ.setdefault("DAGSTER_HOME", str(DEFAULT_DAGSTER_HOME))
    os.makedirs(home, exist_ok=True)
    config = os.path.join(home, "dagster.yaml")
    if not os.path.exists(config):
        write_text_atomic(config, dev_instance_yaml(home))
    return home


def run_sensor_once(defs, dataset_id: str, instance):
    """Evaluate a dataset's inbox sensor against the instance and apply its partition requests."""
    from dagster import build_sensor_context

    sensor_def = defs.resolve_sensor_def(f"{dataset_id}__inbox_sensor")
    result = sensor_def(build_sensor_context(instance=instance, definitions=defs, resources=defs.resources))
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def materialise_partitions(defs, dataset_id: str, partition_keys: list[str], instance, progress: bool = True,
                           asset_selection=None, label: str = "", job_name: str = "patient_job", unit: str = "patient"):
    """Run the dataset's per-partition job (``<id>__patient_job`` or ``<id>__tile_job``) once per partition
    (in-process), recording runs in ``instance``. ``asset_selection``: the asset keys to run (default: all)."""
    from tqdm import tqdm

    job = defs.resolve_job_def(f"{dataset_id}__{job_name}")
    results = {}
    for key in tqdm(partition_keys, desc=label or f"running {dataset_id}", unit=unit, disable=not progress):
        results[key] = job.execute_in_process(
            partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET_CONSOLE,
            asset_selection=asset_selection,
        )
    return results


def run_job(defs, name: str, instance):
    """Run an unpartitioned job if the definitions have it; None otherwise."""
    names = {j.name for j in defs.jobs}
    if name not in names:
        return None
    return defs.resolve_job_def(name).execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET_CONSOLE)


def materialization_metadata(result, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key.path[-1] == asset:
            return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    return {}
