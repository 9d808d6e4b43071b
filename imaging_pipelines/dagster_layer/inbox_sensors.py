"""Inbox sensors: scan a dataset's inbox, add the new partitions and request a run for each new or
changed one (run key = partition key + digest of its files, so a partition runs once per version of its
files). The scan itself is the domain's (:mod:`imaging_pipelines.medical.inbox_scan`,
:mod:`imaging_pipelines.remote_sensing.inbox_scan`); the cursor keeps the scan state (hashes of paths
with size and mtime, never the paths). A medical scan also writes the inbox index of the changed
partitions under the storage root (:mod:`imaging_pipelines.medical.inbox_index`) for their runs to read."""

from __future__ import annotations

import json
from collections.abc import Callable

from upath import UPath
from dagster import (
    DefaultSensorStatus,
    DynamicPartitionsDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.inbox_scan import InboxScan
from imaging_pipelines.dagster_layer.resources import ImagingStorage
from imaging_pipelines.medical.inbox_scan import scan_patients

# (dataset, previous scan state, storage root for the inbox index or None) -> scan
Scanner = Callable[[DatasetConfig, dict | None, UPath | None], InboxScan]


def inbox_scanner(dataset: DatasetConfig) -> Scanner:
    """The inbox scan of the dataset's domain (patients or scene tiles)."""
    if dataset.domain == "medical":
        return scan_patients
    from imaging_pipelines.remote_sensing.inbox_scan import scan_scenes  # rasterio only for raster datasets

    return scan_scenes


def log_scan_messages(log, scan: InboxScan) -> None:
    """An inbox scan's warnings and errors into a Dagster log (sensor or schedule)."""
    for message in scan.warnings:
        log.warning(message)
    for message in scan.errors:
        log.error(message)


def inbox_sensor_result(context: SensorEvaluationContext, scan: InboxScan, partitions: DynamicPartitionsDefinition,
                        skip_message: str) -> SensorResult:
    """The sensor's answer to a scan: partitions to add, one run per new or changed partition (run key =
    partition key + digest of its files), and the scan state as the cursor."""
    log_scan_messages(context.log, scan)
    existing = set(context.instance.get_dynamic_partitions(partitions.name))
    new_keys = [k for k in scan.keys if k not in existing]
    cursor = json.dumps(scan.state, sort_keys=True)
    if not scan.requests and not new_keys:
        return SensorResult(skip_reason=SkipReason(skip_message), cursor=cursor)
    return SensorResult(
        run_requests=[RunRequest(partition_key=k, run_key=f"{k}:{digest}") for k, digest in scan.requests],
        dynamic_partitions_requests=[partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=cursor,
    )


def build_inbox_sensor(dataset: DatasetConfig, partitions: DynamicPartitionsDefinition, job) -> SensorDefinition:
    """``<id>__inbox_sensor``: a partition per new patient (medical) or per tile of a new scene (remote
    sensing); a run for each partition whose files are new or changed. The inbox index goes under the root
    of the code location's ``storage`` resource."""
    scan = inbox_scanner(dataset)
    unit = "patient" if dataset.domain == "medical" else "scene"

    @sensor(
        name=f"{dataset.id}__inbox_sensor",
        job=job,
        minimum_interval_seconds=dataset.sensor.interval_seconds,
        default_status=DefaultSensorStatus.RUNNING if dataset.sensor.running_by_default else DefaultSensorStatus.STOPPED,
        description=f"Watches {dataset.id}'s inbox; adds the partitions of each new {unit} and reruns the "
                    f"partitions of each {unit} whose files changed.",
    )
    def inbox_sensor(context: SensorEvaluationContext, storage: ImagingStorage):
        result = scan(dataset, json.loads(context.cursor) if context.cursor else {}, storage.root_path())
        return inbox_sensor_result(context, result, partitions, f"no new or changed {unit}s")

    return inbox_sensor
