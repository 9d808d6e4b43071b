"""Executors and GPU-step tags from the deployment file (:mod:`imaging_pipelines.config.deployment`).

- ``in_process`` (default): every step of a run in the run's own process, one after the other; runs are
  the unit of parallelism (one run per partition, several at once), so a small partition pays no
  step-process start.
- ``multiprocess``: Dagster's ``multiprocess_executor``, one process per step, at most
  ``max_concurrent`` at once, started by ``spawn`` or by a ``forkserver`` that has already imported
  ``preload_modules`` (default ``imaging_pipelines.definitions``).
- ``dask``: dagster-dask's executor (its config, its worker code) against an existing scheduler or a
  LocalCluster per run, with three fixes (:func:`imaging_dask_executor`).
- ``k8s``: ``dagster_k8s.k8s_job_executor``, one Kubernetes Job (pod) per step.

Executor settings are checked against the executor's own Dagster config schema when the definitions are
built, and the ``gpu_steps.k8s`` tag against dagster-k8s's ``dagster-k8s/config`` schema and the Kubernetes
model classes, so a wrong key fails the code location's load with ``file: field: message`` rather than the
first run.

Out-of-process executors reconstruct the job in every step process (or Dask worker). Runs launched from the
UI do that through the code location (``imaging_pipelines.definitions``); :func:`imaging_pipelines.dagster_layer.reconstructable.reconstructable_job`
gives the same for ``dagster.execute_job`` from Python (tests, scripts), with the catalog and deployment
passed explicitly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor
from dagster._config import validate_config

from imaging_pipelines.config.deployment import DEFAULT_PRELOAD_MODULES, Deployment, DeploymentError, default_max_concurrent

if TYPE_CHECKING:
    from dagster._core.definitions.reconstruct import ReconstructableJob

K8S_CONFIG_TAG = "dagster-k8s/config"
DASK_RESOURCES_TAG = "dagster-dask/resource_requirements"


def _import_extra(deployment: Deployment, module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise deployment.error(
            "executor.kind", f"needs {module.replace('_', '-')} ({exc}); install imaging_pipelines[{extra}]") from None


def executor_definition_and_config(deployment: Deployment) -> tuple[ExecutorDefinition, dict[str, Any]]:
    """The Dagster executor the deployment selects and its run config (``execution: config:``), not yet
    validated."""
    ex = deployment.executor
    if ex.kind == "in_process":
        return in_process_executor, {}
    if ex.kind == "multiprocess":
        config: dict[str, Any] = {"max_concurrent": ex.max_concurrent or default_max_concurrent()}
        if ex.start_method == "forkserver":
            config["start_method"] = {"forkserver": {"preload_modules": list(ex.preload_modules or DEFAULT_PRELOAD_MODULES)}}
        elif ex.start_method == "spawn":
            config["start_method"] = {"spawn": {}}
        return multiprocess_executor, config
    if ex.kind == "dask":
        _import_extra(deployment, "dagster_dask", "dask")
        dask_executor = imaging_dask_executor()
        cluster = ex.dask.cluster if ex.dask else None
        if cluster is None or cluster.local is not None:
            return dask_executor, {"cluster": {"local": dict(cluster.local if cluster else {})}}
        return dask_executor, {"cluster": {"existing": {"address": cluster.existing.address}}}
    k8s_job_executor = _import_extra(deployment, "dagster_k8s", "k8s").k8s_job_executor
    config = dict(ex.k8s or {})
    if ex.max_concurrent is not None:
        config["max_concurrent"] = ex.max_concurrent
    return k8s_job_executor, config


def _config_errors(deployment: Deployment, prefix: str, result) -> DeploymentError:
    """Dagster config-validation errors as ``file: field: message`` (the field path under ``prefix``)."""
    from dagster._config.errors import FieldNotDefinedErrorData, FieldsNotDefinedErrorData
    from dagster._config.stack import EvaluationStackListItemEntry, EvaluationStackPathEntry

    errors = []
    for error in result.errors:
        path = [prefix]
        for entry in error.stack.entries:
            if isinstance(entry, EvaluationStackPathEntry):
                path.append(entry.field_name)
            elif isinstance(entry, EvaluationStackListItemEntry):
                path[-1] += f"[{entry.list_index}]"
        if isinstance(error.error_data, FieldNotDefinedErrorData):
            path.append(error.error_data.field_name)
        elif isinstance(error.error_data, FieldsNotDefinedErrorData):
            path.append("{" + ",".join(error.error_data.field_names) + "}")
        message = re.sub(r" (at the root|at path \S+?)(?=[ .]|$)", "", error.message.split(" Expected:")[0])
        message = message.split(" on type ")[0].rstrip(".")
        errors.append((deployment.source, ".".join(path), message))
    return DeploymentError(errors)


def executor_run_config(deployment: Deployment) -> tuple[ExecutorDefinition, dict[str, Any]]:
    """The executor definition and its validated config (defaults filled in, as Dagster would): raises
    :class:`DeploymentError` naming the deployment file and the field when the config is refused."""
    definition, config = executor_definition_and_config(deployment)
    result = validate_config(definition.config_schema.config_type, config)
    if not result.success:
        raise _config_errors(deployment, f"executor.{deployment.executor.kind}"
                             if deployment.executor.kind in ("dask", "k8s") else "executor", result)
    return definition, config


def executor_for(deployment: Deployment) -> ExecutorDefinition:
    """The deployment's executor, configured (the run config's ``execution`` section is then fixed)."""
    definition, config = executor_run_config(deployment)
    return definition.configured(config) if config else definition


def validated_k8s_step_config(deployment: Deployment, value: Mapping[str, Any], field: str = "gpu_steps.k8s") -> dict:
    """``value`` (a ``dagster-k8s/config`` tag) checked the way dagster-k8s reads it when it launches a step:
    its config schema, then the Kubernetes model classes (V1Container, V1PodSpec, ...) for the keys."""
    from dagster_k8s.job import USER_DEFINED_K8S_JOB_CONFIG_SCHEMA, UserDefinedDagsterK8sConfig

    result = validate_config(USER_DEFINED_K8S_JOB_CONFIG_SCHEMA, dict(value))
    if not result.success:
        raise _config_errors(deployment, field, result)
    for section, settings in result.value.items():  # one at a time, so that the error names the section
        try:
            UserDefinedDagsterK8sConfig.from_dict({section: settings})
        except Exception as exc:  # dagster-k8s raises a bare Exception for unknown Kubernetes keys
            raise deployment.error(f"{field}.{section}", str(exc)) from None
    return dict(value)


def gpu_op_tags(deployment: Deployment) -> dict[str, Any]:
    """Op tags for the steps that use the GPU (the ``gpu`` pool): ``dagster-k8s/config`` (GPU requests,
    node selectors, tolerations for their pods) and ``dagster-dask/resource_requirements`` (Dask worker
    resources), from ``gpu_steps``; empty when the deployment sets neither. Other executors ignore them."""
    tags: dict[str, Any] = {}
    gpu = deployment.gpu_steps
    if gpu.k8s is not None:
        try:
            tags[K8S_CONFIG_TAG] = validated_k8s_step_config(deployment, gpu.k8s)
        except ImportError:
            if deployment.executor.kind == "k8s":
                raise
            tags[K8S_CONFIG_TAG] = dict(gpu.k8s)  # dagster-k8s not installed: not checked, not used either
    if gpu.dask_resources:
        tags[DASK_RESOURCES_TAG] = json.dumps(gpu.dask_resources)  # dagster-dask json.loads a string tag
    return tags


# --- Dask -----------------------------------------------------------------------------------------------
# dagster-dask 0.29's DaskExecutor, as it is, cannot run this project's jobs on current Dask (2024.12+):
# 1. ``client.submit`` walks every tuple argument looking for futures (dask._task_spec.parse_input); the
#    DagsterRun of a partitioned asset run holds Dagster ``@record``s (KeyRangesPartitionsSubset) that refuse
#    iteration, so the run fails before any step starts ("Iteration is not allowed on `@record`").
# 2. Task keys are ``<job>.<step>``: two runs of the same job at once (two partitions, a backfill) share
#    keys, and Dask hands the second run the first run's result without running its steps
#    (dagster-io/dagster#21418).
# 3. A step runs even when a step it depends on failed (its future resolved to failure events), and a
#    ``local`` cluster is never closed.
# The subclass below keeps dagster-dask's config schema and its worker function (``query_on_dask_worker``)
# and changes only the orchestration: arguments and results cross as Dagster-serialised strings, task keys
# carry the run id, a step whose upstream did not succeed is reported skipped, and a local cluster is closed.


def run_step_on_dask_worker(upstream: list[dict], payload: str, step_key: str) -> dict:
    """Dask task: one step of a run, in the worker, through dagster-dask's ``query_on_dask_worker``.
    ``upstream``: the results of the steps it depends on; ``payload``: the serialised (job, run, run config,
    instance ref, known state). Returns ``{"ok": bool, "events": <serialised DagsterEvents> | None}``
    (``events`` None: not run because an upstream step did not succeed)."""
    from dagster._core.events import DagsterEventType
    from dagster._serdes import deserialize_value, serialize_value
    from dagster_dask.executor import query_on_dask_worker

    if not all(u["ok"] for u in upstream):
        return {"ok": False, "events": None}
    recon_job, dagster_run, run_config, instance_ref, known_state = deserialize_value(payload)
    events = list(query_on_dask_worker(None, recon_job, dagster_run, run_config, [step_key], instance_ref, known_state))
    ok = any(e.event_type == DagsterEventType.STEP_SUCCESS and e.step_key == step_key for e in events)
    return {"ok": ok, "events": serialize_value(events)}


_DASK_EXECUTOR = None


def imaging_dask_executor() -> ExecutorDefinition:
    """dagster-dask's ``dask`` executor (same name, same config) with the fixes above."""
    global _DASK_EXECUTOR
    if _DASK_EXECUTOR is not None:
        return _DASK_EXECUTOR

    import dask.distributed
    from dagster import _check as check, executor, multiple_process_executor_requirements

    from imaging_pipelines.core.child_signals import workers_terminable
    from dagster._core.errors import raise_execution_interrupts
    from dagster._core.events import DagsterEvent
    from dagster._serdes import deserialize_value, serialize_value
    from dagster._utils import iterate_with_context
    from dagster_dask.executor import DaskExecutor, dask_executor, get_dask_resource_requirements

    class RunScopedDaskExecutor(DaskExecutor):
        def execute(self, plan_context, execution_plan):
            check.invariant(plan_context.instance.is_persistent, "Dask execution requires a persistent DagsterInstance")
            run = plan_context.dagster_run
            local = None
            if self.cluster_type == "existing":
                cluster = self.cluster_configuration["address"]
            elif self.cluster_type == "local":
                with workers_terminable():  # workers must not inherit an ignored SIGTERM (core.child_signals)
                    cluster = local = dask.distributed.LocalCluster(**self.build_dict(plan_context.job_name))
            else:  # the deployment file only offers existing and local
                raise ValueError(f"unsupported Dask cluster type {self.cluster_type!r} (existing or local)")
            payload = serialize_value([plan_context.reconstructable_job, run, plan_context.run_config,
                                       plan_context.instance.get_ref(), execution_plan.known_state])
            try:
                with dask.distributed.Client(cluster) as client:
                    futures, steps = {}, {}
                    for level in execution_plan.get_steps_to_execute_by_level():
                        for step in level:
                            upstream = [futures[k] for i in step.step_inputs for k in i.dependency_keys if k in futures]
                            future = client.submit(
                                run_step_on_dask_worker, upstream, payload, step.key,
                                key=f"{plan_context.job_name}.{step.key}.{run.run_id}", pure=False,
                                resources=get_dask_resource_requirements(step.tags))
                            futures[step.key], steps[future.key] = future, step
                    completed = dask.distributed.as_completed(list(futures.values()), with_results=True)
                    for future, result in iterate_with_context(raise_execution_interrupts, completed):
                        if result["events"] is None:
                            yield DagsterEvent.step_skipped_event(plan_context.for_step(steps[future.key]))
                            continue
                        for event in deserialize_value(result["events"], list):
                            yield check.inst(event, DagsterEvent)
            finally:
                if local is not None:
                    local.close()

    @executor(name="dask", config_schema=dask_executor.config_schema.as_field(),
              requirements=multiple_process_executor_requirements())
    def dask_run_executor(init_context):
        """dagster-dask's Dask executor (same config), run-scoped task keys and serialised arguments."""
        ((cluster_type, cluster_configuration),) = init_context.executor_config["cluster"].items()
        return RunScopedDaskExecutor(cluster_type, cluster_configuration)

    _DASK_EXECUTOR = dask_run_executor
    return _DASK_EXECUTOR
