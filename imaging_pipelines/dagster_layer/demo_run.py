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


def materialise_partitions(defs, dataset_id: str, partition_keys: list[str], instance, progress: bool = True):
    """Run the dataset's ingestion job once per partition (in-process), recording runs in ``instance``."""
    from tqdm import tqdm

    job = defs.resolve_job_def(f"{dataset_id}__patient_job")
    results = {}
    for key in tqdm(partition_keys, desc=f"running {dataset_id}", unit="patient", disable=not progress):
        results[key] = job.execute_in_process(
            partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET_CONSOLE
        )
    return results


def run_demo(n_patients: int = 4, seed: int = 0, echo: Callable[[str], None] = print) -> DemoSummary:
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
    echo(f"inbox sensor: {len(keys)} patient partition(s) to run (ingest -> preprocess -> register)")
    summary = DemoSummary()
    checks_passed, checks_failed = 0, []
    for key, result in materialise_partitions(defs, dataset.id, keys, instance).items():
        (summary.succeeded if result.success else summary.failed).append(key)
        for evaluation in result.get_asset_check_evaluations():
            if evaluation.passed:
                checks_passed += 1
            else:
                checks_failed.append(f"{key} {evaluation.asset_key.to_user_string()} {evaluation.check_name}")
    graph = defs.resolve_asset_graph()
    stages = [k.path[-1] for k in graph.toposorted_asset_keys if k.path[0] == dataset.id and graph.get(k).is_partitioned]
    folder = storage_root() / dataset.id
    summary.stores = [str(folder / stage / f"{k}.zarr") for stage in stages for k in summary.succeeded]
    echo("")
    echo(f"{len(summary.succeeded)} patient(s) done, {len(summary.failed)} failed; "
         f"asset checks: {checks_passed} passed, {len(checks_failed)} failed")
    for stage in stages:
        echo(f"  {stage:<16} {folder / stage}/<patient>.zarr")
    for key in summary.failed:
        echo(f"  FAILED {key} (see the run in the UI)")
    for check in checks_failed:
        echo(f"  CHECK FAILED {check}")
    echo(f"Dagster instance: DAGSTER_HOME={home}   browse it with: make ui  (http://127.0.0.1:3000)")
    return summary
