"""Execute runs of a dataset's jobs without a webserver or daemon: one run in this process, or many runs
at once in a pool of worker processes, every run recorded in the same Dagster instance.

Parallelism across partitions comes from concurrent runs (one run per partition, as the sensor and
backfills launch them). Within a run the steps execute in the run's own process (``execute_in_process``)
unless a deployment file (``IMAGING_PIPELINES_DEPLOYMENT``) selects an out-of-process executor
(multiprocess, Dask, k8s), which ``dagster.execute_job`` then uses through the reconstructable job.

The pool (:class:`RunPool`) is the one place to tune throughput: worker count, start method, how runs are
handed out. Workers are started with ``spawn`` (a fork of a process holding open SQLite connections and
Dagster's logging locks is unsafe) and each builds the definitions once (cached per process) and opens the
same instance from its reference once, for all of its runs, so the pool needs a persistent instance (an ephemeral one runs everything in this process).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from dagster import AssetCheckSeverity, AssetKey, DagsterInstance, Definitions, execute_job
from dagster._core.instance.ref import InstanceRef

from imaging_pipelines.config.deployment import deployment_path, load_deployment
from imaging_pipelines.dagster_layer.local_runs import QUIET_CONSOLE, hold_sqlite_databases
from imaging_pipelines.dagster_layer.reconstructable import cached_definitions, reconstructable_job

PARTITION_TAG = "dagster/partition"


@dataclass(frozen=True)
class RunSpec:
    """One run to execute (picklable: it crosses to worker processes). ``assets``: asset key paths."""

    job: str
    assets: tuple[tuple[str, ...], ...]
    partition: str | None = None
    tags: tuple[tuple[str, str], ...] = ()


@dataclass
class RunOutcome:
    """What one run did: ``error`` is the first step failure's message ("" on success); ``metadata``: per
    asset name, the materialisation metadata (plain values) of the assets the run materialised."""

    spec: RunSpec
    success: bool
    run_id: str = ""
    error: str = ""
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)


def steps_in_run_process() -> bool:
    """True unless the deployment file selects an executor other than ``in_process``."""
    return deployment_path() is None or load_deployment().executor.kind == "in_process"


def _outcome(spec: RunSpec, result) -> RunOutcome:
    name = spec.partition or spec.job
    out = RunOutcome(spec, bool(result.success), result.run_id)
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.passed:
            out.checks_passed += 1
        else:
            warning = " (severity WARN)" if evaluation.severity == AssetCheckSeverity.WARN else ""
            out.checks_failed.append(f"{name} {evaluation.asset_key.to_user_string()} {evaluation.check_name}{warning}")
    for event in result.get_step_failure_events():
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            out.error = error.message.strip()
            break
    if not out.success and not out.error:
        out.error = "run failed before any step failed (see the run in the UI)"
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        out.metadata[materialization.asset_key.path[-1]] = {
            k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    return out


def execute_run(defs: Definitions, instance: DagsterInstance, spec: RunSpec) -> RunOutcome:
    """Execute one run in this process and record it in ``instance`` (exceptions become a failed outcome)."""
    selection = [AssetKey(list(p)) for p in spec.assets]
    tags = dict(spec.tags)
    try:
        if steps_in_run_process():
            result = defs.resolve_job_def(spec.job).execute_in_process(
                partition_key=spec.partition, instance=instance, raise_on_error=False, run_config=QUIET_CONSOLE,
                asset_selection=selection, tags=tags)
        else:
            if spec.partition is not None:
                tags[PARTITION_TAG] = spec.partition
            result = execute_job(reconstructable_job(spec.job), instance, run_config=QUIET_CONSOLE, tags=tags,
                                 asset_selection=selection)
    except Exception as exc:  # noqa: BLE001 - a run that could not even start fails alone
        return RunOutcome(spec, False, error=f"{type(exc).__name__}: {exc}")
    return _outcome(spec, result)


_worker: dict[str, Any] = {}  # per worker process: its definitions and instance, built once


def _start_worker(instance_ref: InstanceRef) -> None:
    """Once per worker process: the definitions (the per-process cache that :func:`load_job` also uses, so a
    reconstructable job does not rebuild them) and the one instance every run of this worker records in
    (its SQLite databases held open: :func:`hold_sqlite_databases`)."""
    _worker["defs"] = cached_definitions()
    _worker["instance"] = DagsterInstance.from_ref(instance_ref)
    hold_sqlite_databases(_worker["instance"])


def _run_in_worker(spec: RunSpec) -> RunOutcome:
    return execute_run(_worker["defs"], _worker["instance"], spec)


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


class RunPool:
    """Execute batches of runs, ``workers`` at a time. One worker (or a non-persistent instance): in this
    process, one run after the other. Otherwise a pool of ``spawn``-ed worker processes, started on the
    first batch that has more than one run and kept for the later batches (phases) of the same command;
    each worker builds the definitions from the environment (catalog, deployment, storage root) and opens
    ``instance`` from its reference."""

    def __init__(self, defs: Definitions, instance: DagsterInstance, workers: int | None = None):
        self.defs, self.instance = defs, instance
        self.workers = max(1, workers or default_workers()) if instance.is_persistent else 1
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> RunPool:
        return self

    def __exit__(self, *exc) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def run(self, specs: list[RunSpec]) -> Iterator[RunOutcome]:
        """Execute ``specs``; yield each outcome as its run finishes (in completion order)."""
        if self.workers == 1 or len(specs) <= 1:
            for spec in specs:
                yield execute_run(self.defs, self.instance, spec)
            return
        if self._executor is None:
            self._executor = ProcessPoolExecutor(max_workers=self.workers, initializer=_start_worker,
                                                 initargs=(self.instance.get_ref(),),
                                                 mp_context=multiprocessing.get_context("spawn"))
        futures = {self._executor.submit(_run_in_worker, spec): spec for spec in specs}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as exc:  # noqa: BLE001 - a worker died (killed, out of memory): that run failed
                yield RunOutcome(futures[future], False, error=f"worker process failed: {type(exc).__name__}: {exc}")
