"""Scene outputs: every tile of a scene stitched back into Cloud-Optimized GeoTIFFs, class polygons as
GeoJSON (scene CRS), class areas in hectares, and the held-out evaluation of model and baseline.

Per scene, under ``<root>/<dataset>/scene_outputs/<scene>/``: ``classes.tif`` (uint8 class values: the
argmax of the tiles' model probabilities, feathered linearly across tile overlaps; for baseline tiles, each
pixel from the tile whose core holds it), ``composite.tif`` (float32 analysis-ready bands and indices, overlaps feathered
linearly), ``classes.geojson``, ``summary.json``, and ``status.json`` (``status`` ``complete`` or ``incomplete``,
``tiles``, ``missing_tiles``, and the missing tile keys). A scene whose tiles are not all segmented is not
stitched: it is reported as incomplete (no areas, no cloud or nodata fraction: they are not measured), and its
outputs of an earlier complete run, if any, are left as they were but no longer reported as current.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from upath import UPath

from imaging_pipelines.core.storage import as_upath, copy_file_atomic, store_exists, write_text_atomic
from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.stage_result import stage_store
from imaging_pipelines.remote_sensing.evaluation import PooledScores
from imaging_pipelines.remote_sensing.stages.tile_model import tile_split
from imaging_pipelines.remote_sensing.stages.tile_ingest import PREPARED, SCENE_OUTPUTS, TILE_SEGMENTATION, scene_tiles, scenes

BASELINE = "baseline_otsu"  # method name of the classical baseline in the evaluation tables


STATUS_FILE = "status.json"


@dataclass
class SceneOutcome:
    """A scene's mosaic: ``cloud_fraction`` / ``nodata_fraction`` are None when not measured (incomplete)."""

    scene: str
    complete: bool
    missing_tiles: int = 0
    tiles: int = 0
    files: dict[str, str] = field(default_factory=dict)
    areas_ha: dict[str, float] = field(default_factory=dict)
    cloud_fraction: float | None = None
    nodata_fraction: float | None = None
    cog_valid: bool | None = None
    cog_errors: list[str] = field(default_factory=list)


@dataclass
class MosaicOutcome:
    scenes: list[SceneOutcome]
    evaluation: dict = field(default_factory=dict)  # split -> method -> class -> IoU (pixel-pooled over tile cores)
    scores: dict = field(default_factory=dict)  # split -> tiles, per-method IoU / mean IoU / accuracy, majority class
    runtime_s: float = 0.0


def held_out_split(dataset: DatasetConfig) -> str:
    """The split evaluated as held out: ``test`` when the segmentation is a trained model (its training and
    validation tiles are never scored), ``all`` for the classical baseline (it is fitted on no tile)."""
    return "test" if dataset.remote_sensing.segmentation.method == "unet" else "all"


def _scene_outputs(dataset: DatasetConfig, root, source, pooled: PooledScores, log) -> SceneOutcome:
    from imaging_pipelines.remote_sensing.cog import validate_cog, write_cog
    from imaging_pipelines.remote_sensing.tiling import stitch
    from imaging_pipelines.remote_sensing.vectorize import class_areas_ha, class_polygons
    from imaging_pipelines.remote_sensing.zarr_tiles import read_tile_layers, read_tile_zarr

    seg = dataset.remote_sensing.segmentation
    grid, tiles = scene_tiles(dataset, source)
    keys = [t.key(source.scene) for t in tiles]
    stores = {k: stage_store(root, dataset.id, TILE_SEGMENTATION, k) for k in keys}
    missing = [k for k, s in stores.items() if not store_exists(s)]
    folder = as_upath(root) / dataset.id / SCENE_OUTPUTS / source.scene
    status = {"scene": source.scene, "status": "incomplete" if missing else "complete", "tiles": len(keys),
              "missing_tiles": len(missing), "missing": missing[:100]}
    if missing:
        write_text_atomic(folder / STATUS_FILE, json.dumps(status, indent=1))
        log(f"scene {source.scene}: incomplete, {len(missing)} of {len(keys)} tile(s) not segmented; not stitched")
        return SceneOutcome(source.scene, False, len(missing), len(keys))
    classes, probabilities, composites, cloud, nodata, valid_px = [], [], [], 0.0, 0.0, 0
    scene_pool = PooledScores(seg.classes)  # this scene's labelled tiles, every split
    class_values = None
    for tile, key in zip(tiles, keys):
        labels = read_tile_zarr(stores[key])
        classes.append((tile, labels))
        layers = read_tile_layers(stores[key], "baseline", "reference", "probability")
        if "probability" in layers:
            class_values = layers["attrs"]["class_values"]
            probabilities.append((tile, labels.with_array(layers["probability"].astype(np.float32), nodata=None,
                                                          band_names=[str(v) for v in class_values])))
        prepared = stage_store(root, dataset.id, PREPARED, key)
        composites.append((tile, read_tile_zarr(prepared)))
        attrs = read_tile_layers(prepared)["attrs"]
        n = tile.core.height * tile.core.width
        cloud += float(attrs.get("cloud_fraction") or 0.0) * n
        nodata += float(attrs.get("nodata_fraction") or 0.0) * n
        valid_px += n
        if "reference" in layers:
            rows, cols = tile.core_in_window.slices
            valid = np.isfinite(composites[-1][1].array[:, rows, cols]).all(axis=0)
            ref = layers["reference"][rows, cols]
            split = tile_split(dataset, key)
            method = layers["attrs"].get("figures", {}).get("method", "model")
            for pool, s in ((pooled, split), (pooled, "all"), (scene_pool, split), (scene_pool, "all")):
                pool.add(s, method, labels.array[0, rows, cols], ref, valid, key)
                pool.add(s, BASELINE, layers["baseline"][rows, cols], ref, valid, key)
    scene_composite = stitch(composites, grid.height, grid.width, blend="feather")
    scene_classes = stitch(classes, grid.height, grid.width, blend="core")
    if len(probabilities) == len(tiles):  # every tile from the model: feather-blend the softmax, then argmax
        blended = stitch(probabilities, grid.height, grid.width, blend="feather").array
        values = np.asarray(class_values, np.uint8)[blended.argmax(axis=0)]
        values[~np.isfinite(scene_composite.array).all(axis=0)] = 0
        scene_classes = scene_classes.with_array(values[np.newaxis])
    outcome = SceneOutcome(source.scene, True, 0, len(keys), cloud_fraction=round(cloud / valid_px, 4),
                           nodata_fraction=round(nodata / valid_px, 4))
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp)
        write_cog(scene_classes, local / "classes.tif", overview_resampling="mode")
        write_cog(scene_composite, local / "composite.tif", overview_resampling="average")
        ok, errors, _ = validate_cog(local / "classes.tif")
        ok2, errors2, _ = validate_cog(local / "composite.tif")
        outcome.cog_valid, outcome.cog_errors = ok and ok2, errors + errors2
        polygons = class_polygons(scene_classes.array[0], grid.transform, grid.crs, seg.classes)
        outcome.areas_ha = {k: round(v, 4) for k, v in
                            class_areas_ha(scene_classes.array[0], grid.transform, grid.crs, seg.classes).items()}
        summary = {"scene": source.scene, "crs": str(grid.crs), "height": grid.height, "width": grid.width,
                   "areas_ha": outcome.areas_ha, "cloud_fraction": outcome.cloud_fraction,
                   "nodata_fraction": outcome.nodata_fraction, "polygons": len(polygons.get("features", [])),
                   "dates": [a.date for a in source.acquisitions],
                   **scene_evaluation(dataset, scene_pool)}
        for name in ("classes.tif", "composite.tif"):
            outcome.files[name] = copy_file_atomic(local / name, folder / name)
        outcome.files["classes.geojson"] = write_text_atomic(folder / "classes.geojson", json.dumps(polygons))
        outcome.files["summary.json"] = write_text_atomic(folder / "summary.json", json.dumps(summary, indent=1))
        outcome.files[STATUS_FILE] = write_text_atomic(folder / STATUS_FILE, json.dumps(status, indent=1))
    log(f"scene {source.scene}: {len(tiles)} tile(s) stitched, areas {outcome.areas_ha} ha")
    return outcome


