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
