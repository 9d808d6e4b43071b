"""Blocking checks stop a bad partition before segmentation: a scan with NaN voxels fails `voxels_finite` on
ingested_scans, a blank scan (empty foreground mask) fails `foreground_mask_not_empty` on preprocessed; their
segmentation step never runs while the good partition goes through, and the cohort report lists both as failed
(through the run-failure recorder)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from dagster import AssetKey, build_run_status_sensor_context, instance_for_test

from imaging_pipelines.core.stage_result import CheckOutcome
from imaging_pipelines.core.storage import storage_root
from imaging_pipelines.core.volume import Volume
from imaging_pipelines.dagster_layer.factory import build_definitions
from imaging_pipelines.dagster_layer.local_runs import materialise_partitions, run_job, run_sensor_once
from imaging_pipelines.dagster_layer.operations import read_failures
from imaging_pipelines.dagster_layer.resources import ImagingStorage
from imaging_pipelines.medical.stages.quality_checks import geometry_problem, ingestion_checks, mask_checks
from tests.conftest import write_catalog


def phantom(seed: int) -> np.ndarray:
    """A bright ellipsoid on a dark noisy background (Otsu finds it)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:32, :40, :40]
    inside = ((z - 16) / 13) ** 2 + ((y - 20) / 16) ** 2 + ((x - 20) / 16) ** 2 <= 1
    return (np.where(inside, 400.0, 40.0) + rng.normal(0, 5, inside.shape)).astype(np.float32)


def step_keys(result, event_type: str) -> set[str]:
    return {e.step_key.split("__", 1)[-1] for e in result.all_events if e.event_type_value == event_type}


def test_bad_partitions_stop_before_segmentation_and_are_reported(workspace):
    inbox = workspace / "inbox"
    nan = phantom(1)
    nan[16, 20, 20:24] = np.nan
    scans = {"sub-good": phantom(0), "sub-nan": nan, "sub-blank": np.full((32, 40, 40), 50.0, np.float32)}
    for subject, array in scans.items():
        nib.save(nib.Nifti1Image(array.T, np.diag([2.0, 2.0, 2.0, 1.0])), inbox / f"{subject}_T1w.nii.gz")
    write_catalog(workspace, file_modality="MR", preprocessing_recipe="demo_mr",
                  segmentation="{method: otsu, modalities: [MR], classes: {lesion: 5}, labels: {source: none}}")
    defs = build_definitions()
    with instance_for_test() as instance:
        keys = sorted({r.partition_key for r in run_sensor_once(defs, "test_ds", instance).run_requests})
        results = materialise_partitions(defs, "test_ds", keys, instance, progress=False)
        failed = {k: r for k, r in results.items() if not r.success}
        (good,) = [k for k, r in results.items() if r.success]
        assert len(failed) == 2

        assert "segmentation" in step_keys(results[good], "STEP_SUCCESS")
        stopped_at = {}
        for key, result in failed.items():
            assert "segmentation" not in step_keys(result, "STEP_START")  # never started
            (stopped_at[key],) = step_keys(result, "STEP_FAILURE")
            checks = {e.event_specific_data.check_name: e.event_specific_data.passed for e in result.all_events
                      if e.event_type_value == "ASSET_CHECK_EVALUATION"}
            assert checks.get("voxels_finite") is False or checks.get("foreground_mask_not_empty") is False, checks
            failure_sensor = defs.resolve_sensor_def("run_failure_recorder")
            failure_sensor(build_run_status_sensor_context(
                sensor_name="run_failure_recorder", dagster_event=result.get_run_failure_event(),
                dagster_instance=instance, dagster_run=result.dagster_run,
                resources={"storage": ImagingStorage()}).for_run_failure())
        assert sorted(stopped_at.values()) == ["ingested_scans", "preprocessed"]
        segmented = instance.fetch_materializations(AssetKey(["test_ds", "segmentation"]), limit=10).records
        assert [r.partition_key for r in segmented] == [good]
        # the failed check's asset is still materialised (the store is there to inspect)
        ingested = instance.fetch_materializations(AssetKey(["test_ds", "ingested_scans"]), limit=10).records
        assert sorted(r.partition_key for r in ingested) == keys

        records = read_failures(storage_root(), "test_ds")
        assert sorted(r["partition"] for r in records) == sorted(failed)
        assert all("blocking asset check" in r["error"] for r in records), records
        cohort = run_job(defs, "test_ds__cohort_job", instance)
        assert cohort is not None and cohort.success
    page = (storage_root() / "test_ds" / "reports" / "index.html").read_text()
    failed_section = page.split('id="failed"', 1)[1]
    for key in failed:
        assert key in failed_section
    assert "2 failure(s)" in failed_section


def test_ingestion_checks_flag_non_finite_voxels_and_bad_geometry():
    good = Volume(phantom(0), spacing=(1.0, 1.0, 2.0))
    checks = ingestion_checks({"a": good})
    assert all(c.passed for c in checks.values())
    bad = phantom(0)
    bad[0, 0, 0] = np.inf
    sheared = Volume(phantom(0), direction=np.array([[1.0, 0.2, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    checks = ingestion_checks({"a": good.with_array(bad), "b": sheared})
    assert not checks["voxels_finite"].passed and "a (1)" in checks["voxels_finite"].description
    assert not checks["geometry_valid"].passed and "b: direction" in checks["geometry_valid"].description
    assert geometry_problem(good) is None


@pytest.mark.parametrize(("mask", "passed"), [(None, True), (np.zeros((4, 5, 6), np.uint8), False),
                                              (np.ones((4, 5, 6), np.uint8), True)])
def test_brain_mask_check(mask, passed):
    labels = {} if mask is None else {"t1": {"brain_mask": Volume(mask)}}
    (outcome,) = mask_checks(labels, "brain_mask", "brain_mask_not_empty").values()
    assert isinstance(outcome, CheckOutcome) and outcome.passed is passed
