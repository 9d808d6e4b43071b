"""The Dagster layer end to end: sensor -> dynamic partitions -> ingestion job -> OME-Zarr stores."""

from __future__ import annotations

import json

import pytest
from dagster import DagsterInstance, build_sensor_context

from imaging_pipelines.dagster_layer.factory import build_definitions
from imaging_pipelines.medical.io.ome_zarr import read_volume_store
from imaging_pipelines.core.storage import partition_store_path, storage_root
from imaging_pipelines.core.privacy import pseudonymise
from tests.dicom_factory import write_basic_text_sr
from tests.conftest import write_catalog
from tests.pipeline_helpers import materialization_metadata, run_pipeline, write_patient


def store_bytes(path) -> dict:
    from pathlib import Path

    root = Path(str(path))
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_definitions_load_from_shipped_catalog():
    from imaging_pipelines.definitions import defs

    assert defs.resolve_job_def("demo_cohort__patient_job") is not None
    assert defs.resolve_sensor_def("demo_cohort__inbox_sensor") is not None


def test_sensor_adds_partitions_and_requests_runs_once(workspace):
    write_patient(workspace / "inbox" / "case_a", "PID-A")
    write_patient(workspace / "inbox" / "case_b", "PID-B", seed=1)
    defs = build_definitions()
    sensor = defs.resolve_sensor_def("test_ds__inbox_sensor")
    with DagsterInstance.ephemeral() as instance:
        first = sensor(build_sensor_context(instance=instance, definitions=defs, resources=defs.resources))
        keys = {pseudonymise("PID-A", "dicom-patient-id"), pseudonymise("PID-B", "dicom-patient-id")}
        assert {r.partition_key for r in first.run_requests} == keys
        assert set(first.dynamic_partitions_requests[0].partition_keys) == keys
        instance.add_dynamic_partitions("test_ds__patients", sorted(keys))
        # unchanged inbox: no new requests
        again = sensor(build_sensor_context(instance=instance, definitions=defs, resources=defs.resources, cursor=first.cursor))
        assert not again.run_requests and not again.dynamic_partitions_requests
        # a new file for a known patient re-materialises that patient only
        write_patient(workspace / "inbox" / "case_a" / "second", "PID-A", series_number=2, seed=3)
        third = sensor(build_sensor_context(instance=instance, definitions=defs, resources=defs.resources, cursor=again.cursor))
        assert [r.partition_key for r in third.run_requests] == [pseudonymise("PID-A", "dicom-patient-id")]
        assert not third.dynamic_partitions_requests
        assert "PID-A" not in third.cursor and "case_a" not in third.cursor


def test_ingestion_writes_store_and_metadata(workspace):
    write_patient(workspace / "inbox" / "case_a", "PID-A")
    with DagsterInstance.ephemeral() as instance:
        _, runs = run_pipeline(instance)
        (key,) = runs
        assert runs[key].success
        store = partition_store_path(storage_root(), "test_ds", "ingested_scans", key)
        images = read_volume_store(store)
        assert list(images) == ["s001_t1_ax"] and images["s001_t1_ax"].spatial_shape == (6, 16, 12)
        meta = materialization_metadata(instance, "test_ds", key)
        assert meta["series_count"].value == 1
        assert meta["orientation"].value == "LPS"
        assert meta["storage_path"].value == str(store)
        assert meta["spacing_mm"].value == "0.9, 0.9, 3"


