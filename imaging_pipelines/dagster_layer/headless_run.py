"""``imaging-pipelines run DATASET``: a whole dataset through its Dagster jobs, without webserver or daemon.

1. Scan the inbox with the sensor's scanner (the schedule's scan cache spares unchanged files a header
   read; the scan writes the inbox index the runs read their files from) and add new partitions to the
   instance (``DAGSTER_HOME``, created under ``var/dagster_home`` when unset).
2. Choose partitions: by default those new or changed, i.e. whose run key ``<partition>:<digest of its
   files>`` has no run yet (whoever launched it: sensor, schedule, an earlier ``run``); ``--all`` every
   partition of the inbox; ``--partitions`` the keys given.
3. Execute the plan (:mod:`imaging_pipelines.dagster_layer.run_plan`): per-partition runs of the
   partition job in a pool of worker processes (:mod:`imaging_pipelines.dagster_layer.run_pool`), the
   training job when models are needed, the remaining per-partition steps, then the cohort / mosaic job.
   A partition that fails is left out of the later phases; the others go on.

Every run is recorded in the persistent instance (visible in ``dg dev`` / ``make ui``) with the tags
``dagster/partition``, ``dagster/run_key`` (partition runs) and ``imaging_pipelines/dataset``.
The command waits for its runs: launching without waiting would need a run queue served by the daemon.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dagster import DagsterInstance, Definitions
from tqdm import tqdm

from imaging_pipelines.config.catalog import DatasetConfig, load_catalog
from imaging_pipelines.config.deployment import load_deployment
from imaging_pipelines.dagster_layer.backfill_client import DATASET_TAG
from imaging_pipelines.dagster_layer.factory import deployment_storage
from imaging_pipelines.dagster_layer.inbox_sensors import inbox_scanner
from imaging_pipelines.dagster_layer.local_runs import ensure_dagster_home
from imaging_pipelines.dagster_layer.operations import (
    RUN_KEY_TAG, launched_run_keys, load_schedule_state, record_run_outcome, save_schedule_state,
)
from imaging_pipelines.dagster_layer.run_plan import Phase, RunArgumentError, RunPlan, plan_dataset_run
from imaging_pipelines.dagster_layer.reconstructable import cached_definitions
from imaging_pipelines.dagster_layer.run_pool import RunOutcome, RunPool, RunSpec


@dataclass
class DatasetRunOutcome:
    """What ``run_dataset`` did. ``failed``: partition -> first step failure message (names the file);
    ``job_failures``: training / summary job -> error; ``metadata``: asset name -> materialisation
    metadata of the model and summary runs (for printed figures)."""

    dataset: str
    plan: RunPlan
    partitions: list[str] = field(default_factory=list)  # the partitions run
    up_to_date: int = 0  # partitions not run because their current files already have a run
    failed: dict[str, str] = field(default_factory=dict)
    job_failures: dict[str, str] = field(default_factory=dict)
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_ids: list[str] = field(default_factory=list)

    @property
    def succeeded(self) -> list[str]:
        return [k for k in self.partitions if k not in self.failed]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.job_failures


def find_dataset(dataset_id: str) -> DatasetConfig:
    """The catalog entry ``dataset_id``; :class:`RunArgumentError` listing the datasets when unknown."""
    datasets = load_catalog()
    for d in datasets:
        if d.id == dataset_id:
            return d
    raise RunArgumentError(f"unknown dataset {dataset_id!r}; datasets: {', '.join(d.id for d in datasets) or 'none'}")


def choose_partitions(instance: DagsterInstance, keys: list[str], run_keys: dict[str, str], known: set[str],
                      partitions: list[str] | None, all_partitions: bool) -> tuple[list[str], int]:
    """(partitions to run, number left out as up to date). ``keys``: the inbox's partitions now;
    ``known``: every partition the instance has (``--partitions`` may name one no longer in the inbox)."""
    if partitions and all_partitions:
        raise RunArgumentError("give --partitions K1,K2 or --all, not both")
    if all_partitions:
        return list(keys), 0
    if partitions:
        chosen = list(dict.fromkeys(partitions))
        unknown = [k for k in chosen if k not in known and k not in set(keys)]
        if unknown:
            raise RunArgumentError(f"unknown partition(s) {', '.join(unknown)}; the inbox has {len(keys)} partition(s)"
                                   + (f": {', '.join(keys[:20])}" if keys else ""))
        return chosen, 0
    launched = launched_run_keys(instance, list(run_keys.values()))
    chosen = [k for k in keys if run_keys[k] not in launched]
    return chosen, len(keys) - len(chosen)


def _spec(phase: Phase, partition: str | None, tags: dict[str, str]) -> RunSpec:
    return RunSpec(phase.job, tuple(tuple(k.path) for k in phase.assets), partition, tuple(sorted(tags.items())))


def _tally(outcome: DatasetRunOutcome, result: RunOutcome, pool: RunPool, root) -> None:
    """Add a run's figures to ``outcome`` and record its failure (or a cleared one) for the reports."""
    record_run_outcome(root, pool.instance, result.run_id, {outcome.dataset})
    outcome.run_ids.append(result.run_id)
    outcome.checks_passed += result.checks_passed
    outcome.checks_failed += result.checks_failed


