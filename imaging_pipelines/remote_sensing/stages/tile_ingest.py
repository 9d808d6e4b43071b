"""Remote-sensing ingestion per tile: the acquisitions of one scene window, on the scene grid, as one Zarr
store ``<root>/<dataset>/scene_tiles/<scene>__r<row>_c<col>.zarr`` with dims ``(time, band, y, x)``
(float32 DN, NaN = nodata) and, when the scene has labels, a ``reference`` layer ``(y, x)`` of class values.
The ``scene_shifts`` attribute holds each later date's shift against the first, measured on the scene
(see :func:`scene_shifts`); the analysis-ready stage applies it.

The tile window includes the catalog's overlap on every side (clipped at the scene edge); the core and
window are recorded in the store's ``tile`` attribute.
"""

from __future__ import annotations

import json
import math
import time
from functools import lru_cache

import numpy as np
from upath import UPath

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.core.storage import as_upath, write_text_atomic
from imaging_pipelines.core.stage_result import CheckOutcome, StageResult, stage_store
from imaging_pipelines.core.asset_names import PREPARED, SCENE_OUTPUTS, TILES, TILE_MODEL, TILE_SEGMENTATION  # noqa: F401 (re-exported)



@lru_cache(maxsize=8)
def _discover(inbox: str, config_json: str, stamp: float):
    from imaging_pipelines.config.remote_sensing import RemoteSensingConfig
    from imaging_pipelines.remote_sensing.scenes import discover_scenes

    return discover_scenes(inbox, RemoteSensingConfig.model_validate_json(config_json))


def scenes(dataset: DatasetConfig) -> dict:
    """Scene name -> :class:`~imaging_pipelines.remote_sensing.scenes.SceneSource` of the dataset's inbox."""
    if "://" not in dataset.inbox and not UPath(dataset.inbox).exists():
        return {}  # nothing dropped yet
    stamp = time.monotonic() // 5  # re-list the inbox at most every 5 s within one process
    return {s.scene: s for s in _discover(dataset.inbox, dataset.remote_sensing.model_dump_json(), stamp)}


def scene_source(dataset: DatasetConfig, scene: str):
    found = scenes(dataset).get(scene)
    if found is None:
        raise ImagingInputError(dataset.inbox, f"scene {scene!r} is no longer in the inbox")
    if not found.acquisitions:
        raise ImagingInputError(found.root, "no complete acquisition: " + "; ".join(found.problems))
    return found


def scene_tiles(dataset: DatasetConfig, source):
    """``(grid, tiles)`` of a scene with the catalog's tiling."""
    from imaging_pipelines.remote_sensing.scenes import scene_grid

    grid = scene_grid(source, dataset.remote_sensing)
    return grid, grid.tiles(dataset.remote_sensing.tiling)


def find_tile(dataset: DatasetConfig, partition: str):
    """``(source, grid, tile)`` of a tile partition key; ImagingInputError when it is not on the grid."""
    from imaging_pipelines.remote_sensing.tiling import parse_partition_key

    scene, row, col = parse_partition_key(partition)
    source = scene_source(dataset, scene)
    grid, tiles = scene_tiles(dataset, source)
    tile = next((t for t in tiles if (t.row, t.col) == (row, col)), None)
    if tile is None:
        raise ImagingInputError(source.root, f"tile r{row}_c{col} is outside the scene grid "
                                             f"({grid.height}x{grid.width} px, tiles of {dataset.remote_sensing.tiling.size})")
    return source, grid, tile


SHIFT_WINDOW_PX = 1024  # co-registration is measured on the central window of this size (or the whole scene)


def scene_shifts(dataset: DatasetConfig, source, grid, root: UPath | str) -> dict[str, list[float]]:
    """Date -> ``(dy, dx)`` px of each later date against the first, measured once per scene version by
    phase correlation on the scene's central ``SHIFT_WINDOW_PX`` window (a small tile with little texture
    or many clouds can mislead it). Cached as JSON under ``scene_tiles/_scene_shifts/``; dates where the
    shift cannot be measured are left out (each tile then measures its own)."""
    from imaging_pipelines.remote_sensing.analysis_ready import analysis_ready_tile
    from imaging_pipelines.core.raster import PixelWindow
    from imaging_pipelines.remote_sensing.scene_read import read_acquisition_window
    from imaging_pipelines.remote_sensing.scenes import scene_fingerprint

    cfg = dataset.remote_sensing
    if not cfg.coregister or len(source.acquisitions) < 2:
        return {}
    cache = as_upath(root) / dataset.id / TILES / "_scene_shifts" / f"{source.scene}-{scene_fingerprint(source)}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    h, w = min(grid.height, SHIFT_WINDOW_PX), min(grid.width, SHIFT_WINDOW_PX)
    window = PixelWindow((grid.height - h) // 2, (grid.width - w) // 2, h, w)
    stack = [read_acquisition_window(source, a, cfg, grid, window)[0] for a in source.acquisitions]
    records = analysis_ready_tile(stack, [a.date for a in source.acquisitions], cfg).shifts[1:]
    shifts = {r["date"]: [r["dy_px"], r["dx_px"]] for r in records if math.isfinite(r["dy_px"])}
    write_text_atomic(cache, json.dumps(shifts))
    return shifts


def ingest_tile(dataset: DatasetConfig, partition: str, root: UPath | str) -> StageResult:
    """Read every acquisition of the tile's window onto the scene grid and store the date stack."""
    from imaging_pipelines.remote_sensing.scene_read import read_acquisition_window, read_label_window
    from imaging_pipelines.remote_sensing.zarr_tiles import write_tile_zarr

    start = time.perf_counter()
    cfg = dataset.remote_sensing
    source, grid, tile = find_tile(dataset, partition)
    stack, dates, notes, rows = [], [], [], []
    for acquisition in source.acquisitions:
        raster, acquisition_notes = read_acquisition_window(source, acquisition, cfg, grid, tile.window)
        stack.append(raster)
        dates.append(acquisition.date)
        notes += [f"{acquisition.date or 'undated'}: {n}" for n in acquisition_notes]
        valid = np.isfinite(raster.array[:len(cfg.bands)]).all(axis=0)  # bands only (layers may cover less)
        rows.append({"date": acquisition.date or "undated", "bands": len(raster.band_names),
                     "nodata_fraction": round(float(1 - valid.mean()), 4)})
    notes += list(source.problems)
    layers = {}
    reference = read_label_window(source, cfg, grid, tile.window)
    if reference is not None:
        layers["reference"] = reference.astype(np.uint8)
    empty = not any(r["nodata_fraction"] < 1 for r in rows)
    checks = {"tile_has_valid_pixels": CheckOutcome(
        not empty, "some pixel of the tile window holds data in some date",
        {"dates": len(rows), "min_nodata_fraction": min(r["nodata_fraction"] for r in rows)})}
    if empty:
        notes.append("every pixel of the tile window is nodata in every date (outside the footprint, or a fill-only file)")
    shifts = scene_shifts(dataset, source, grid, root)
    store = stage_store(root, dataset.id, TILES, partition)
    write_tile_zarr(stack[0], store, tile=tile, scene=source.scene, stack=stack, times=dates, layers=layers,
                    attrs={"scene_shifts": shifts})
    return StageResult(str(store), images=[d or "undated" for d in dates], rows=rows, notes=notes, checks=checks,
                       runtime_s=time.perf_counter() - start)
