"""The deployment file: how runs execute, where stores go, and what the GPU steps ask of the executor.

One YAML file, selected by ``IMAGING_PIPELINES_DEPLOYMENT`` (a path). Without one, every step of a run
executes in the run's own process (``in_process``: parallelism comes from concurrent runs, one per
partition, so a small partition pays no step-process start) and stores go to the storage root of
``IMAGING_PIPELINES_STORAGE_ROOT``. The multiprocess executor runs at most :data:`DEFAULT_MAX_CONCURRENT`
steps at a time unless ``max_concurrent`` says otherwise. Examples in ``deploy/`` (``multiprocess.yaml``, ``dask.yaml``,
``k8s.yaml``)::

    executor:
      kind: multiprocess          # multiprocess | in_process | dask | k8s
      max_concurrent: 4           # multiprocess, k8s (pods per run)
      start_method: forkserver    # multiprocess: spawn | forkserver
      preload_modules: [imaging_pipelines.definitions]   # forkserver (this is the default)
      dask: {cluster: {existing: {address: "tcp://scheduler:8786"}}}   # or {local: {n_workers: 2}}
      k8s: {job_namespace: imaging, job_image: registry/imaging:1.0}   # dagster-k8s k8s_job_executor config
    storage:
      root: s3://bucket/prefix
      storage_options: {endpoint_url: "http://minio:9000", secret: {env: AWS_SECRET_ACCESS_KEY}}
    privacy:
      allow_development_key: false  # true: the public pseudonym key (demo data only)
    gpu_steps:                    # op tags of the steps in the `gpu` pool (models, segmentation)
      k8s: {container_config: {resources: {limits: {nvidia.com/gpu: 1}}}}
      dask_resources: {GPU: 1}

Credentials in ``storage_options`` are refused unless written as ``{env: VARIABLE}`` references
(:mod:`imaging_pipelines.core.secrets`): the deployment's values end up in run snapshots. Unknown keys are refused; every error names the file and the field (``file: field: message``). The
``executor.k8s`` and ``gpu_steps.k8s`` blocks are checked against dagster-k8s's own config schema when the
Dagster definitions are built (:mod:`imaging_pipelines.dagster_layer.executors`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from imaging_pipelines.core.secrets import plain_secret_fields

DEPLOYMENT_ENV = "IMAGING_PIPELINES_DEPLOYMENT"
DEFAULT_MAX_CONCURRENT = 4  # imaging steps hold whole volumes in memory: at most this many at once (and <= cores)
DEFAULT_PRELOAD_MODULES = ["imaging_pipelines.definitions"]
NO_FILE = "(no deployment file)"


class DeploymentError(ValueError):
    """A deployment file is invalid; ``errors`` lists (file, field, message) triples."""

    def __init__(self, errors: list[tuple[str, str, str]]):
        self.errors = errors
        super().__init__("\n".join(f"{f}: {field}: {msg}" for f, field, msg in errors))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DaskExistingCluster(_Strict):
    address: str = Field(description="the scheduler's address, e.g. tcp://scheduler:8786")


class DaskCluster(_Strict):
    """Exactly one of ``existing`` (connect to a running scheduler) or ``local`` (a LocalCluster per run)."""

    existing: DaskExistingCluster | None = None
    local: dict[str, Any] | None = Field(None, description="distributed.LocalCluster keyword arguments")


class DaskSettings(_Strict):
    cluster: DaskCluster = Field(default_factory=lambda: DaskCluster(local={}))


class ExecutorSettings(_Strict):
    kind: Literal["multiprocess", "in_process", "dask", "k8s"] = "in_process"
    max_concurrent: int | None = Field(None, ge=1, description="multiprocess: steps at once; k8s: pods per run")
    start_method: Literal["spawn", "forkserver"] | None = Field(None, description="multiprocess only")
    preload_modules: list[str] | None = Field(None, description="forkserver only; default imaging_pipelines.definitions")
    dask: DaskSettings | None = None
    k8s: dict[str, Any] | None = Field(None, description="dagster-k8s k8s_job_executor config, passed as it is")


class StorageSettings(_Strict):
    root: str | None = Field(None, description="folder or fsspec URI; default IMAGING_PIPELINES_STORAGE_ROOT")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec filesystem options; "
                                            "credentials only as {env: VARIABLE} references")

    @field_validator("storage_options")
    @classmethod
    def _no_plain_secrets(cls, options: dict[str, Any]) -> dict[str, Any]:
        plain = plain_secret_fields(options)
        if plain:
            raise ValueError(
                f"credential(s) {', '.join(plain)} written as plain values: they would be stored in every run's "
                "configuration and served by the webserver; write {env: VARIABLE} (e.g. secret: {env: "
                "AWS_SECRET_ACCESS_KEY}) or leave them to the filesystem's usual environment variables")
        return options


class PrivacySettings(_Strict):
    allow_development_key: bool = Field(False, description="use the public development pseudonym key when "
                                        "IMAGING_PIPELINES_PSEUDONYM_KEY is not set (demo data only)")


class GpuSteps(_Strict):
    k8s: dict[str, Any] | None = Field(None, description="the `dagster-k8s/config` op tag (container_config, pod_spec_config, ...)")
    dask_resources: dict[str, float] | None = Field(
        None, description="the `dagster-dask/resource_requirements` op tag: Dask worker resources a GPU step needs")


class Deployment(_Strict):
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    gpu_steps: GpuSteps = Field(default_factory=GpuSteps)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    _source: str = PrivateAttr(default=NO_FILE)

    @property
    def source(self) -> str:
        """The file this deployment was read from (``(no deployment file)`` for the default)."""
        return self._source

    def error(self, field: str, message: str) -> DeploymentError:
        return DeploymentError([(self.source, field, message)])


def _cross_field_errors(d: Deployment) -> list[tuple[str, str]]:
    """Settings that belong to another executor kind than the one selected (silently ignoring them would hide
    a typo in ``kind``)."""
    ex, errors = d.executor, []
    only = {"dask": ("dask",), "k8s": ("k8s",), "start_method": ("multiprocess",),
            "preload_modules": ("multiprocess",), "max_concurrent": ("multiprocess", "k8s")}
    for name, kinds in only.items():
        if getattr(ex, name) is not None and ex.kind not in kinds:
            errors.append((f"executor.{name}", f"only used with kind: {' or '.join(kinds)} (kind is {ex.kind})"))
    if ex.preload_modules is not None and ex.start_method != "forkserver":
        errors.append(("executor.preload_modules", "only used with start_method: forkserver"))
    if ex.dask is not None:
        cluster = ex.dask.cluster
        if (cluster.existing is None) == (cluster.local is None):
            errors.append(("executor.dask.cluster", "give exactly one of `existing: {address: ...}` or `local: {...}`"))
    if ex.k8s is not None and ex.max_concurrent is not None and "max_concurrent" in ex.k8s:
        errors.append(("executor.max_concurrent", "given twice (also executor.k8s.max_concurrent)"))
    return errors


def parse_deployment(raw: Any, source: str) -> Deployment:
    """Validate a parsed YAML document; ``source`` names it in errors."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise DeploymentError([(source, "-", "must be a mapping with executor, storage and gpu_steps")])
    try:
        deployment = Deployment(**raw)
    except ValidationError as exc:
        raise DeploymentError(
            [(source, ".".join(str(p) for p in e["loc"]) or "-", e["msg"]) for e in exc.errors()]) from None
    deployment._source = source
    errors = _cross_field_errors(deployment)
    if errors:
        raise DeploymentError([(source, f, m) for f, m in errors])
    return deployment


def deployment_path(path: str | os.PathLike | None = None) -> Path | None:
    """``path``, else ``IMAGING_PIPELINES_DEPLOYMENT``, else None (the default deployment)."""
    value = path or os.environ.get(DEPLOYMENT_ENV)
    return Path(value).expanduser() if value else None


def load_deployment(path: str | os.PathLike | None = None) -> Deployment:
    """Read and validate the deployment file (``path`` or ``IMAGING_PIPELINES_DEPLOYMENT``); the default
    deployment (in_process, storage from the environment) when neither is set. Raises
    :class:`DeploymentError`."""
    file = deployment_path(path)
    if file is None:
        return Deployment()
    try:
        text = file.read_text()
    except OSError as exc:
        raise DeploymentError([(str(file), "-", f"cannot read the deployment file ({exc.strerror or exc})")]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DeploymentError([(str(file), "-", f"not valid YAML: {exc}")]) from None
    return parse_deployment(raw, str(file))


def default_max_concurrent() -> int:
    return max(1, min(DEFAULT_MAX_CONCURRENT, os.cpu_count() or 1))