def execute_plan(outcome: DatasetRunOutcome, pool: RunPool, run_keys: dict[str, str], root, progress: bool = True) -> None:
    """Run every phase of ``outcome.plan`` over ``outcome.partitions``, filling ``outcome`` in; failed runs
    are recorded under the storage ``root`` (``_failures.jsonl``) as the run-failure sensor would."""
    plan = outcome.plan
    for phase in plan.phases:
        if phase.kind == "partitions":
            active = [k for k in outcome.partitions if k not in outcome.failed]
            specs = [_spec(phase, k, {DATASET_TAG: plan.dataset, **({RUN_KEY_TAG: run_keys[k]} if k in run_keys else {})})
                     for k in active]
            unit = "tile" if plan.partition_job.endswith("__tile_job") else "patient"
            with tqdm(total=len(specs), desc=phase.label, unit=unit, disable=not progress) as bar:
                for result in pool.run(specs):
                    _tally(outcome, result, pool, root)
                    if not result.success:
                        outcome.failed[result.spec.partition] = result.error
                    bar.update(1)
                    bar.set_postfix(failed=len(outcome.failed))
            continue
        (result,) = pool.run([_spec(phase, None, {DATASET_TAG: plan.dataset})])
        _tally(outcome, result, pool, root)
        outcome.metadata.update(result.metadata)
        if not result.success:
            outcome.job_failures[phase.job] = result.error


def run_dataset(dataset_id: str, partitions: list[str] | None = None, all_partitions: bool = False,
                assets: list[str] | None = None, workers: int | None = None, defs: Definitions | None = None,
                instance: DagsterInstance | None = None, progress: bool = True,
                echo: Callable[[str], None] = print) -> DatasetRunOutcome:
    """Scan, register and run one dataset (see the module docstring). ``defs`` / ``instance`` default to
    the code location's definitions and the ``DAGSTER_HOME`` instance; a non-persistent instance runs
    everything in this process. Raises :class:`RunArgumentError` for an unknown dataset, asset or
    partition, or for both ``partitions`` and ``all_partitions``."""
    dataset = find_dataset(dataset_id)
    if partitions and all_partitions:
        raise RunArgumentError("give --partitions K1,K2 or --all, not both")
    defs = defs or cached_definitions()
    plan = plan_dataset_run(defs, dataset, assets)
    if instance is None:
        ensure_dagster_home()
        instance = DagsterInstance.get()
    root = deployment_storage(load_deployment()).root_path()
    scan = inbox_scanner(dataset)(dataset, load_schedule_state(root, dataset.id), root)
    save_schedule_state(root, dataset.id, scan.state)
    for message in scan.warnings + scan.errors:
        echo(f"{dataset.id}: {message}")
    known = set(instance.get_dynamic_partitions(plan.partitions_def))
    new_keys = [k for k in scan.keys if k not in known]
    if new_keys:
        instance.add_dynamic_partitions(plan.partitions_def, new_keys)
    run_keys = {k: f"{k}:{scan.digests[k]}" for k in scan.keys if k in scan.digests}
    outcome = DatasetRunOutcome(dataset.id, plan)
    outcome.partitions, outcome.up_to_date = choose_partitions(
        instance, scan.keys, run_keys, known, partitions, all_partitions)
    echo(f"{dataset.id}: {len(scan.keys)} partition(s) in the inbox ({len(new_keys)} new), "
         f"{len(outcome.partitions)} to run" + (f", {outcome.up_to_date} up to date" if outcome.up_to_date else ""))
    if not outcome.partitions:
        return outcome
    with RunPool(defs, instance, workers) as pool:
        execute_plan(outcome, pool, run_keys, root, progress)
    return outcome


def summary_lines(outcome: DatasetRunOutcome) -> list[str]:
    """The end-of-run summary: partitions done and failed, each failure's error, failed jobs and checks."""
    lines = [f"{outcome.dataset}: {len(outcome.succeeded)} partition(s) done, {len(outcome.failed)} failed; "
             f"asset checks: {outcome.checks_passed} passed, {len(outcome.checks_failed)} failed"]
    for key, error in outcome.failed.items():
        lines.append(f"  FAILED {key}: {error}")
    for job, error in outcome.job_failures.items():
        lines.append(f"  FAILED job {job}: {error}")
    lines += [f"  CHECK FAILED {c}" for c in outcome.checks_failed]
    return lines
