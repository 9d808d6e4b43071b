"""Operations around the dataset chains: inbox schedules and the run-failure
recorder that keeps a per-dataset list of failed partitions for the reports.

- ``<id>__inbox_schedule``: the inbox sensor's scan on a cron (catalog ``schedule:`` block). New partitions
  are added directly on the instance (schedules cannot return dynamic partition requests). Schedules have
  no cursor: what has been requested is read from the instance instead. Each partition's run key is
  ``<key>:<digest of its files>`` (the sensor's run keys too), and a partition is requested only when no
  run with its current run key exists, i.e. when its files are new or changed since its last launched run,
  whoever launched it. The scan state (hashes of inbox-relative paths with size and mtime, never the
  paths) is cached in ``<storage root>/<id>/_inbox_schedule_state.json`` so unchanged files are not read
  again; losing it costs a rescan, never a duplicate run, and a dry-run evaluation (UI *Test schedule*)
  launches nothing and so suppresses nothing. Beside it, the scan writes the inbox index
  (``<storage root>/<id>/_inbox_index/``, :mod:`imaging_pipelines.medical.inbox_index`) from which each
  partition's run reads its own files.
- ``run_failure_recorder`` / ``run_success_recorder``: each failed run of this code location is appended
  as a JSON line to ``<storage root>/<dataset>/_failures.jsonl`` (dataset, partition, failed steps and
  assets, error message); a later successful run of a partition that has an open failure appends a
  ``success`` record. :func:`read_failures` folds the file: the latest failure of each partition not
  followed by a success.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from dagster import (
    DefaultScheduleStatus,
    DefaultSensorStatus,
    DagsterEventType,
    DagsterRunStatus,
    RunFailureSensorContext,
    RunRequest,
    RunsFilter,
    RunStatusSensorContext,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SensorDefinition,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    schedule,
)

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.storage import as_upath, write_text_atomic
from imaging_pipelines.dagster_layer.asset_helpers import DatasetChain
from imaging_pipelines.dagster_layer.backfill_client import run_partition
from imaging_pipelines.dagster_layer.inbox_sensors import inbox_scanner, log_scan_messages
from imaging_pipelines.dagster_layer.resources import ImagingStorage

SCHEDULE_STATE_FILE = "_inbox_schedule_state.json"
FAILURES_FILE = "_failures.jsonl"
BACKFILL_TAG = "dagster/backfill"
RUN_KEY_TAG = "dagster/run_key"


# --------------------------------------------------------------------------- schedule


def schedule_state_path(root, dataset_id: str):
    return root / dataset_id / SCHEDULE_STATE_FILE


def load_schedule_state(root, dataset_id: str) -> dict:
    """The schedule's scan cache (path hashes -> size:mtime and owner); {} when missing or unreadable."""
    path = schedule_state_path(root, dataset_id)
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return {}  # unreadable cache: every file's header is read again; run keys still stop duplicate runs


def save_schedule_state(root, dataset_id: str, state: dict) -> None:
    write_text_atomic(schedule_state_path(root, dataset_id), json.dumps(state, sort_keys=True))


def launched_run_keys(instance, run_keys: list[str], chunk: int = 400) -> set[str]:
    """The run keys among ``run_keys`` that already have a run in the instance (any status, any launcher)."""
    found: set[str] = set()
    for i in range(0, len(run_keys), chunk):
        records = instance.get_run_records(RunsFilter(tags={RUN_KEY_TAG: run_keys[i:i + chunk]}))
        found.update(r.dagster_run.tags.get(RUN_KEY_TAG) for r in records)
    return found


def build_inbox_schedule(dataset: DatasetConfig, chain: DatasetChain) -> ScheduleDefinition:
    """``<id>__inbox_schedule``: scan the inbox on the catalog's cron, add new partitions, run the new or
    changed ones through the per-partition job (``<id>__patient_job`` / ``<id>__tile_job``)."""
    cfg = dataset.schedule
    partitions = chain.partitions
    scan = inbox_scanner(dataset)

    @schedule(
        name=f"{dataset.id}__inbox_schedule",
        job=chain.job,
        cron_schedule=cfg.cron,
        execution_timezone=cfg.timezone,
        default_status=DefaultScheduleStatus.RUNNING if cfg.enabled else DefaultScheduleStatus.STOPPED,
        description=f"Scans {dataset.id}'s inbox on '{cfg.cron}' ({cfg.timezone}); adds new partitions and runs "
                    "only those whose files are new or changed since their last run (run key = partition + "
                    "digest of its files).",
    )
    def inbox_schedule(context: ScheduleEvaluationContext, storage: ImagingStorage):
        root = storage.root_path()
        result = scan(dataset, load_schedule_state(root, dataset.id), root)
        log_scan_messages(context.log, result)
        existing = set(context.instance.get_dynamic_partitions(partitions.name))
        new_keys = [k for k in result.keys if k not in existing]
        if new_keys:
            context.instance.add_dynamic_partitions(partitions.name, new_keys)
        run_keys = {key: f"{key}:{result.digests[key]}" for key in result.keys}
        launched = launched_run_keys(context.instance, list(run_keys.values()))
        requests = [RunRequest(partition_key=key, run_key=rk) for key, rk in run_keys.items() if rk not in launched]
        save_schedule_state(root, dataset.id, result.state)
        if not requests:
            return SkipReason(f"no new or changed files ({len(new_keys)} partition(s) added)" if new_keys
                              else "no new or changed files")
        return requests

    return inbox_schedule


