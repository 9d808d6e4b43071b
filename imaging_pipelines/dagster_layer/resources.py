"""Dagster resources."""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource
from upath import UPath

from imaging_pipelines.core.storage import storage_root


class ImagingStorage(ConfigurableResource):
    """Where Zarr stores are written: a local folder or any fsspec URI (``s3://bucket/prefix``).

    ``storage_options`` go to the fsspec filesystem (for S3: ``endpoint_url``, ``key``, ``secret``,
    ``client_kwargs``...); credentials are better left to the usual environment (``AWS_*``)."""

    root: str = ""
    storage_options: dict[str, Any] = {}

    def root_path(self) -> UPath:
        return storage_root(self.root or None, self.storage_options or None)


class TorchDevice(ConfigurableResource):
    """Where models train and infer: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Steps that use it run in the ``gpu`` concurrency pool, so with a pool limit of 1 (``dagster.yaml``:
    ``concurrency: pools: default_limit``, or ``dagster instance concurrency set gpu 1``) one GPU step
    runs at a time."""

    device: str = "auto"