def scene_evaluation(dataset: DatasetConfig, pool: PooledScores) -> dict:
    """The scene summary's evaluation, on its held-out tiles only (:func:`held_out_split`):
    ``evaluation_split``, ``evaluation_iou`` (method -> class -> IoU) and ``evaluation`` (tiles, per-method
    IoU / mean IoU / accuracy, and the majority-class predictor; None when the scene has no held-out tile)."""
    split = held_out_split(dataset)
    summary = pool.summary(majority_from="train" if split == "test" else split)
    return {"evaluation_split": split, "evaluation_iou": pool.iou().get(split, {}), "evaluation": summary.get(split)}


def scene_row(outcome: SceneOutcome) -> dict:
    """One table row of a scene: ``status`` (``complete`` / ``incomplete: m of n tiles not segmented``), tile
    counts and, for complete scenes only, cloud / nodata fractions and class areas (never a placeholder number)."""
    row = {"scene": outcome.scene, "tiles": outcome.tiles, "missing_tiles": outcome.missing_tiles,
           "status": "complete" if outcome.complete else
           f"incomplete: {outcome.missing_tiles} of {outcome.tiles} tiles not segmented"}
    if outcome.complete:
        row.update(cloud_fraction=outcome.cloud_fraction, nodata_fraction=outcome.nodata_fraction,
                   **{f"{k}_ha": v for k, v in outcome.areas_ha.items()})
    return row


def scene_status(folder: UPath) -> dict:
    """The ``status.json`` of a scene's outputs folder (``{"status": "complete"}`` for folders written before it)."""
    path = folder / STATUS_FILE
    return json.loads(path.read_text()) if path.exists() else {"status": "complete"}


def model_beats_baseline(test: dict) -> bool:
    """True when the model's IoU (``test[method][class]``, pooled over the test tiles) beats the baseline's
    for every class. An IoU of None is an empty union (the class in neither reference nor prediction): a
    perfect 1.0, which counts as a win even when the baseline is perfect too."""
    model = next((m for m in test if m != BASELINE), None)
    if model is None or not test.get(BASELINE):
        return False
    iou = {m: {c: 1.0 if v is None else v for c, v in test[m].items()} for m in (model, BASELINE)}
    return all(iou[model].get(c, 1.0) == 1.0 or iou[model].get(c, 1.0) > iou[BASELINE][c] for c in iou[BASELINE])


def build_scene_outputs(dataset: DatasetConfig, root: UPath | str, log=print) -> MosaicOutcome:
    start = time.perf_counter()
    pooled = PooledScores(dataset.remote_sensing.segmentation.classes)
    outcomes = [_scene_outputs(dataset, root, source, pooled, log) for _, source in sorted(scenes(dataset).items())
                if source.acquisitions]
    split = held_out_split(dataset)
    scores = pooled.summary(majority_from="train" if split == "test" else split)
    return MosaicOutcome(outcomes, pooled.iou(), scores, time.perf_counter() - start)
