"""What every chain's asset builders share: asset keys, check specs, the failure of a bad partition,
run policies, the GPU pool, and the bundle of Dagster objects one dataset contributes.

- ``PARTITION_BACKFILL_POLICY``: one partition per run (``BackfillPolicy.multi_run(1)``). The asset bodies
  read ``context.partition_key``, which a run over a range of partitions does not have; a backfill of N
  partitions is N runs, each retried or re-executed alone.
- ``TRANSIENT_RETRY_POLICY``: bad input raises ``Failure(allow_retries=False)`` (:func:`input_failure`),
  which Dagster fails at once; any other exception (I/O hiccup, out of memory, a flaky remote store) is
  retried twice with exponential backoff and jitter (about 10 s and 30 s).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetsDefinition,
    Backoff,
    BackfillPolicy,
    BetaWarning,
    DynamicPartitionsDefinition,
    Failure,
    Jitter,
    JobDefinition,
    RetryPolicy,
    SensorDefinition,
)

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.stage_result import CheckOutcome

# backfill_policy is a beta parameter of @asset; we rely on its documented multi_run semantics only.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy` of function `asset`", category=BetaWarning)

PARTITION_BACKFILL_POLICY = BackfillPolicy.multi_run(max_partitions_per_run=1)
TRANSIENT_RETRY_POLICY = RetryPolicy(max_retries=2, delay=10, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)
GPU_POOL = "gpu"


def asset_key(dataset: DatasetConfig, name: str) -> AssetKey:
    """``[<dataset id>, <asset name>]`` (names: :mod:`imaging_pipelines.core.asset_names`)."""
    return AssetKey([dataset.id, name])


def check_specs(key: AssetKey, *names: str, blocking: bool = False) -> list[AssetCheckSpec]:
    """One check spec per name (description: the name in words). ``blocking``: a failed check stops the
    steps downstream of the asset in the same run."""
    return [AssetCheckSpec(n, asset=key, description=n.replace("_", " "), blocking=blocking) for n in names]


def check_result(name: str, outcome: CheckOutcome) -> AssetCheckResult:
    """``outcome`` as the result of check ``name`` (a ``"warn"`` outcome has severity WARN)."""
    severity = AssetCheckSeverity.WARN if outcome.severity == "warn" else AssetCheckSeverity.ERROR
    return AssetCheckResult(check_name=name, passed=outcome.passed, description=outcome.description,
                            metadata=outcome.metadata, severity=severity)


def check_results(checks: dict[str, CheckOutcome]) -> list[AssetCheckResult]:
    """A stage's named :class:`~imaging_pipelines.core.stage_result.CheckOutcome` s as asset check results."""
    return [check_result(name, outcome) for name, outcome in checks.items()]


def model_and_summary_jobs(dataset: DatasetConfig, assets: list[AssetsDefinition],
                           summary_description: str) -> list[JobDefinition]:
    """``<id>__training_job`` (the unpartitioned model assets) and the summary job (``<id>__cohort_job`` /
    ``<id>__mosaic_job``: the unpartitioned assets named in ``COHORT_SUMMARIES``), each when it has assets."""
    from dagster import define_asset_job

    from imaging_pipelines.core.asset_names import COHORT_SUMMARIES

    unpartitioned = [a.key for a in assets if a.partitions_def is None]
    summaries = [k for k in unpartitioned if k.path[-1] in COHORT_SUMMARIES]
    models = [k for k in unpartitioned if k not in summaries]
    summary_job = f"{dataset.id}__{'cohort' if dataset.domain == 'medical' else 'mosaic'}_job"
    jobs = []
    if models:
        jobs.append(define_asset_job(f"{dataset.id}__training_job", selection=models,
                                     description=f"Train (or reuse, when nothing changed) the models of {dataset.id}."))
    if summaries:
        jobs.append(define_asset_job(summary_job, selection=summaries, description=summary_description))
    return jobs


def input_failure(context, partition: str | None, exc: Exception) -> Failure:
    """Log ``exc`` and return a non-retried ``Failure`` naming the partition (bad input fails only it)."""
    where = f"partition {partition}: " if partition else ""
    context.log.error(f"{where}{exc}")
    return Failure(description=f"{where}{exc}", allow_retries=False)


@dataclass
class DatasetChain:
    """The Dagster objects of one dataset (medical or remote sensing)."""

    partitions: DynamicPartitionsDefinition
    assets: list[AssetsDefinition]
    job: JobDefinition  # the per-partition job (every partitioned asset); the sensor launches it
    sensor: SensorDefinition
    other_jobs: list[JobDefinition]  # training (models) and cohort (cohort-wide summaries) jobs, when there are any

    @property
    def jobs(self) -> list[JobDefinition]:
        return [self.job, *self.other_jobs]
