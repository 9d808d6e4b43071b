"""Analysis-ready tiles: reflectance, nodata and cloud masks, co-registration of dates, temporal median
composite and spectral indices (see :func:`imaging_pipelines.remote_sensing.analysis_ready.analysis_ready_tile`).

Store ``<root>/<dataset>/analysis_ready_tiles/<key>.zarr``: ``raster`` ``(band, y, x)`` float32 (reflectance
bands then indices, NaN = no clear observation); layers ``cloud`` and ``nodata`` ``(time, y, x)`` uint8,
``valid_count`` ``(y, x)`` uint8 (clear observations per pixel), ``layer_<name>`` ``(y, x)`` float32 for each
DEM / extra layer that is not a model channel, ``per_date`` ``(time, date_band, y, x)`` float32 (each date's
co-registered reflectance, NaN where not clear) with ``segmentation.temporal: per_date``, and ``reference``
when the tile has labels.
"""

from __future__ import annotations

import time

import numpy as np
from upath import UPath

from imaging_pipelines.core.storage import store_exists
from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.stage_result import CheckOutcome, StageResult, stage_store
from imaging_pipelines.remote_sensing.stages.tile_ingest import PREPARED, TILES


def prepare_tile(dataset: DatasetConfig, partition: str, root: UPath | str) -> StageResult:
    from imaging_pipelines.remote_sensing.analysis_ready import analysis_ready_tile
    from imaging_pipelines.remote_sensing.zarr_tiles import read_tile_info, read_tile_layers, read_tile_stack, write_tile_zarr

    start = time.perf_counter()
    cfg = dataset.remote_sensing
    source_store = stage_store(root, dataset.id, TILES, partition)
    if not store_exists(source_store):
        raise FileNotFoundError(f"{source_store}: no ingested tile (materialise {TILES} first)")
    stack, dates = read_tile_stack(source_store)
    scene, tile = read_tile_info(source_store)
    known = read_tile_layers(source_store)["attrs"].get("scene_shifts") or {}
    products = analysis_ready_tile(stack, dates, cfg, known_shifts={d: tuple(v) for d, v in known.items()})
    layers = {"cloud": products.cloud.astype(np.uint8), "nodata": products.nodata.astype(np.uint8),
              "valid_count": products.valid_count.astype(np.uint8),
              **{f"layer_{name}": values for name, values in products.layers.items()}}
    if cfg.segmentation.temporal == "per_date":  # each date's clear reflectance, for the model's temporal input
        layers["per_date"] = (("time", "date_band", "y", "x"), products.per_date)
    reference = read_tile_layers(source_store, "reference").get("reference")
    if reference is not None:
        layers["reference"] = reference
    store = stage_store(root, dataset.id, PREPARED, partition)
    attrs = {"cloud_fraction": products.cloud_fraction, "nodata_fraction": products.nodata_fraction,
             "shifts": products.shifts, "dates": dates}
    write_tile_zarr(products.composite, store, tile=tile, scene=scene, layers=layers, attrs=attrs)
    rows = [{"date": s.get("date") or "undated", "dy_px": round(float(s.get("dy_px", 0.0)), 3),
             "dx_px": round(float(s.get("dx_px", 0.0)), 3), "applied": str(bool(s.get("applied"))),
             "cloud_fraction": round(float(products.cloud[i][~products.nodata[i]].mean()) if (~products.nodata[i]).any()
                                     else 0.0, 4)}
            for i, s in enumerate(products.shifts)]
    rejected = [s for s in products.shifts if not s.get("applied") and s.get("reason")]
    checks = {"coregistration_shifts_within_limit": CheckOutcome(
        not any("max_shift" in str(s.get("reason")) or "exceeds" in str(s.get("reason")) for s in rejected),
        f"measured date-to-date shifts within {cfg.max_shift_px} px",
        {"rejected": len(rejected)})}
    index_ranges = {}
    for name in cfg.indices:
        values = products.composite.band(name)
        finite = values[np.isfinite(values)]
        index_ranges[name] = [round(float(finite.min()), 4), round(float(finite.max()), 4)] if finite.size else None
    extra = {"cloud_fraction": round(products.cloud_fraction, 4),
             "nodata_fraction": round(products.nodata_fraction, 4), "index_ranges": index_ranges}
    return StageResult(str(store), images=list(products.composite.band_names), rows=rows, notes=list(products.notes),
                       checks=checks, runtime_s=time.perf_counter() - start, extra=extra)
