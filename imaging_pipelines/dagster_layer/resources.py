"""Dagster resources."""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource
from upath import UPath

from imaging_pipelines.core.secrets import plain_secret_fields
from imaging_pipelines.core.storage import storage_root


class ImagingStorage(ConfigurableResource):
    """Where Zarr stores are written: a local folder or any fsspec URI (``s3://bucket/prefix``).

    ``storage_options`` go to the fsspec filesystem (for S3: ``endpoint_url``, ``client_kwargs``...). This
    config is stored in every run's snapshot, so credentials (``key``, ``secret``, ``token``...) may only be
    ``{env: VARIABLE}`` references, read from the step's environment when the store is opened; plain values are
    refused. Better: leave them to the usual environment (``AWS_*``)."""

    root: str = ""
    storage_options: dict[str, Any] = {}

    def root_path(self) -> UPath:
        plain = plain_secret_fields(self.storage_options)
        if plain:
            raise ValueError(f"storage resource: credential option(s) {', '.join(plain)} given as plain values "
                             "(they are stored in run snapshots); use {env: VARIABLE} references")
        return storage_root(self.root or None, self.storage_options or None)


class TorchDevice(ConfigurableResource):
    """Where models train and infer: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Steps that use it run in the ``gpu`` concurrency pool, so with a pool limit of 1 (``dagster.yaml``:
    ``concurrency: pools: default_limit``, or ``dagster instance concurrency set gpu 1``) one GPU step
    runs at a time."""

    device: str = "auto"
