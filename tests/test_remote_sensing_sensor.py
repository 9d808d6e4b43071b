"""The scene inbox sensor: one partition per tile, reruns only the tiles of a scene whose files changed, and
an identity run of the tile chain stitches back the source GeoTIFF bit for bit."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import rasterio
import yaml
from dagster import DagsterInstance

from imaging_pipelines.dagster_layer.local_runs import run_sensor_once
from imaging_pipelines.dagster_layer.factory import build_definitions
from imaging_pipelines.core.storage import partition_store_path
from imaging_pipelines.remote_sensing import read_tile_info, read_tile_zarr, stitch, validate_cog, write_cog
from tests.test_remote_sensing_pipeline import catalog_entry


@pytest.fixture
def rs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(tmp_path))
    monkeypatch.setenv("IMAGING_PIPELINES_STORAGE_ROOT", str(tmp_path / "storage"))
    monkeypatch.setenv("IMAGING_PIPELINES_CATALOG", str(tmp_path / "catalog"))
    return tmp_path


def test_sensor_adds_tiles_and_reruns_changed_scenes_only(rs_root):
    from imaging_pipelines.tools.demo.scenes import write_demo_scenes

    catalog_entry(rs_root, "demo_scenes", "inbox")
    scenes = write_demo_scenes(rs_root / "inbox", n_scenes=2, size=200, n_dates=2, seed=1)
    defs = build_definitions()
    with DagsterInstance.ephemeral() as instance:
        first = run_sensor_once(defs, "demo_scenes", instance)
        keys = sorted(r.partition_key for r in first.run_requests)
        assert len(keys) == 2 * 4  # 200 px scenes in 128 px tiles: 2 x 2 tiles each
        assert sorted(instance.get_dynamic_partitions("demo_scenes__tiles")) == keys
        assert {k.split("__")[0] for k in keys} == {s["name"] for s in scenes}
        cursor = first.cursor
        sensor = defs.resolve_sensor_def("demo_scenes__inbox_sensor")
        from dagster import build_sensor_context

        again = sensor(build_sensor_context(instance=instance, definitions=defs, resources=defs.resources, cursor=cursor))
        assert not again.run_requests
        changed = scenes[1]["name"]
        band = next((rs_root / "inbox" / changed).rglob("*_B4.tif"))
        time.sleep(0.01)
        os.utime(band, ns=(time.time_ns(), time.time_ns()))
        rerun = sensor(build_sensor_context(instance=instance, definitions=defs, resources=defs.resources, cursor=cursor))
        assert sorted(r.partition_key for r in rerun.run_requests) == [k for k in keys if k.startswith(changed + "__")]


def test_identity_tile_chain_gives_back_the_scene_bit_for_bit(rs_root, shared_data, tmp_path, monkeypatch):
    source = shared_data / "remote_sensing" / "landsat_rgb" / "RGB.byte.tif"
    monkeypatch.setenv("IMAGING_PIPELINES_DATA_ROOTS", os.pathsep.join([str(rs_root), str(shared_data)]))  # the link's target
    (rs_root / "inbox").mkdir()
    os.symlink(source, rs_root / "inbox" / "rgb.tif")
    entry = {"id": "rgb", "domain": "remote_sensing", "inbox": "../inbox", "formats": ["geotiff"], "partitioning": "tile",
             "remote_sensing": {"bands": [{"name": n, "index": i + 1} for i, n in enumerate(("red", "green", "blue"))],
                                "indices": [], "coregister": False, "cloud_mask": {"source": "none"},
                                "tiling": {"size": 200, "overlap": 24}}}
    (rs_root / "catalog").mkdir()
    (rs_root / "catalog" / "rgb.yaml").write_text(yaml.safe_dump(entry))
    defs = build_definitions()
    with DagsterInstance.ephemeral() as instance:
        keys = [r.partition_key for r in run_sensor_once(defs, "rgb", instance).run_requests]
        job = defs.resolve_job_def("rgb__tile_job")
        for key in keys:
            assert job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False).success
    pieces = []
    for key in keys:
        store = partition_store_path(rs_root / "storage", "rgb", "scene_tiles", key)
        tile = read_tile_info(store)[1]
        raster = read_tile_zarr(store)  # float32 DN, NaN where the file's nodata (0) was
        pieces.append((tile, raster.with_array(np.nan_to_num(raster.array, nan=0).astype(np.uint8), nodata=0)))
    with rasterio.open(source) as src:
        scene = stitch(pieces, src.height, src.width, blend="feather")
        cog = write_cog(scene, tmp_path / "rgb_cog.tif")
        with rasterio.open(cog) as out:
            assert (out.crs, out.transform, out.nodata, out.shape) == (src.crs, src.transform, src.nodata, src.shape)
            np.testing.assert_array_equal(out.read(), src.read())
    assert validate_cog(cog)[0]


def test_model_beats_baseline_rule():
    from imaging_pipelines.remote_sensing.stages.scene_mosaic import model_beats_baseline

    # a class absent from reference and prediction of the test tiles (empty union) is a win, not a loss
    assert model_beats_baseline({"baseline_otsu": {"built": 0.0, "water": 0.85}, "unet2d": {"built": None, "water": 0.99}})
    assert not model_beats_baseline({"baseline_otsu": {"water": 0.9}, "unet2d": {"water": 0.8}})
    assert not model_beats_baseline({"baseline_otsu": {"water": 0.9}, "unet2d": {"water": 0.9}})  # a tie is no win
    assert not model_beats_baseline({})  # nothing held out: nothing shown
