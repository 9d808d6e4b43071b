"""The Dagster code location (``dg dev``, ``dg check defs``, ``dagster dev -w workspace.yaml``): the dg defs
folder (the data catalog's components, ``imaging_pipelines/defs/``) plus what the whole location shares
(resources, the deployment's executor, the automation sensor).

The catalog folder is ``IMAGING_PIPELINES_CATALOG`` (default ``data_catalog/``); the deployment file
``IMAGING_PIPELINES_DEPLOYMENT``.
"""

from pathlib import Path

from dagster import Definitions, load_from_defs_folder

from imaging_pipelines.dagster_layer.factory import location_definitions

defs = Definitions.merge(load_from_defs_folder(path_within_project=Path(__file__).parent), location_definitions())
