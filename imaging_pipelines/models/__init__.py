"""One protocol for every trained or imported model.

- :mod:`~imaging_pipelines.models.protocol`: ``ModelTask`` (per-task hooks), ``train_or_reuse``, ``load_current``;
- :mod:`~imaging_pipelines.models.outcome`: ``ModelOutcome`` (what every model asset reports), ``MetricCheck``;
- :mod:`~imaging_pipelines.models.versioning`: version = hash of code + data + parameters;
- :mod:`~imaging_pipelines.models.store`: versioned model files and ``current.json``;
- :mod:`~imaging_pipelines.models.device`: CUDA (with AMP) when present, else CPU.
"""
