"""The dg defs folder (``[tool.dg.project] defs_module``): ``catalog/defs.yaml`` is the single
:class:`~imaging_pipelines.dagster_layer.components.DataCatalog` component instance."""
