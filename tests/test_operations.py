"""Operations: the inbox schedules (new / changed partitions only), the catalog's schedule block, backfill and
retry policies on the partitioned assets, and the run-failure recorder."""

from __future__ import annotations

import json
import os
import time

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DefaultScheduleStatus,
    RunRequest,
    SkipReason,
    build_run_status_sensor_context,
    build_schedule_context,
    instance_for_test,
)

from imaging_pipelines.config.catalog import load_catalog
from imaging_pipelines.config.paths import DEFAULT_CATALOG_DIR
from imaging_pipelines.dagster_layer.factory import build_definitions
from imaging_pipelines.dagster_layer.operations import (
    FAILURES_FILE,
    SCHEDULE_STATE_FILE,
    read_failures,
    schedule_state_path,
)
from imaging_pipelines.dagster_layer.resources import ImagingStorage
from imaging_pipelines.core.errors import CatalogError
from imaging_pipelines.core.storage import storage_root
from imaging_pipelines.core.privacy import pseudonymise
from tests.pipeline_helpers import write_patient
from tests.test_remote_sensing_pipeline import catalog_entry


def tick(defs, dataset_id: str, instance) -> list[RunRequest]:
    """Evaluate the dataset's inbox schedule once; its run requests ([] when it skipped). Schedule contexts
    need a persistent instance (``instance_for_test``: a temporary one), not ``DagsterInstance.ephemeral()``."""
    schedule = defs.resolve_schedule_def(f"{dataset_id}__inbox_schedule")
    # a `with` block: the context's own instance (from the ref) is closed here, not whenever it is collected
    with build_schedule_context(instance=instance, resources={"storage": ImagingStorage()}) as context:
        result = schedule(context)
    if isinstance(result, SkipReason):
        return []
    return list(result)


def launch(defs, dataset_id: str, instance, requests: list[RunRequest], job: str = "patient_job") -> None:
    """Record a run per request, as the scheduler daemon does when it launches them (without executing)."""
    job_def = defs.resolve_job_def(f"{dataset_id}__{job}")
    for r in requests:
        instance.create_run_for_job(job_def, tags={"dagster/run_key": r.run_key, "dagster/partition": r.partition_key})


def touch(path) -> None:
    time.sleep(0.01)
    os.utime(path, ns=(time.time_ns(), time.time_ns()))


def test_medical_schedule_requests_new_and_changed_patients_only(workspace):
    files_a = write_patient(workspace / "inbox" / "case_a", "PID-A")
    write_patient(workspace / "inbox" / "case_b", "PID-B", seed=1)
    key_a, key_b = pseudonymise("PID-A", "dicom-patient-id"), pseudonymise("PID-B", "dicom-patient-id")
    defs = build_definitions()
    schedule = defs.resolve_schedule_def("test_ds__inbox_schedule")
    assert schedule.job_name == "test_ds__patient_job"
    assert schedule.default_status == DefaultScheduleStatus.STOPPED
    with instance_for_test() as instance:
        first = tick(defs, "test_ds", instance)
        assert sorted(r.partition_key for r in first) == sorted([key_a, key_b])
        assert sorted(instance.get_dynamic_partitions("test_ds__patients")) == sorted([key_a, key_b])
        assert all(r.run_key.startswith(f"{r.partition_key}:") for r in first)
        state_file = schedule_state_path(storage_root(), "test_ds")
        assert state_file.name == SCHEDULE_STATE_FILE
        assert "PID-A" not in state_file.read_text() and "case_a" not in state_file.read_text()
        # an evaluation whose runs were never launched (a dry run) suppresses nothing
        assert [r.run_key for r in tick(defs, "test_ds", instance)] == [r.run_key for r in first]
        launch(defs, "test_ds", instance, first)

        assert tick(defs, "test_ds", instance) == []  # unchanged inbox: nothing

        touch(files_a[0])
        (changed,) = tick(defs, "test_ds", instance)
        assert changed.partition_key == key_a and changed.run_key not in {r.run_key for r in first}
        launch(defs, "test_ds", instance, [changed])
        assert tick(defs, "test_ds", instance) == []

        state_file.unlink()  # the cache is lost: headers are read again, but nothing is requested twice
        assert tick(defs, "test_ds", instance) == []


def test_schedule_and_sensor_share_the_scan(workspace):
    from dagster import build_sensor_context

    from imaging_pipelines.medical.inbox_scan import scan_patients

    write_patient(workspace / "inbox" / "case_a", "PID-A")
    dataset = load_catalog()[0]
    scan = scan_patients(dataset, {})
    assert scan.keys == [pseudonymise("PID-A", "dicom-patient-id")] and [k for k, _ in scan.requests] == scan.keys
    assert scan_patients(dataset, scan.state).requests == []
    defs = build_definitions()
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_sensor_def("test_ds__inbox_sensor")(build_sensor_context(instance=instance, definitions=defs, resources=defs.resources))
        assert json.loads(result.cursor) == scan.state
        assert [(r.partition_key, r.run_key) for r in result.run_requests] == [(k, f"{k}:{d}") for k, d in scan.requests]


