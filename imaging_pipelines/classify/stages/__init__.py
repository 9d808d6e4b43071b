"""The classification stages of both domains (no dagster import): the model task, per-partition inference
and the per-split evaluation with its report. The domain supplies a
:class:`~imaging_pipelines.classify.stages.source.ClassificationSource` (how to read one partition's network
input and reference class): :mod:`imaging_pipelines.medical.stages.classification` (radiographs) and
:mod:`imaging_pipelines.remote_sensing.stages.tile_classification` (analysis-ready tiles)."""
