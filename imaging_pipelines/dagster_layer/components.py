"""dg Component types of the data catalog.

- :class:`DataCatalog`: the folder of catalog files (``data_catalog/``, one YAML per dataset). Its single
  instance is ``imaging_pipelines/defs/catalog/defs.yaml``; ``path`` defaults to ``IMAGING_PIPELINES_CATALOG``,
  else ``data_catalog/``. Each file becomes one :class:`ImagingDataset`; the failure recorders span them all.
- :class:`ImagingDataset`: one dataset. Its attributes schema is the catalog's own
  :class:`~imaging_pipelines.config.catalog.DatasetConfig` (published as ``data_catalog/dataset.schema.json``);
  it builds that dataset's chain (assets, jobs, inbox sensor and schedule).

Catalog files stay bare attribute documents (no ``type:`` wrapper), so users write exactly what
``imaging-pipelines catalog validate`` checks. Every problem is raised as a
:class:`~imaging_pipelines.core.errors.CatalogError` naming the file and the field, which ``dg check defs``,
``dg list defs`` and ``dg dev`` print. Executor, resources and the automation sensor are code-location-wide
(:func:`~imaging_pipelines.dagster_layer.factory.location_definitions`, added by ``definitions.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import Component, ComponentLoadContext, Definitions, Model, Resolvable
from pydantic import BaseModel, Field

from imaging_pipelines.config.catalog import DatasetConfig, checked_inbox, configured_data_roots, load_catalog
from imaging_pipelines.core.errors import CatalogError
from imaging_pipelines.dagster_layer.executors import gpu_op_tags
from imaging_pipelines.dagster_layer.factory import dataset_definitions, resolve_deployment
from imaging_pipelines.dagster_layer.operations import build_failure_sensors


class ImagingDataset(Component):
    """One dataset of the data catalog: its chain of assets, jobs, inbox sensor and schedule.

    Attributes: a catalog entry (:class:`DatasetConfig`: id, domain, inbox, formats, partitioning, recipe,
    registration, segmentation, ...). ``gpu_tags``: op tags of the steps in the ``gpu`` pool (default: from
    the deployment file named by ``IMAGING_PIPELINES_DEPLOYMENT``)."""

    def __init__(self, config: DatasetConfig, gpu_tags: Mapping[str, Any] | None = None):
        self.config = config
        self.gpu_tags = gpu_tags

    @classmethod
    def get_model_cls(cls) -> type[BaseModel]:
        return DatasetConfig

    @classmethod
    def load(cls, attributes: BaseModel | None, context: ComponentLoadContext) -> ImagingDataset:
        """From a ``defs.yaml`` (``type: ...ImagingDataset``): a relative inbox resolves against that file's
        folder and must lie in the configured data roots, as for catalog files."""
        if not isinstance(attributes, DatasetConfig):
            raise CatalogError([(str(context.path), "-", "an ImagingDataset needs the attributes of a catalog entry")])
        config, errors = checked_inbox(attributes, Path(context.path) / "defs.yaml", configured_data_roots())
        if config is None:
            raise CatalogError(errors)
        return cls(config)

    def build_defs(self, context: ComponentLoadContext) -> Definitions:
        tags = self.gpu_tags if self.gpu_tags is not None else gpu_op_tags(resolve_deployment())
        return dataset_definitions(self.config, tags)


class DataCatalog(Component, Resolvable, Model):
    """A folder of dataset YAML files (the data catalog); each file becomes one :class:`ImagingDataset`."""

    path: str | None = Field(None, description="catalog folder or single file; relative paths resolve against the "
                                               "project root; default IMAGING_PIPELINES_CATALOG, else data_catalog/")

    def location(self, project_root: Path) -> Path | None:
        """The catalog folder or file (None: ``IMAGING_PIPELINES_CATALOG``, else ``data_catalog/``)."""
        if not self.path:
            return None
        path = Path(self.path).expanduser()
        return path if path.is_absolute() else project_root / path

    def datasets(self, project_root: Path) -> list[ImagingDataset]:
        """One component per catalog file; raises :class:`CatalogError` listing every file and field at fault."""
        tags = gpu_op_tags(resolve_deployment())
        return [ImagingDataset(d, tags) for d in load_catalog(self.location(project_root))]

    def build_defs(self, context: ComponentLoadContext) -> Definitions:
        datasets = self.datasets(context.project_root)
        return Definitions.merge(*(d.build_defs(context) for d in datasets),
                                 Definitions(sensors=build_failure_sensors([d.config for d in datasets])))
