"""Build the single `Definitions` object from the data catalog and the deployment file."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import Definitions

from imaging_pipelines.catalog import DatasetConfig, load_catalog
from imaging_pipelines.dagster_layer.executors import executor_for, gpu_op_tags
from imaging_pipelines.dagster_layer.medical import DatasetChain, build_medical_chain
from imaging_pipelines.dagster_layer.operations import build_failure_sensors, build_inbox_schedule
from imaging_pipelines.dagster_layer.resources import ImagingStorage, TorchDevice
from imaging_pipelines.deployment import Deployment, load_deployment
from imaging_pipelines.privacy import PSEUDONYM_KEY_ENV, using_development_key

log = logging.getLogger("imaging_pipelines")


def build_chains(datasets: list[DatasetConfig], gpu_tags: Mapping[str, Any] | None = None) -> dict[str, DatasetChain]:
    """One chain per dataset: patients for medical datasets, scene tiles for remote-sensing ones.
    ``gpu_tags``: op tags of the steps in the ``gpu`` pool (from the deployment's ``gpu_steps``)."""
    from imaging_pipelines.dagster_layer.remote_sensing import build_remote_sensing_chain

    return {d.id: build_medical_chain(d, gpu_tags=gpu_tags) if d.domain == "medical"
            else build_remote_sensing_chain(d, gpu_tags=gpu_tags) for d in datasets}


def build_definitions(catalog: str | Path | None = None, storage_root: str | None = None,
                      deployment: Deployment | str | Path | None = None) -> Definitions:
    """The code location's definitions. ``deployment``: a :class:`Deployment` or the path of a deployment
    file (default ``IMAGING_PIPELINES_DEPLOYMENT``; none: multiprocess executor). The storage root is
    ``storage_root``, else the deployment's ``storage.root``, else ``IMAGING_PIPELINES_STORAGE_ROOT``."""
    datasets = load_catalog(catalog)
    if not isinstance(deployment, Deployment):
        deployment = load_deployment(deployment)
    if using_development_key():
        log.warning(f"{PSEUDONYM_KEY_ENV} is not set: pseudonyms use the public development key")
    chains = build_chains(datasets, gpu_op_tags(deployment))
    storage = ImagingStorage(root=storage_root or deployment.storage.root or "",
                             storage_options=dict(deployment.storage.storage_options))
    return Definitions(
        assets=[a for c in chains.values() for a in c.assets],
        jobs=[j for c in chains.values() for j in c.jobs],
        schedules=[build_inbox_schedule(d, chains[d.id]) for d in datasets],
        sensors=[c.sensor for c in chains.values()] + build_failure_sensors(datasets),
        resources={"storage": storage, "torch_device": TorchDevice()},
        executor=executor_for(deployment),
    )
