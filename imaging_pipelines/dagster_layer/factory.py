"""Build the single `Definitions` object from the data catalog."""

from __future__ import annotations

import logging
from pathlib import Path

from dagster import Definitions

from imaging_pipelines.catalog import DatasetConfig, load_catalog
from imaging_pipelines.dagster_layer.medical import DatasetChain, build_medical_chain
from imaging_pipelines.dagster_layer.operations import build_failure_sensors, build_inbox_schedule
from imaging_pipelines.dagster_layer.resources import ImagingStorage, TorchDevice
from imaging_pipelines.privacy import PSEUDONYM_KEY_ENV, using_development_key

log = logging.getLogger("imaging_pipelines")


def build_chains(datasets: list[DatasetConfig]) -> dict[str, DatasetChain]:
    """One chain per dataset: patients for medical datasets, scene tiles for remote-sensing ones."""
    from imaging_pipelines.dagster_layer.remote_sensing import build_remote_sensing_chain

    return {d.id: build_medical_chain(d) if d.domain == "medical" else build_remote_sensing_chain(d) for d in datasets}


def build_definitions(catalog: str | Path | None = None, storage_root: str | None = None) -> Definitions:
    datasets = load_catalog(catalog)
    if using_development_key():
        log.warning(f"{PSEUDONYM_KEY_ENV} is not set: pseudonyms use the public development key")
    chains = build_chains(datasets)
    return Definitions(
        assets=[a for c in chains.values() for a in c.assets],
        jobs=[j for c in chains.values() for j in c.jobs],
        schedules=[build_inbox_schedule(d, chains[d.id]) for d in datasets],
        sensors=[c.sensor for c in chains.values()] + build_failure_sensors(datasets),
        resources={"storage": ImagingStorage(root=storage_root or ""), "torch_device": TorchDevice()},
    )