# --------------------------------------------------------------------------- failure records


def failures_path(root, dataset_id: str):
    return root / dataset_id / FAILURES_FILE


def _append_record(root, dataset_id: str, record: dict) -> None:
    path = failures_path(root, dataset_id)
    line = json.dumps(record, sort_keys=True) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if "://" not in str(path):
        with open(str(path), "a") as fh:  # one short write per record
            fh.write(line)
    else:  # object stores have no append: rewrite the (small) file
        previous = path.read_text() if path.exists() else ""
        write_text_atomic(path, previous + line)


def _record_key(record: dict) -> str:
    """What a later success must cover to clear a failure: the partition, else the run's assets or job."""
    if record.get("partition"):
        return record["partition"]
    return "assets:" + ",".join(record["assets"]) if record.get("assets") else f"job:{record.get('job')}"


def read_failures(root, dataset_id: str) -> list[dict]:
    """The open failures of a dataset: per partition (or, for unpartitioned runs, per asset selection / job)
    the latest failure record not followed by a success record, oldest first. Keys of each record:
    ``time``, ``status`` (``failed``), ``dataset``, ``partition``, ``run_id``, ``job``, ``backfill_id``,
    ``assets`` (the run's asset selection), ``failed_steps``, ``failed_assets`` (asset names without the
    dataset prefix), ``asset`` (those names joined by ", "), ``error``."""
    path = failures_path(as_upath(root), dataset_id)
    if not path.exists():
        return []
    latest: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn last line
        key = _record_key(record)
        if record.get("status") == "failed":
            latest[key] = record
        else:
            latest.pop(key, None)
    return sorted(latest.values(), key=lambda r: r.get("time", ""))


def run_dataset(run, dataset_ids: set[str]) -> str | None:
    """The dataset of a run: the prefix of its job name (``<id>__patient_job``) or of its assets."""
    prefix = run.job_name.split("__")[0]
    if prefix in dataset_ids:
        return prefix
    for key in sorted(run.asset_selection or [], key=lambda k: k.path):
        if key.path[0] in dataset_ids:
            return key.path[0]
    return None


def _asset_names(run, dataset_id: str) -> list[str]:
    return sorted("/".join(k.path[1:]) for k in run.asset_selection or [] if k.path[0] == dataset_id)


def failure_record(run, failure_event, step_failures, dataset_id: str) -> dict:
    """A JSON-able record of one failed run. Error messages are Dagster's: the asset bodies name partitions
    by pseudonym and files by their inbox path, never by patient data."""
    steps, assets, errors = [], [], []
    for event in step_failures:
        steps.append(event.step_key)
        prefix = f"{dataset_id}__"
        assets.append(event.step_key[len(prefix):] if event.step_key.startswith(prefix) else event.step_key)
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            errors.append(f"{event.step_key}: {error.message.strip()}")
    if not errors:
        errors.append((getattr(failure_event, "message", None) or "run failed").strip())
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "status": "failed",
        "dataset": dataset_id,
        "partition": run_partition(run.tags),
        "run_id": run.run_id,
        "job": run.job_name,
        "backfill_id": run.tags.get(BACKFILL_TAG),
        "assets": _asset_names(run, dataset_id),
        "failed_steps": steps,
        "failed_assets": assets,
        "asset": ", ".join(assets),  # one display string for the reports' failure table
        "error": "\n".join(errors),
    }


def record_failed_run(root, context: RunFailureSensorContext, dataset_ids: set[str]) -> dict | None:
    run = context.dagster_run
    dataset_id = run_dataset(run, dataset_ids)
    if dataset_id is None:
        return None
    if run.run_id in recorded_run_ids(root, dataset_id):
        return None  # already recorded (by reconcile_failures or the headless command)
    record = failure_record(run, context.failure_event, context.get_step_failure_events(), dataset_id)
    _append_record(root, dataset_id, record)
    return record


def record_succeeded_run(root, run, dataset_ids: set[str]) -> dict | None:
    """Append a success record when the run clears an open failure of its partition (else write nothing)."""
    dataset_id = run_dataset(run, dataset_ids)
    if dataset_id is None:
        return None
    record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "status": "success",
              "dataset": dataset_id, "partition": run_partition(run.tags), "run_id": run.run_id,
              "job": run.job_name, "assets": _asset_names(run, dataset_id)}
    if not any(_record_key(f) == _record_key(record) for f in read_failures(root, dataset_id)):
        return None
    _append_record(root, dataset_id, record)
    return record


