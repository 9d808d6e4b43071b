"""Medical preprocessing: masks, N4 bias correction, reorientation and resampling, intensity normalisation,
denoising, averaging of repeated acquisitions, and YAML recipes that chain them.

Every function takes a :class:`~imaging_pipelines.core.volume.Volume` and returns a new one (geometry kept or
explicitly changed), most with a small report dataclass of plain-Python metrics. No dagster here.
"""
