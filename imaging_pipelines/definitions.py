"""The Dagster code location: `dagster dev -w workspace.yaml` loads `defs` from here.

Built from the data catalog (``IMAGING_PIPELINES_CATALOG``, default ``data_catalog/``).
"""

from imaging_pipelines.dagster_layer.factory import build_definitions

defs = build_definitions()
