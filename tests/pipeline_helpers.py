"""Run the real Dagster definitions (sensor + ingestion job) against an instance, for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from dagster import DagsterEventType, EventRecordsFilter

from imaging_pipelines.dagster_layer.local_runs import materialise_partitions, run_sensor_once
from imaging_pipelines.dagster_layer.factory import build_definitions
from imaging_pipelines.tools.demo.dicom_writer import PatientIdentity, write_dicom_series
from imaging_pipelines.core.volume import Volume


def run_pipeline(instance, dataset_id: str = "test_ds"):
    """Evaluate the inbox sensor once and run every requested partition; returns (sensor result, runs)."""
    defs = build_definitions()
    sensor_result = run_sensor_once(defs, dataset_id, instance)
    keys = [r.partition_key for r in sensor_result.run_requests or []]
    return sensor_result, materialise_partitions(defs, dataset_id, keys, instance, progress=False)


def materialization_metadata(instance, dataset_id: str, partition: str) -> dict:
    from dagster import AssetKey

    records = instance.get_event_records(
        EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION, asset_key=AssetKey([dataset_id, "ingested_scans"]),
                           asset_partitions=[partition]),
        limit=1,
    )
    return records[0].asset_materialization.metadata if records else {}


def run_metadata(result, key) -> dict:
    """The metadata values of the one materialisation of asset ``key`` in a run ``result``."""
    (m,) = [e.step_materialization_data.materialization for e in result.get_asset_materialization_events()
            if e.step_materialization_data.materialization.asset_key == key]
    return {k: getattr(v, "value", v) for k, v in m.metadata.items()}


def identity(patient_id: str, name: str = "DOE^JANE") -> PatientIdentity:
    return PatientIdentity(
        patient_name=name, patient_id=patient_id, birth_date="19700101", sex="F", accession_number="ACC0000001",
        institution_name="General Hospital", referring_physician="WHO^DR", study_date="20240101",
    )


def write_patient(folder: Path, patient_id: str, shape=(6, 16, 12), series_number: int = 1, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    vol = Volume(rng.integers(0, 1000, shape).astype(np.int16), spacing=(0.9, 0.9, 3.0), origin=(-5.0, -8.0, 12.0))
    return write_dicom_series(vol, folder, patient=identity(patient_id), series_number=series_number,
                              series_description="T1 AX", file_prefix=f"S{series_number:02d}_IM")
