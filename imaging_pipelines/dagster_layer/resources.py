"""Dagster resources."""

from __future__ import annotations

from dagster import ConfigurableResource
from upath import UPath

from imaging_pipelines.io.storage import storage_root


class ImagingStorage(ConfigurableResource):
    """Where Zarr stores are written: a local folder or any fsspec URI (``s3://bucket/prefix``)."""

    root: str = ""

    def root_path(self) -> UPath:
        return storage_root(self.root or None)


class TorchDevice(ConfigurableResource):
    """Where models train and infer: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Steps that use it run in the ``gpu`` concurrency pool, so with a pool limit of 1 (``dagster.yaml``:
    ``concurrency: pools: default_limit``, or ``dagster instance concurrency set gpu 1``) one GPU step
    runs at a time."""

    device: str = "auto"
