"""What a headless run of one dataset executes, in which order: the phases of its asset graph.

A dataset's chain has per-partition assets (one run per partition of ``<id>__patient_job`` /
``<id>__tile_job``), models (unpartitioned, ``<id>__training_job``) and cohort-wide summaries
(unpartitioned, ``<id>__cohort_job`` / ``<id>__mosaic_job``). Per-partition assets that read a model must
run after it, and a model after the per-partition assets it trains on, so a run alternates:

    partitions (assets needing no pending model) -> models (needing no pending partition asset) -> ... -> summaries

For the demo cohort: ingest, preprocess, register per patient; the segmentation model (and nnU-Net
dataset); segment, evaluate, report per patient; then the cohort evaluation and report. With a learned
registration model the registration step moves into a phase of its own after that model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dagster import AssetKey, Definitions

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.asset_names import COHORT_SUMMARIES


class RunArgumentError(ValueError):
    """A bad argument of ``imaging-pipelines run`` (unknown dataset, asset or partition): exit code 2."""


@dataclass(frozen=True)
class Phase:
    """One step of the plan: ``kind`` is ``partitions`` (one run per partition of ``job``), ``models`` or
    ``summaries`` (one run of ``job``); ``assets``: the asset keys it materialises, in topological order."""

    kind: str
    job: str
    assets: tuple[AssetKey, ...]

    @property
    def label(self) -> str:
        return " -> ".join(k.path[-1] for k in self.assets)


@dataclass
class RunPlan:
    dataset: str
    partition_job: str
    partitions_def: str  # the dynamic partitions definition's name
    phases: list[Phase] = field(default_factory=list)


def partition_job_name(dataset: DatasetConfig) -> str:
    return f"{dataset.id}__{'patient' if dataset.domain == 'medical' else 'tile'}_job"


def summary_job_name(dataset: DatasetConfig) -> str:
    return f"{dataset.id}__{'cohort' if dataset.domain == 'medical' else 'mosaic'}_job"


def _ancestors(graph, key: AssetKey, memo: dict[AssetKey, set[AssetKey]]) -> set[AssetKey]:
    if key not in memo:
        found: set[AssetKey] = set()
        for parent in graph.get(key).parent_keys:
            found |= {parent} | _ancestors(graph, parent, memo)
        memo[key] = found
    return memo[key]


def dataset_asset_names(defs: Definitions, dataset_id: str) -> list[str]:
    """Every asset name of the dataset's chain (without the dataset prefix), in topological order."""
    graph = defs.resolve_asset_graph()
    return ["/".join(k.path[1:]) for k in graph.toposorted_asset_keys if k.path[0] == dataset_id and len(k.path) > 1]


def plan_dataset_run(defs: Definitions, dataset: DatasetConfig, assets: list[str] | None = None) -> RunPlan:
    """The phases that materialise ``assets`` (names such as ``ingested_scans``; default: every asset of
    the chain). Raises :class:`RunArgumentError` naming the unknown assets and listing the valid ones."""
    graph = defs.resolve_asset_graph()
    keys = [k for k in graph.toposorted_asset_keys if k.path[0] == dataset.id and len(k.path) > 1]
    by_name = {"/".join(k.path[1:]): k for k in keys}
    if assets:
        names = [a.strip().removeprefix(f"{dataset.id}/") for a in assets if a.strip()]
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise RunArgumentError(f"unknown asset(s) {', '.join(unknown)} of {dataset.id}; valid: {', '.join(by_name)}")
        chosen = set(by_name[n] for n in names)
        keys = [k for k in keys if k in chosen]
    partitioned = [k for k in keys if graph.get(k).is_partitioned]
    summaries = [k for k in keys if not graph.get(k).is_partitioned and k.path[-1] in COHORT_SUMMARIES]
    models = [k for k in keys if not graph.get(k).is_partitioned and k not in summaries]
    job = defs.resolve_job_def(partition_job_name(dataset))
    plan = RunPlan(dataset.id, job.name, job.partitions_def.name)
    memo: dict[AssetKey, set[AssetKey]] = {}
    while partitioned or models:
        pending_models = set(models)
        ready = [k for k in partitioned if not _ancestors(graph, k, memo) & pending_models]
        if ready:
            plan.phases.append(Phase("partitions", job.name, tuple(ready)))
            partitioned = [k for k in partitioned if k not in ready]
        pending = set(partitioned)
        trained = [k for k in models if not _ancestors(graph, k, memo) & pending]
        if trained:
            plan.phases.append(Phase("models", f"{dataset.id}__training_job", tuple(trained)))
            models = [k for k in models if k not in trained]
        if not ready and not trained:  # cannot happen in an acyclic graph; never loop forever
            raise RuntimeError(f"{dataset.id}: no order found for {partitioned + models}")
    if summaries:
        plan.phases.append(Phase("summaries", summary_job_name(dataset), tuple(summaries)))
    return plan