def test_truncated_file_fails_only_that_patient_and_keeps_its_store(workspace):
    files_a = write_patient(workspace / "inbox" / "case_a", "PID-A")
    write_patient(workspace / "inbox" / "case_b", "PID-B", seed=1)
    key_a = pseudonymise("PID-A", "dicom-patient-id")
    with DagsterInstance.ephemeral() as instance:
        _, runs = run_pipeline(instance)
        assert all(r.success for r in runs.values())
        store_a = partition_store_path(storage_root(), "test_ds", "ingested_scans", key_a)
        before = store_bytes(store_a)
        # cut one of A's files in half and touch B, then run again
        data = files_a[2].read_bytes()
        files_a[2].write_bytes(data[: len(data) // 2])
        write_patient(workspace / "inbox" / "case_b" / "extra", "PID-B", series_number=5, seed=4)
        _, runs = run_pipeline(instance)
        assert not runs[key_a].success
        failure = next(e for e in runs[key_a].all_events if e.event_type_value == "STEP_FAILURE")
        assert files_a[2].name in failure.event_specific_data.error.message
        assert [k for k, r in runs.items() if r.success] == [pseudonymise("PID-B", "dicom-patient-id")]
        assert store_bytes(store_a) == before


def test_missing_slice_non_image_and_non_dicom_files_are_reported(workspace):
    folder = workspace / "inbox" / "case_c"
    files = write_patient(folder, "PID-C", shape=(8, 16, 12))
    files[4].unlink()  # a missing slice
    write_basic_text_sr(folder / "report.dcm", patient_id="PID-C")
    (folder / "notes.txt").write_text("scanned on the new machine\n")
    with DagsterInstance.ephemeral() as instance:  # by default an incomplete series fails, saying what is missing
        _, runs = run_pipeline(instance)
        (key,) = runs
        assert not runs[key].success
        failure = next(e for e in runs[key].all_events if e.event_type_value == "STEP_FAILURE")
        message = failure.event_specific_data.error.message
        assert "incomplete DICOM series" in message and files[3].name in message and files[5].name in message
        assert "InstanceNumber(s) 5 missing of 1..8" in message
    write_catalog(workspace, inbox_checks="{allow_incomplete_series: true}")  # ingest it anyway, with warnings
    with DagsterInstance.ephemeral() as instance:
        _, runs = run_pipeline(instance)
        (key,) = runs
        assert runs[key].success
        meta = materialization_metadata(instance, "test_ds", key)
        warnings = meta["warnings"].value
        assert files[3].name in warnings and files[5].name in warnings
        notes = meta["notes"].value
        assert "report.dcm" in notes and "notes.txt" in notes


def test_patients_of_mixed_formats_and_two_series_in_one_folder(workspace):
    folder = workspace / "inbox" / "case_d"
    write_patient(folder, "PID-D", series_number=3)
    write_patient(folder, "PID-D", series_number=4, shape=(5, 10, 10), seed=2)
    import nibabel as nib
    import numpy as np

    (workspace / "inbox" / "nifti").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.eye(4)), workspace / "inbox" / "nifti" / "sub-7_T2w.nii.gz")
    with DagsterInstance.ephemeral() as instance:
        _, runs = run_pipeline(instance)
        assert len(runs) == 2 and all(r.success for r in runs.values())
        by_key = {k: read_volume_store(partition_store_path(storage_root(), "test_ds", "ingested_scans", k)) for k in runs}
        names = sorted(sorted(v) for v in by_key.values())
        assert names == [["s003_t1_ax", "s004_t1_ax"], ["t2w"]]


def test_zarr_attributes_are_json_and_non_identifying(workspace):
    write_patient(workspace / "inbox" / "case_a", "PID-A")
    with DagsterInstance.ephemeral() as instance:
        run_pipeline(instance)
    texts = [p.read_text() for p in (workspace / "storage").rglob("zarr.json")]
    assert texts and all(json.loads(t) for t in texts)
    assert not any(s in t for t in texts for s in ("PID-A", "DOE", "JANE", "19700101", "ACC0000001", "General Hospital"))


def test_remote_inbox_through_fsspec(workspace, tmp_path, monkeypatch):
    """An inbox given as an fsspec URI (memory:// here, s3:// in production) is listed, cached and ingested."""
    from upath import UPath

    monkeypatch.setenv("IMAGING_PIPELINES_INBOX_CACHE", str(tmp_path / "cache"))
    catalog = workspace / "catalog" / "test_ds.yaml"
    catalog.write_text(catalog.read_text().replace("inbox: ../inbox", "inbox: memory://scanner-out/study"))
    files = write_patient(tmp_path / "local" / "case_r", "PID-R")
    remote = UPath("memory://scanner-out/study/case_r")
    for f in files:
        remote.fs.put_file(str(f), f"{remote.path}/{f.name}")
    try:
        with DagsterInstance.ephemeral() as instance:
            _, runs = run_pipeline(instance)
            assert list(runs) == [pseudonymise("PID-R", "dicom-patient-id")]
            assert all(r.success for r in runs.values())
            images = read_volume_store(partition_store_path(storage_root(), "test_ds", "ingested_scans", next(iter(runs))))
            assert images["s001_t1_ax"].spatial_shape == (6, 16, 12)
    finally:
        remote.fs.rm("/scanner-out", recursive=True)
