"""Check a remote-sensing dataset's inbox files against its catalog entry (``imaging-pipelines catalog validate``).

Every raster file the scenes would read is opened (header only) and its band count compared with the
catalog: the multi-band ``index`` of every band (and, for a ``time_series`` file, the band each date maps
to, and the total the dates imply), and the ``band`` of every layer. A problem is reported as
``(file, field, message)`` naming the file, the band and the file's band count, so a wrong index fails at
validation time rather than in every tile run.
"""

from __future__ import annotations

from pathlib import Path

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.remote_sensing.io import RasterReader
from imaging_pipelines.remote_sensing.scene_read import band_count_problem
from imaging_pipelines.remote_sensing.scenes import discover_scenes


def inbox_band_errors(dataset: DatasetConfig) -> list[tuple[str, str, str]]:
    """``(file, field, message)`` for every inbox file whose bands cannot be what the catalog says.

    Remote inboxes (URIs) and inboxes not created yet are not checked (empty list)."""
    cfg = dataset.remote_sensing
    if cfg is None or "://" in dataset.inbox or not Path(dataset.inbox).is_dir():
        return []
    counts: dict[str, int | str] = {}

    def count(path: str) -> int | str:
        if path not in counts:
            try:
                with RasterReader(path) as reader:
                    counts[path] = reader.count
            except ImagingInputError as exc:
                counts[path] = exc.problem
        return counts[path]

    errors: dict[tuple[str, str], str] = {}
    for source in discover_scenes(dataset.inbox, cfg):
        for acquisition in source.acquisitions:
            for spec in cfg.bands:
                path = acquisition.path_of(spec.name)
                n = count(path)
                problem = n if isinstance(n, str) else band_count_problem(cfg, acquisition, n)
                if problem:
                    errors.setdefault((path, "remote_sensing.bands"), problem)
            for layer in cfg.layers:
                path, field = acquisition.path_of(layer.name), f"remote_sensing.layers.{layer.name}.band"
                n = count(path)
                if isinstance(n, str):
                    errors.setdefault((path, field), n)
                elif layer.band > n:
                    errors.setdefault((path, field), f"layer {layer.name!r} is band {layer.band}, but the file "
                                                     f"has {n} band(s)")
    return [(path, field, message) for (path, field), message in sorted(errors.items())]
