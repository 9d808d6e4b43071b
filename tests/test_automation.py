"""Declarative automation of the cohort-level assets: the cohort evaluation and report are requested after a new
patient partition of their upstream has been materialised, not when nothing changed, and not held back by a
patient that is registered but has no materialisation (yet, or because its run failed)."""

from __future__ import annotations

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    DefaultSensorStatus,
    evaluate_automation_conditions,
)

from imaging_pipelines.dagster_layer.factory import build_definitions
from tests.conftest import write_catalog

COHORT = sorted([AssetKey(["test_ds", "segmentation_cohort_evaluation"]), AssetKey(["test_ds", "cohort_report"])])
PER_PATIENT = ["ingested_scans", "preprocessed", "segmentation", "segmentation_evaluation", "patient_report"]


@pytest.fixture
def defs(workspace):
    write_catalog(workspace, segmentation='{method: otsu, modalities: [MR], classes: {lesion: 5}, '
                                          'labels: {source: inbox}}')
    return build_definitions()


def materialise(instance: DagsterInstance, partition: str | None = None, names: list[str] = PER_PATIENT) -> None:
    """Record materialisations as a finished run would (the asset bodies themselves are tested elsewhere)."""
    for name in names:
        instance.report_runless_asset_event(AssetMaterialization(AssetKey(["test_ds", name]), partition=partition))


def requested(result) -> list[AssetKey]:
    return sorted(k for k in COHORT if result.get_num_requested(k))


def test_automated_assets_and_running_sensor(defs):
    graph = defs.resolve_asset_graph()
    automated = {k.path[-1] for k in graph.get_all_asset_keys() if graph.get(k).automation_condition is not None}
    assert automated == {"segmentation_cohort_evaluation", "cohort_report"}
    sensor = defs.resolve_sensor_def("default_automation_condition_sensor")
    assert sensor.default_status == DefaultSensorStatus.RUNNING


def test_cohort_assets_refresh_after_a_new_partition_lands(defs):
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("test_ds__patients", ["p1"])
        materialise(instance, "p1")
        materialise(instance, None, [k.path[-1] for k in COHORT])
        first = evaluate_automation_conditions(defs=defs, instance=instance)
        assert requested(first) == []  # nothing changed since the cohort summaries were made

        instance.add_dynamic_partitions("test_ds__patients", ["p2"])
        materialise(instance, "p2")
        second = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert requested(second) == COHORT  # the new patient's evaluation and report landed

        idle = evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)
        assert requested(idle) == []  # requested once, not on every tick
        materialise(instance, None, [k.path[-1] for k in COHORT])  # the requested run
        after = evaluate_automation_conditions(defs=defs, instance=instance, cursor=idle.cursor)
        assert requested(after) == []

        # p3 is registered by the sensor but not materialised (its run failed): p1's refresh still counts
        instance.add_dynamic_partitions("test_ds__patients", ["p3"])
        materialise(instance, "p1")
        blocked = evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor)
        assert requested(blocked) == COHORT