def build_failure_sensors(datasets: list[DatasetConfig]) -> list[SensorDefinition]:
    """``run_failure_recorder`` and ``run_success_recorder`` for this code location's runs (running by default)."""
    dataset_ids = {d.id for d in datasets}

    @run_failure_sensor(
        name="run_failure_recorder",
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=5,
        description=f"Appends every failed run (dataset, partition, failed steps, error) to "
                    f"<storage root>/<dataset>/{FAILURES_FILE}, for the reports' list of failed partitions.",
    )
    def run_failure_recorder(context: RunFailureSensorContext, storage: ImagingStorage):
        record = record_failed_run(storage.root_path(), context, dataset_ids)
        if record:
            context.log.info(f"recorded failure of {record['dataset']} {record['partition'] or record['job']}")

    @run_status_sensor(
        run_status=DagsterRunStatus.SUCCESS,
        name="run_success_recorder",
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=5,
        description=f"Marks a recorded failure in <storage root>/<dataset>/{FAILURES_FILE} as resolved when a "
                    "later run of the same partition succeeds.",
    )
    def run_success_recorder(context: RunStatusSensorContext, storage: ImagingStorage):
        record = record_succeeded_run(storage.root_path(), context.dagster_run, dataset_ids)
        if record:
            context.log.info(f"cleared failure of {record['dataset']} {record['partition'] or record['job']}")

    return [run_failure_recorder, run_success_recorder]


def recorded_run_ids(root, dataset_id: str) -> set[str]:
    """Run ids that already have a line in the dataset's failure record."""
    path = failures_path(as_upath(root), dataset_id)
    if not path.exists():
        return set()
    ids = set()
    for line in path.read_text().splitlines():
        try:
            ids.add(json.loads(line).get("run_id"))
        except ValueError:
            continue
    return ids - {None}


def reconcile_failures(root, instance, dataset_id: str, limit: int = 20000) -> int:
    """Record every finished run of the dataset that the record misses (runs executed in process, by
    ``dg launch``, by a headless command or a webserver whose daemon's sensors did not see them): its failure,
    or the success that clears an open failure of the same partition, oldest first, like the run-status
    sensors. Called before a cohort report reads the record, so it never says "no failures" while partitions
    failed. ``limit``: newest finished runs looked at. Returns the number of records written."""
    seen = recorded_run_ids(root, dataset_id)
    records = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.FAILURE, DagsterRunStatus.SUCCESS]),
                                       limit=limit)
    ended = {r.dagster_run.run_id: _end_time(r) for r in records}
    written = 0
    for record in sorted(records, key=_end_time):
        run = record.dagster_run
        if run.run_id in seen or run_dataset(run, {dataset_id}) is None:
            continue
        if run.status == DagsterRunStatus.SUCCESS:
            key = _record_key({"partition": run_partition(run.tags), "assets": _asset_names(run, dataset_id),
                               "job": run.job_name})
            open_failure = next((f for f in read_failures(root, dataset_id) if _record_key(f) == key), None)
            if open_failure is None or _end_time(record) <= _failure_time(instance, open_failure, ended):
                continue  # clears nothing, or is older than the failure it would clear
        written += record_run_outcome(root, instance, run.run_id, {dataset_id}) is not None
    return written


def _end_time(record) -> float:
    return record.end_time or record.create_timestamp.timestamp()


def _failure_time(instance, failure: dict, ended: dict[str, float]) -> float:
    """When the failed run of a record ended (else when the failure was recorded), in seconds since the epoch."""
    run_id = failure.get("run_id")
    if run_id in ended:
        return ended[run_id]
    record = instance.get_run_record_by_id(run_id) if run_id else None
    if record is not None:
        return _end_time(record)
    return datetime.fromisoformat(failure["time"]).timestamp() if failure.get("time") else 0.0


def record_run_outcome(root, instance, run_id: str, dataset_ids: set[str]) -> dict | None:
    """Record a finished run like the run-status sensors do (a failure, or the success that clears one),
    for runs executed without a daemon (``imaging-pipelines run``), so the cohort report lists them."""
    run = instance.get_run_by_id(run_id) if run_id else None
    if run is None:
        return None
    if run.status != DagsterRunStatus.FAILURE:
        return record_succeeded_run(root, run, dataset_ids) if run.status == DagsterRunStatus.SUCCESS else None
    dataset_id = run_dataset(run, dataset_ids)
    if dataset_id is None:
        return None
    events = [r.dagster_event for r in instance.all_logs(run_id, of_type={DagsterEventType.STEP_FAILURE,
                                                                          DagsterEventType.RUN_FAILURE})]
    steps = [e for e in events if e.event_type == DagsterEventType.STEP_FAILURE]
    failure = next((e for e in events if e.event_type == DagsterEventType.RUN_FAILURE), None)
    record = failure_record(run, failure, steps, dataset_id)
    _append_record(root, dataset_id, record)
    return record