def test_remote_sensing_schedule_requests_changed_scenes_only(tmp_path, monkeypatch):
    from imaging_pipelines.tools.demo.scenes import write_demo_scenes

    monkeypatch.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(tmp_path))
    monkeypatch.setenv("IMAGING_PIPELINES_STORAGE_ROOT", str(tmp_path / "storage"))
    monkeypatch.setenv("IMAGING_PIPELINES_CATALOG", str(catalog_entry(tmp_path, "demo_scenes", "inbox")))
    scenes = write_demo_scenes(tmp_path / "inbox", n_scenes=2, size=160, n_dates=2, seed=2)
    defs = build_definitions()
    assert defs.resolve_schedule_def("demo_scenes__inbox_schedule").job_name == "demo_scenes__tile_job"
    with instance_for_test() as instance:
        keys = sorted(r.partition_key for r in tick(defs, "demo_scenes", instance))
        assert {k.split("__")[0] for k in keys} == {s["name"] for s in scenes} and len(keys) == 2 * 4
        assert sorted(instance.get_dynamic_partitions("demo_scenes__tiles")) == keys
        launch(defs, "demo_scenes", instance, tick(defs, "demo_scenes", instance), job="tile_job")
        assert tick(defs, "demo_scenes", instance) == []
        changed = scenes[0]["name"]
        touch(next((tmp_path / "inbox" / changed).rglob("*_B4.tif")))
        again = tick(defs, "demo_scenes", instance)
        assert sorted(r.partition_key for r in again) == [k for k in keys if k.startswith(changed + "__")]
        launch(defs, "demo_scenes", instance, again, job="tile_job")
        assert tick(defs, "demo_scenes", instance) == []


def test_catalog_schedule_block_is_validated(workspace):
    catalog = workspace / "catalog" / "test_ds.yaml"
    base = catalog.read_text()
    assert load_catalog()[0].schedule.enabled is False
    catalog.write_text(base + 'schedule: {cron: "30 2 * * 1-5", timezone: Europe/Berlin, enabled: true}\n')
    (dataset,) = load_catalog()
    assert (dataset.schedule.cron, dataset.schedule.timezone) == ("30 2 * * 1-5", "Europe/Berlin")
    schedule = build_definitions().resolve_schedule_def("test_ds__inbox_schedule")
    assert schedule.cron_schedule == "30 2 * * 1-5" and schedule.execution_timezone == "Europe/Berlin"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
    for block, field in (('{cron: "61 * * * *"}', "schedule.cron"), ("{timezone: Mars/Olympus}", "schedule.timezone"),
                         ("{every: 5}", "schedule.every")):
        catalog.write_text(base + f"schedule: {block}\n")
        with pytest.raises(CatalogError) as err:
            load_catalog()
        assert [e[1] for e in err.value.errors] == [field]


def test_policies_on_the_shipped_catalog_assets():
    defs = build_definitions(DEFAULT_CATALOG_DIR)
    graph = defs.resolve_asset_graph()
    partitioned = [k for k in graph.get_all_asset_keys() if graph.get(k).is_partitioned]
    assert {k.path[0] for k in partitioned} == {d.id for d in load_catalog(DEFAULT_CATALOG_DIR)}
    for key in partitioned:
        assets_def = defs.resolve_assets_def(key)
        policy = assets_def.backfill_policy
        assert policy.policy_type.value == "MULTI_RUN" and policy.max_partitions_per_run == 1, key
        retry = assets_def.op.retry_policy
        assert retry.max_retries == 2 and retry.backoff.value == "EXPONENTIAL" and retry.jitter is not None, key
    for key in (AssetKey(["demo_cohort", "segmentation"]), AssetKey(["demo_scenes", "tile_segmentation"])):
        assert defs.resolve_assets_def(key).op.pool == "gpu"
    # models are not retried (an unexpected error would retrain twice)
    assert defs.resolve_assets_def(AssetKey(["demo_cohort", "segmentation_model"])).op.retry_policy is None
    names = {s.name for s in defs.sensors}
    assert {"run_failure_recorder", "run_success_recorder"} <= names


def _recorder_context(name: str, result, instance, event):
    return build_run_status_sensor_context(sensor_name=name, dagster_event=event, dagster_instance=instance,
                                           dagster_run=result.dagster_run, resources={"storage": ImagingStorage()})


