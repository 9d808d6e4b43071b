"""Tile classification source: the network input of an analysis-ready tile's core (the catalog's
``classification.inputs`` bands, all composite bands by default) and the tile's reference class, the class
covering at least ``labels.min_fraction`` of the core's valid labelled pixels (``source: tile_reference``).
"""

from __future__ import annotations

import numpy as np
from upath import UPath

from imaging_pipelines.classify.stages.source import ClassificationSource
from imaging_pipelines.core.asset_names import PREPARED
from imaging_pipelines.core.stage_result import stage_store
from imaging_pipelines.remote_sensing.tile_classify import tile_class, tile_input


class TileSource(ClassificationSource):
    input_stage = PREPARED

    def _core(self, root: UPath | str, partition: str) -> tuple[np.ndarray, list[str], np.ndarray | None]:
        from imaging_pipelines.remote_sensing.zarr_tiles import read_tile_info, read_tile_layers, read_tile_zarr

        store = stage_store(root, self.dataset.id, PREPARED, partition)
        composite = read_tile_zarr(store)
        names = self.config.inputs or list(composite.band_names)
        missing = [n for n in names if n not in composite.band_names]
        if missing:
            raise ValueError(f"classification.inputs {missing} are not composite bands ({composite.band_names})")
        rows, cols = read_tile_info(store)[1].core_in_window.slices
        bands = np.stack([composite.band(n) for n in names]).astype(np.float32)[:, rows, cols]
        reference = read_tile_layers(store, "reference").get("reference")
        return bands, names, None if reference is None else reference[rows, cols]

    def image(self, root: UPath | str, partition: str) -> np.ndarray:
        bands, self.band_names, _ = self._core(root, partition)
        return tile_input(bands, self.config.training.input_size)

    def label(self, root: UPath | str, partition: str) -> int | None:
        bands, _, reference = self._core(root, partition)
        if reference is None:
            return None
        valid = np.isfinite(bands).all(axis=0)
        return tile_class(reference, sorted(self.config.classes.values()), self.config.labels.min_fraction, valid)

    def display(self, image: np.ndarray) -> np.ndarray:
        """True colour from the red, green and blue inputs when the last image read has them, else the first band."""
        names = getattr(self, "band_names", [])
        picks = [names.index(n) for n in ("red", "green", "blue") if n in names] if len(names) == image.shape[0] else []
        rgb = image[picks] if len(picks) == 3 else np.repeat(image[:1], 3, axis=0)
        lo, hi = np.nanpercentile(rgb, 2), np.nanpercentile(rgb, 98)
        return np.nan_to_num(np.clip((rgb - lo) / (hi - lo if hi > lo else 1.0), 0, 1)).transpose(1, 2, 0)
