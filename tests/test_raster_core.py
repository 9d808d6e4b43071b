"""Remote-sensing imaging core: tiling -> Zarr -> COG round trip, labels, awkward files, indices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine

from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.remote_sensing import (
    Raster, geotiff_to_cog, iou, map_tiles, ndbi, ndvi, ndwi, parse_partition_key, rasterize_labels, read_raster,
    read_tile_info, read_tile_zarr, spectral_indices, split, stitch, stitch_to_geotiff, tile_grid, validate_cog,
    write_cog, write_tile_zarr,
)

# affine 3.0 flags `transform * ...` inside rasterio / rioxarray / rio-cogeo (not in this package)
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")


@pytest.fixture(scope="module")
def rs(shared_data):
    return shared_data / "remote_sensing"


@pytest.mark.parametrize("overlap", [0, 32])
def test_rgb_tiles_zarr_cog_round_trip_is_bit_exact(rs, tmp_path, overlap):
    src = rs / "landsat_rgb" / "RGB.byte.tif"
    scene = read_raster(src)
    assert scene.shape == (3, 718, 791) and scene.dtype == np.uint8 and scene.nodata == 0
    pieces = []
    for tile, sub in split(scene, 256, overlap):
        store = write_tile_zarr(sub, tmp_path / f"{tile.key('rgb')}.zarr", tile=tile, scene="rgb")
        assert parse_partition_key(tile.key("rgb")) == ("rgb", tile.row, tile.col)
        opened = xr.open_zarr(str(store), consolidated=False)  # plain xarray + rioxarray view
        assert opened["raster"].dims == ("band", "y", "x")
        assert opened.rio.crs == scene.crs_obj and opened.rio.transform() == sub.transform
        back = read_tile_zarr(store)
        assert back.array.dtype == np.uint8 and np.array_equal(back.array, sub.array)
        assert back.transform == sub.transform and back.nodata == 0
        assert read_tile_info(store) == ("rgb", tile)
        pieces.append((tile, back))
    assert len(pieces) == 12 and not list(tmp_path.glob("*.staging-*"))  # 3x4 tiles, no leftovers

    mosaic = stitch(pieces, scene.height, scene.width)  # in memory, then COG
    cogs = [write_cog(mosaic, tmp_path / "rgb_cog.tif")]
    streamed = stitch_to_geotiff(pieces, tmp_path / "rgb_stream.tif", scene.height, scene.width)  # tile by tile
    cogs.append(geotiff_to_cog(streamed, tmp_path / "rgb_stream_cog.tif"))
    for cog in cogs:
        valid, errors, warnings = validate_cog(cog)
        assert valid, errors
        with rasterio.open(cog) as ds, rasterio.open(src) as ref:
            assert ds.is_tiled and ds.block_shapes[0] == (256, 256) and ds.overviews(1)
            assert ds.crs == ref.crs and ds.transform == ref.transform and ds.nodata == ref.nodata
            assert ds.dtypes == ref.dtypes
            assert np.array_equal(ds.read(), ref.read())
    assert not list(tmp_path.glob(".*tmp-*"))


def test_map_tiles_threaded_equals_serial(rs, tmp_path):
    src = rs / "landsat_rgb" / "RGB.byte.tif"

    def invert(r):
        return r.with_array(255 - r.array)

    serial = list(map_tiles(src, invert, 200, 16))
    threaded = list(map_tiles(src, invert, 200, 16, workers=2))
    assert [t for t, _ in serial] == [t for t, _ in threaded] == tile_grid(718, 791, 200, 16)
    for (_, a), (_, b) in zip(serial, threaded):
        assert np.array_equal(a.array, b.array) and a.transform == b.transform
    out = stitch(threaded, 718, 791)
    assert np.array_equal(out.array, 255 - read_raster(src).array)


def test_feather_blend_reproduces_identical_overlaps(rs):
    scene = read_raster(rs / "landsat_rgb" / "RGB.byte.tif")
    for tile, overlap in [(256, 32), (100, 40)]:
        out = stitch(split(scene, tile, overlap), scene.height, scene.width, blend="feather")
        assert out.dtype == np.uint8 and np.array_equal(out.array, scene.array)
        assert out.transform == scene.transform


def test_tile_grid_edges_are_clipped_not_padded():
    tiles = tile_grid(718, 791, 256, 32)
    assert len(tiles) == 12 and [(t.row, t.col) for t in tiles[3:5]] == [(0, 3), (1, 0)]  # row-major
    last = tiles[-1]  # 718 = 2*256 + 206 rows, 791 = 3*256 + 23 columns
    assert tuple(last.core) == (512, 768, 206, 23) and tuple(last.window) == (480, 736, 238, 55)
    assert tuple(tiles[0].window) == (0, 0, 288, 288) and tuple(tiles[0].core_in_window) == (0, 0, 256, 256)
    cover = np.zeros((718, 791), int)
    for t in tiles:
        cover[t.core.slices] += 1
    assert (cover == 1).all()


def test_windowed_read_matches_raster_window(rs):
    path = rs / "landsat_rgb" / "RGB.byte.tif"
    scene = read_raster(path)
    part = read_raster(path, bands=["b3", 1], window=(100, 200, 50, 60))
    sub = scene.window(100, 200, 50, 60)
    assert np.array_equal(part.array, sub.array[[2, 0]]) and part.band_names == ["b3", "b1"]
    assert part.transform == sub.transform
    with rasterio.open(path) as ds:
        assert part.transform.almost_equals(ds.window_transform(rasterio.windows.Window(200, 100, 60, 50)))


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # solaris' mask has no geo
def test_spacenet_labels_burn_onto_grid(rs):
    folder = rs / "spacenet_atlanta"
    grid = read_raster(folder / "sample_geotiff.tif")
    mask = rasterize_labels(folder / "geotiff_labels.geojson", grid, burn_value=255)
    with rasterio.open(folder / "sample_fp_mask_from_geojson.tif") as ds:
        expected = ds.read(1)
    score = iou(mask, expected)
    print(f"IoU vs solaris mask: {score:.6f} ({int((mask != expected).sum())} differing pixels)")
    assert mask.shape == (900, 900) and set(np.unique(mask)) <= {0, 255}
    assert score >= 0.99
    # the same polygons given in lon/lat are reprojected to the raster's UTM CRS first
    from imaging_pipelines.remote_sensing.labels import load_geojson
    from rasterio.warp import transform_geom

    geoms, crs = load_geojson(folder / "geotiff_labels.geojson")
    lonlat = [transform_geom(crs, "EPSG:4326", g) for g in geoms]
    assert iou(rasterize_labels(lonlat, grid, labels_crs="EPSG:4326"), expected) >= 0.99


@pytest.mark.parametrize("name", ["corrupt.tif", "all-nodata.tif", "rotated.tif", "missing.tif"])
def test_bad_files_give_clear_errors(rs, name):
    path = rs / "landsat_rgb" / name
    with pytest.raises(ImagingInputError) as info:
        read_raster(path)
    assert info.value.path == str(path) and name in str(info.value)
    print(info.value)


def test_awkward_files_handled_when_allowed(rs, tmp_path):
    folder = rs / "landsat_rgb"
    nan = read_raster(folder / "float_nan.tif")  # 2x3 float32, nodata NaN, one NaN pixel
    assert nan.dtype == np.float32 and math.isnan(nan.nodata)
    assert nan.valid_mask().tolist() == [[True, True, False], [True, True, True]]
    cog = write_cog(nan, tmp_path / "nan.tif")
    assert validate_cog(cog)[0]
    assert np.array_equal(read_raster(cog).array, nan.array, equal_nan=True)

    rot = read_raster(folder / "rotated.tif", allow_rotated=True)
    assert rot.transform == Affine(17.320508075688775, 4.999999999999999, 100.0,
                                   9.999999999999998, -8.660254037844387, 200.0)
    store = write_tile_zarr(rot.window(5, 2, 10, 8), tmp_path / "rot.zarr")
    assert read_tile_zarr(store).transform == rot.window(5, 2, 10, 8).transform
    assert xr.open_zarr(str(store), consolidated=False).rio.transform() == rot.window(5, 2, 10, 8).transform

    empty = read_raster(folder / "all-nodata.tif", allow_empty=True)
    assert empty.band_names == ["blue", "green", "red", "nir"] and not empty.valid_mask().any()
    assert np.isnan(ndvi(empty).array).all()


def test_spectral_indices_on_known_values():
    bands = np.array([
        [[10, 20], [0, 30]],    # green
        [[30, 20], [5, 0]],     # red
        [[50, 20], [7, 0]],     # nir
        [[70, 60], [9, 0]],     # swir1
    ], dtype=np.uint16)
    r = Raster(bands, "EPSG:32616", Affine(30, 0, 500000, 0, -30, 4000000), nodata=0,
               band_names=["green", "red", "nir", "swir1"])
    # nodata=0 masks only the bands involved: green=0 at (1,0) affects NDWI, not NDVI/NDBI
    np.testing.assert_allclose(ndvi(r).array[0], [[20 / 80, 0.0], [2 / 12, np.nan]], rtol=1e-6)
    np.testing.assert_allclose(ndwi(r).array[0], [[-40 / 60, 0.0], [np.nan, np.nan]], rtol=1e-6)
    np.testing.assert_allclose(ndbi(r).array[0], [[20 / 120, 40 / 80], [2 / 16, np.nan]], rtol=1e-6)
    stack = spectral_indices(r, ["ndvi", "ndbi"])
    assert stack.band_names == ["ndvi", "ndbi"] and stack.dtype == np.float32 and math.isnan(stack.nodata)
    assert stack.transform == r.transform
    # reflectance-style floats with a NaN and a zero-sum pixel
    f = Raster(np.array([[[0.1, np.nan, 0.0]], [[0.5, 0.2, 0.0]]], np.float32), None, Affine.identity(),
               band_names=["Red", "NIR"])
    np.testing.assert_allclose(ndvi(f).array[0, 0], [0.4 / 0.6, np.nan, np.nan], rtol=1e-6)