def test_failed_run_is_recorded_without_retries_and_cleared_by_a_success(workspace):
    files_a = write_patient(workspace / "inbox" / "case_a", "PID-A")
    key_a = pseudonymise("PID-A", "dicom-patient-id")
    data = files_a[2].read_bytes()
    files_a[2].write_bytes(data[: len(data) // 2])  # truncated: bad input
    defs = build_definitions()
    failure_sensor = defs.resolve_sensor_def("run_failure_recorder")
    success_sensor = defs.resolve_sensor_def("run_success_recorder")
    job = defs.resolve_job_def("test_ds__patient_job")
    with instance_for_test() as instance:
        tick(defs, "test_ds", instance)
        failed = job.execute_in_process(partition_key=key_a, instance=instance, raise_on_error=False)
        assert not failed.success
        types = [e.event_type_value for e in failed.all_events]
        assert "STEP_UP_FOR_RETRY" not in types and types.count("STEP_FAILURE") == 1  # Failure(allow_retries=False)
        failure_sensor(_recorder_context("run_failure_recorder", failed, instance,
                                         failed.get_run_failure_event()).for_run_failure())
        (record,) = read_failures(storage_root(), "test_ds")
        assert record["partition"] == key_a and record["dataset"] == "test_ds"
        assert record["failed_assets"] == ["ingested_scans"] and record["run_id"] == failed.run_id
        assert files_a[2].name in record["error"]
        raw = (storage_root() / "test_ds" / FAILURES_FILE).read_text()
        assert "PID-A" not in raw and "DOE" not in raw and "General Hospital" not in raw

        files_a[2].write_bytes(data)  # repaired
        ok = job.execute_in_process(partition_key=key_a, instance=instance, raise_on_error=False)
        assert ok.success
        success_sensor(_recorder_context("run_success_recorder", ok, instance, ok.get_run_success_event()))
        assert read_failures(storage_root(), "test_ds") == []
        lines = [json.loads(line) for line in raw.splitlines()]
        assert [r["status"] for r in lines] == ["failed"]
        # a success of a partition without an open failure writes nothing
        success_sensor(_recorder_context("run_success_recorder", ok, instance, ok.get_run_success_event()))
        assert len((storage_root() / "test_ds" / FAILURES_FILE).read_text().splitlines()) == 2


def test_cohort_report_lists_failures_of_runs_no_sensor_saw(workspace):
    """Runs executed in process (no daemon, no sensor): the cohort report still lists the failed partition,
    and a later success clears it."""
    from imaging_pipelines.dagster_layer.local_runs import materialise_partitions, run_job, run_sensor_once
    from imaging_pipelines.dagster_layer.operations import reconcile_failures, record_run_outcome

    write_patient(workspace / "inbox" / "case_a", "PID-A")
    files_b = write_patient(workspace / "inbox" / "case_b", "PID-B", seed=1)
    data = files_b[2].read_bytes()
    files_b[2].write_bytes(data[: len(data) // 2])
    key_b = pseudonymise("PID-B", "dicom-patient-id")
    defs = build_definitions()
    with instance_for_test() as instance:
        keys = [r.partition_key for r in run_sensor_once(defs, "test_ds", instance).run_requests]
        results = materialise_partitions(defs, "test_ds", keys, instance, progress=False)
        assert [k for k, r in results.items() if not r.success] == [key_b]
        assert read_failures(storage_root(), "test_ds") == []  # no sensor ran
        report = run_job(defs, "test_ds__cohort_job", instance)
        assert report.success
        html = (storage_root() / "test_ds" / "reports" / "index.html").read_text()
        assert "1 failure(s)" in html and "no failures" not in html and key_b in html
        (failure,) = read_failures(storage_root(), "test_ds")
        assert failure["partition"] == key_b and failure["failed_assets"] == ["ingested_scans"]
        files_b[2].write_bytes(data)
        assert materialise_partitions(defs, "test_ds", [key_b], instance, progress=False)[key_b].success
        assert run_job(defs, "test_ds__cohort_job", instance).success
        assert "no failures" in (storage_root() / "test_ds" / "reports" / "index.html").read_text()
        assert read_failures(storage_root(), "test_ds") == []
        files_b[2].write_bytes(data[: len(data) // 2])  # fails again: the earlier success must not clear it
        assert not materialise_partitions(defs, "test_ds", [key_b], instance, progress=False)[key_b].success
        assert run_job(defs, "test_ds__cohort_job", instance).success
        (again,) = read_failures(storage_root(), "test_ds")
        assert again["partition"] == key_b and again["run_id"] != failure["run_id"]
        # a success no one recorded, then a failure a sensor recorded: the older success must not clear it
        files_b[2].write_bytes(data)
        assert materialise_partitions(defs, "test_ds", [key_b], instance, progress=False)[key_b].success
        files_b[2].write_bytes(data[: len(data) // 2])
        last = materialise_partitions(defs, "test_ds", [key_b], instance, progress=False)[key_b]
        record_run_outcome(storage_root(), instance, last.run_id, {"test_ds"})  # as the run-failure sensor does
        reconcile_failures(storage_root(), instance, "test_ds")
        assert [f["run_id"] for f in read_failures(storage_root(), "test_ds")] == [last.run_id]
