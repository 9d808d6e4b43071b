"""The remote-sensing chain through the real Dagster definitions on synthetic multi-date scenes with known
water and built-up masks: sensor -> tiles -> analysis-ready tiles -> 2D U-Net model (trained once, reused)
-> tile segmentation -> stitched COGs, polygons and areas; held-out water IoU against the NDWI baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rasterio
import xarray as xr
import yaml
from dagster import AssetKey, DagsterInstance

from imaging_pipelines.config.paths import DEFAULT_CATALOG_DIR
from imaging_pipelines.dagster_layer.local_runs import materialization_metadata
from imaging_pipelines.dagster_layer.factory import build_definitions
from imaging_pipelines.dagster_layer.scene_demo import run_tile_chain
from imaging_pipelines.core.storage import partition_store_path
from imaging_pipelines.remote_sensing import parse_partition_key, read_tile_info, read_tile_layers, validate_cog

DS = "demo_scenes"


def catalog_entry(root: Path, dataset_id: str, inbox: str, **changes) -> Path:
    """The project's catalog entry ``dataset_id`` with its inbox moved to ``root/inbox`` (and ``changes``
    merged into its ``remote_sensing`` block), written as the only entry of ``root/catalog``."""
    entry = yaml.safe_load((DEFAULT_CATALOG_DIR / f"{dataset_id}.yaml").read_text())
    entry["inbox"] = f"../{inbox}"
    for name, value in changes.items():
        entry["remote_sensing"][name] = value
    (root / "catalog").mkdir(exist_ok=True)
    (root / "catalog" / f"{dataset_id}.yaml").write_text(yaml.safe_dump(entry))
    return root / "catalog"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from imaging_pipelines.tools.demo.scenes import write_demo_scenes

    root = tmp_path_factory.mktemp("rs")
    mp = pytest.MonkeyPatch()
    mp.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(root))
    mp.setenv("IMAGING_PIPELINES_STORAGE_ROOT", str(root / "storage"))
    mp.setenv("IMAGING_PIPELINES_CATALOG", str(catalog_entry(root, DS, "inbox")))
    truth = write_demo_scenes(root / "inbox", n_scenes=4, seed=0)
    defs = build_definitions()
    with DagsterInstance.ephemeral() as instance:
        out = run_tile_chain(defs, DS, instance, echo=print)
        retrain = defs.resolve_job_def(f"{DS}__training_job").execute_in_process(instance=instance, raise_on_error=False)
        out["retrained"] = materialization_metadata(retrain, "land_cover_model")
    out.update(root=root, truth=truth, defs=defs)
    yield out
    mp.undo()


def test_lineage_partitions_and_tile_stores(chain):
    graph = chain["defs"].resolve_asset_graph()
    parents = lambda name: {k.path[-1] for k in graph.get(AssetKey([DS, name])).parent_keys}  # noqa: E731
    assert parents("analysis_ready_tiles") == {"scene_tiles"}
    assert parents("land_cover_model") == {"analysis_ready_tiles"}
    assert parents("tile_segmentation") == {"analysis_ready_tiles", "land_cover_model"}
    assert parents("scene_outputs") == {"tile_segmentation"}
    assert not chain["failed"]
    scenes = {parse_partition_key(k)[0] for k in chain["keys"]}
    assert scenes == {t["name"] for t in chain["truth"]}
    key = chain["keys"][0]
    store = partition_store_path(chain["root"] / "storage", DS, "scene_tiles", key)
    with xr.open_zarr(store, consolidated=False) as ds:
        assert ds["raster"].dims == ("time", "band", "y", "x")
        assert ds.sizes["time"] == len(chain["truth"][0]["dates"])
        scene, tile = read_tile_info(store)
        label = Path(chain["root"] / "inbox" / scene / f"{scene}_label.tif")
        with rasterio.open(label) as src:
            assert ds.rio.crs == src.crs
            expected = src.window_transform(tile.window.to_rasterio())
            assert ds.rio.transform() == expected


def test_dates_coregistered_with_the_known_shifts(chain):
    assert not chain["checks_failed"]
    for truth in chain["truth"]:
        key = next(k for k in chain["keys"] if k.startswith(truth["name"] + "__"))
        store = partition_store_path(chain["root"] / "storage", DS, "analysis_ready_tiles", key)
        records = read_tile_layers(store)["attrs"]["shifts"]
        assert [r["date"] for r in records] == truth["dates"]
        for record, (dy, dx) in zip(records[1:], truth["shifts"][1:]):
            assert record["applied"] and abs(record["dy_px"] - dy) < 0.3 and abs(record["dx_px"] - dx) < 0.3


def test_model_beats_ndwi_baseline_on_held_out_tiles(chain):
    model = chain["model"]
    assert model["trained_now"] is True and chain["retrained"]["trained_now"] is False
    assert chain["retrained"]["model_version"] == model["model_version"]
    test = chain["outputs"]["evaluation_iou"]["test"]
    print("held-out IoU", test)
    assert test["unet2d"]["water"] >= 0.90
    assert test["unet2d"]["water"] > test["baseline_otsu"]["water"]
    assert test["unet2d"]["built"] > test["baseline_otsu"]["built"]


def test_scene_outputs_cogs_polygons_areas(chain):
    files = chain["outputs"]["files"]
    assert set(files) == {t["name"] for t in chain["truth"]}
    for truth in chain["truth"]:
        out = files[truth["name"]]
        for cog in ("classes.tif", "composite.tif"):
            ok, errors, _ = validate_cog(out[cog])
            assert ok, errors
        label = chain["root"] / "inbox" / truth["name"] / f"{truth['name']}_label.tif"
        with rasterio.open(out["classes.tif"]) as pred, rasterio.open(label) as ref:
            assert (pred.crs, pred.transform, pred.shape) == (ref.crs, ref.transform, ref.shape)
            ref_water_ha = float((ref.read(1) == 1).sum()) * abs(ref.transform.a * ref.transform.e) / 1e4
        summary = json.loads(Path(out["summary.json"]).read_text())
        assert summary["areas_ha"]["water"] == pytest.approx(ref_water_ha, rel=0.15)
        assert 0 < summary["cloud_fraction"] < 0.5
        polygons = json.loads(Path(out["classes.geojson"]).read_text())
        assert {f["properties"]["class"] for f in polygons["features"]} <= {"water", "built"}
        assert sum(f["properties"]["area_ha"] for f in polygons["features"]
                   if f["properties"]["class"] == "water") == pytest.approx(summary["areas_ha"]["water"], rel=1e-6)
