"""Build the code location's `Definitions` from the data catalog and the deployment file.

Three parts, which the dg components (:mod:`imaging_pipelines.dagster_layer.components`) and
:func:`build_definitions` share:

- :func:`dataset_definitions`: one dataset's chain (assets, jobs, inbox sensor and schedule);
- :func:`catalog_definitions`: every dataset's chain plus the run failure / success recorders (they need every
  dataset id of the catalog);
- :func:`location_definitions`: what the whole code location shares: storage and device resources, the
  deployment's executor and the automation sensor.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import Definitions

from imaging_pipelines.config.catalog import DatasetConfig, load_catalog
from imaging_pipelines.dagster_layer.automation import automation_sensor
from imaging_pipelines.dagster_layer.executors import executor_for, gpu_op_tags
from imaging_pipelines.dagster_layer.asset_helpers import DatasetChain
from imaging_pipelines.dagster_layer.medical import build_medical_chain
from imaging_pipelines.dagster_layer.operations import build_failure_sensors, build_inbox_schedule
from imaging_pipelines.dagster_layer.remote_sensing import build_remote_sensing_chain
from imaging_pipelines.dagster_layer.resources import ImagingStorage, TorchDevice
from imaging_pipelines.config.deployment import Deployment, load_deployment
from imaging_pipelines.core.privacy import SECRET_KEY_STATUS, allow_development_key, key_status

log = logging.getLogger("imaging_pipelines")


def build_chain(dataset: DatasetConfig, gpu_tags: Mapping[str, Any] | None = None) -> DatasetChain:
    """The dataset's chain: patients for a medical dataset, scene tiles for a remote-sensing one.
    ``gpu_tags``: op tags of the steps in the ``gpu`` pool (from the deployment's ``gpu_steps``)."""
    if dataset.domain == "medical":
        return build_medical_chain(dataset, gpu_tags=gpu_tags)
    return build_remote_sensing_chain(dataset, gpu_tags=gpu_tags)


def build_chains(datasets: list[DatasetConfig], gpu_tags: Mapping[str, Any] | None = None) -> dict[str, DatasetChain]:
    """One chain per dataset (see :func:`build_chain`)."""
    return {d.id: build_chain(d, gpu_tags) for d in datasets}


def dataset_definitions(dataset: DatasetConfig, gpu_tags: Mapping[str, Any] | None = None) -> Definitions:
    """One dataset's assets, jobs, inbox sensor and inbox schedule."""
    chain = build_chain(dataset, gpu_tags)
    return Definitions(assets=chain.assets, jobs=chain.jobs, sensors=[chain.sensor],
                       schedules=[build_inbox_schedule(dataset, chain)])


def catalog_definitions(datasets: list[DatasetConfig], gpu_tags: Mapping[str, Any] | None = None) -> Definitions:
    """Every dataset's definitions and the run failure / success recorders of the catalog."""
    return Definitions.merge(*(dataset_definitions(d, gpu_tags) for d in datasets),
                             Definitions(sensors=build_failure_sensors(datasets)))


def resolve_deployment(deployment: Deployment | str | Path | None = None) -> Deployment:
    """``deployment`` as a :class:`Deployment` (a path or None: :func:`load_deployment`)."""
    return deployment if isinstance(deployment, Deployment) else load_deployment(deployment)


def deployment_storage(deployment: Deployment, storage_root: str | None = None) -> ImagingStorage:
    """The storage resource: ``storage_root``, else the deployment's ``storage.root``, else
    ``IMAGING_PIPELINES_STORAGE_ROOT``."""
    return ImagingStorage(root=storage_root or deployment.storage.root or "",
                          storage_options=dict(deployment.storage.storage_options))


def check_pseudonym_key(deployment: Deployment) -> str:
    """Fail at load time without a usable pseudonym key (:class:`~imaging_pipelines.core.privacy.PseudonymKeyError`
    names ``IMAGING_PIPELINES_PSEUDONYM_KEY`` and the opt-in). The deployment's
    ``privacy.allow_development_key`` opts this process and its step processes into the public development key.
    Returns the key status shown in every materialisation's metadata."""
    if deployment.privacy.allow_development_key:
        allow_development_key()
    status = key_status()
    if status != SECRET_KEY_STATUS:
        log.warning(f"pseudonyms use the public development key: {status}")
    return status


def location_definitions(deployment: Deployment | str | Path | None = None,
                         storage_root: str | None = None) -> Definitions:
    """Resources, executor and automation sensor of the code location. The storage root is ``storage_root``,
    else the deployment's ``storage.root``, else ``IMAGING_PIPELINES_STORAGE_ROOT``."""
    deployment = resolve_deployment(deployment)
    check_pseudonym_key(deployment)
    storage = deployment_storage(deployment, storage_root)
    return Definitions(resources={"storage": storage, "torch_device": TorchDevice()},
                       executor=executor_for(deployment), sensors=[automation_sensor()])


def build_definitions(catalog: str | Path | None = None, storage_root: str | None = None,
                      deployment: Deployment | str | Path | None = None) -> Definitions:
    """The code location's definitions without the dg component tree (tests, headless runs). ``deployment``:
    a :class:`Deployment` or the path of a deployment file (default ``IMAGING_PIPELINES_DEPLOYMENT``; none:
    steps in the run's process). ``catalog``: a folder or file (default ``IMAGING_PIPELINES_CATALOG``)."""
    datasets = load_catalog(catalog)
    deployment = resolve_deployment(deployment)
    return Definitions.merge(catalog_definitions(datasets, gpu_op_tags(deployment)),
                             location_definitions(deployment, storage_root))
