"""Remote-sensing inputs as real products ship them (issue 18 item 6), one test per case:
separate rasters of one acquisition used by role, a band-to-date mapping for a single-file time series,
band indices checked by ``catalog validate``, the GeoJSON labels' CRS never assumed, deterministic input
errors never retried by Dagster, and incomplete scenes reported as such (no sentinel numbers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from rasterio.crs import CRS
from typer.testing import CliRunner

from imaging_pipelines.cli import app
from imaging_pipelines.config.remote_sensing import RemoteSensingConfig
from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.core.raster import PixelWindow
from imaging_pipelines.remote_sensing.analysis_ready import analysis_ready_tile
from imaging_pipelines.remote_sensing.scene_read import read_acquisition_window, read_label_window
from imaging_pipelines.remote_sensing.scenes import discover_scenes, scene_grid
from tests.test_raster_scenes import write_tif as write_tif_utm32

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

UTM16 = CRS.from_epsg(32616)
X0, Y0 = 740000.0, 3740000.0
GRID_T = Affine(10, 0, X0, 0, -10, Y0)
RGBN = [{"name": "blue", "index": 1}, {"name": "green", "index": 2}, {"name": "red", "index": 3},
        {"name": "nir", "index": 4}]


@pytest.fixture(autouse=True)
def data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(tmp_path))
    monkeypatch.setenv("IMAGING_PIPELINES_STORAGE_ROOT", str(tmp_path / "storage"))


def write_tif(path: Path, array, transform=GRID_T, crs=UTM16, nodata=None) -> Path:
    return write_tif_utm32(path, array, crs, transform, nodata)


def config(**extra) -> RemoteSensingConfig:
    return RemoteSensingConfig.model_validate({"bands": RGBN, "indices": [], "coregister": False, **extra})


def reflectance(value: int, shape=(64, 64)) -> np.ndarray:
    """4 bands (blue, green, red, nir) of DN ``value`` + 100 * band."""
    return np.stack([np.full(shape, value + 100 * b, np.uint16) for b in range(4)])


# -- several rasters per acquisition, each with its role ----------------------------------------------
def layered_scene(tmp_path) -> Path:
    """Two dates of a 4-band file, a cloud-mask file per date (date 2: left half cloudy, bright), one
    undated DEM at 20 m (another grid) and an undated 'slope' layer on the grid."""
    scene = tmp_path / "inbox" / "lay"
    write_tif(scene / "20240105" / "lay_20240105_sr.tif", reflectance(1000))
    bright = reflectance(2000)
    bright[:, :, :32] = 9000  # cloud tops
    write_tif(scene / "20240221" / "lay_20240221_sr.tif", bright)
    write_tif(scene / "20240105" / "lay_20240105_cloud.tif", np.zeros((64, 64), np.uint8))
    cloud = np.zeros((64, 64), np.uint8)
    cloud[:, :32] = 2  # value 2 = cloud, 1 = thin cirrus (not listed), elsewhere 0
    cloud[:8, 40:] = 1
    write_tif(scene / "20240221" / "lay_20240221_cloud.tif", cloud)
    rows = np.arange(32, dtype=np.float32)[:, None] * np.ones((1, 32), np.float32)
    write_tif(scene / "dem.tif", 100 + 20 * rows, transform=Affine(20, 0, X0, 0, -20, Y0))  # 20 m per 20 m row
    write_tif(scene / "slope.tif", np.full((64, 64), 7.5, np.float32))
    return tmp_path / "inbox"


LAYERS = [{"name": "cloud", "file": r"_cloud\.tif$", "role": "cloud_mask", "cloud_values": [2]},
          {"name": "dem", "file": r"^dem\.tif$", "role": "dem"},
          {"name": "slope", "file": r"^slope\.tif$", "role": "extra", "channel": False}]


def test_separate_rasters_of_an_acquisition_are_used_by_role(tmp_path):
    inbox = layered_scene(tmp_path)
    cfg = config(layers=LAYERS, cloud_mask={"source": "layer", "layer": "cloud", "dilate_px": 0})
    (source,) = discover_scenes(inbox, cfg)
    assert source.dates == ["2024-01-05", "2024-02-21"] and not source.problems
    for acq in source.acquisitions:  # the per-date cloud mask joins its date, the undated DEM every date
        assert Path(acq.files["cloud"]).name == f"lay_{acq.date.replace('-', '')}_cloud.tif"
        assert Path(acq.files["dem"]).name == "dem.tif" and Path(acq.path_of("red")).name.endswith("_sr.tif")
    grid = scene_grid(source, cfg)
    assert (grid.height, grid.width, grid.transform) == (64, 64, GRID_T)  # the band file's grid, not the DEM's
    window = PixelWindow(0, 0, 64, 64)
    rasters, notes = zip(*(read_acquisition_window(source, a, cfg, grid, window) for a in source.acquisitions))
    assert rasters[0].band_names == ["blue", "green", "red", "nir", "cloud", "dem", "slope"]
    assert any("dem.tif" in n and "resampled onto the scene grid" in n for n in notes[0])  # the DEM's 20 m grid
    products = analysis_ready_tile(list(rasters), source.dates, cfg)
    # cloud mask -> cloud fraction and masking: value 2 only (the cirrus value 1 is not cloud)
    assert products.cloud[1, :, :32].all() and not products.cloud[1, :, 32:].any() and not products.cloud[0].any()
    assert products.cloud_fraction == pytest.approx(0.25)  # 64 x 32 of 2 x 64 x 64 observations
    red = products.composite.band("red")
    assert np.allclose(red[:, :32], 1200) and np.allclose(red[:, 32:], (1200 + 2200) / 2)  # clouds never composited
    # DEM -> an extra model channel (after the indices), resampled bilinearly from 20 m: 10 m of elevation per
    # 10 m row, row r's centre at 20 m row r / 2 - 0.25
    assert products.composite.band_names == ["blue", "green", "red", "nir", "dem"]
    dem = products.composite.band("dem")
    assert np.allclose(np.diff(dem[4:60, 10]), 10.0, atol=1e-3) and dem[20, 10] == pytest.approx(100 + 20 * (10 - 0.25))
    # an extra layer with channel: false -> stored beside the composite, not a channel
    assert set(products.layers) == {"slope"} and np.allclose(products.layers["slope"], 7.5)


def test_layers_on_another_grid_or_missing_are_refused_naming_the_file(tmp_path):
    inbox = layered_scene(tmp_path)
    strict = [dict(x, on_other_grid="error") if x["name"] == "dem" else x for x in LAYERS]
    cfg = config(layers=strict, cloud_mask={"source": "layer", "layer": "cloud"})
    (source,) = discover_scenes(inbox, cfg)
    grid = scene_grid(source, cfg)
    with pytest.raises(ImagingInputError, match=r"dem\.tif: layer 'dem' is on EPSG:32616, pixel 20 x 20.*not the scene grid"):
        read_acquisition_window(source, source.acquisitions[0], cfg, grid, PixelWindow(0, 0, 16, 16))
    # a layer far from the scene: error naming the file, whatever on_other_grid says
    write_tif(inbox / "lay" / "slope.tif", np.ones((8, 8), np.float32), transform=Affine(10, 0, X0 + 1e5, 0, -10, Y0))
    cfg = config(layers=LAYERS, cloud_mask={"source": "layer", "layer": "cloud"})
    (source,) = discover_scenes(inbox, cfg)
    with pytest.raises(ImagingInputError, match=r"slope\.tif: footprint .* does not overlap the scene grid"):
        read_acquisition_window(source, source.acquisitions[0], cfg, grid, PixelWindow(0, 0, 16, 16))
    # a date without its cloud mask is dropped and reported
    (inbox / "lay" / "20240221" / "lay_20240221_cloud.tif").unlink()
    (source,) = discover_scenes(inbox, cfg)
    assert source.dates == ["2024-01-05"] and "2024-02-21: no file for layer cloud" in source.problems
    with pytest.raises(ValueError, match="cloud_mask.layer 'clouds' is not a layer of role cloud_mask"):
        config(layers=LAYERS, cloud_mask={"source": "layer", "layer": "clouds"})
    with pytest.raises(ValueError, match="distinct"):
        config(layers=[{"name": "red", "file": "x", "role": "extra"}])


# -- a single-file time series (one band group per date) ----------------------------------------------
DATES = ["2023-06-01", "2023-04-15", "2023-05-10"]  # the file's order (not sorted)


def time_series_file(path: Path, order: str) -> Path:
    """red and nir at 3 dates: DN = 1000 * (date position + 1) + band (1 red, 2 nir)."""
    planes = {(d, b): np.full((32, 32), 1000 * (d + 1) + b, np.uint16) for d in range(3) for b in (1, 2)}
    keys = [(d, b) for d in range(3) for b in (1, 2)] if order == "date_major" else [(d, b) for b in (1, 2) for d in range(3)]
    return write_tif(path, np.stack([planes[k] for k in keys]))


@pytest.mark.parametrize("order", ["date_major", "band_major"])
def test_single_file_time_series_gets_a_time_axis(tmp_path, order):
    time_series_file(tmp_path / "inbox" / "ts" / "ndvi_stack.tif", order)
    bands = [{"name": "red", "index": 1}, {"name": "nir", "index": 2}]
    cfg = RemoteSensingConfig.model_validate({"bands": bands, "indices": ["ndvi"], "coregister": False,
                                              "cloud_mask": {"source": "none"},
                                              "time_series": {"dates": DATES, "order": order}})
    (source,) = discover_scenes(tmp_path / "inbox", cfg)
    assert source.dates == sorted(DATES) and [a.step for a in source.acquisitions] == [1, 2, 0]
    grid = scene_grid(source, cfg)
    rasters = [read_acquisition_window(source, a, cfg, grid, PixelWindow(0, 0, 32, 32))[0] for a in source.acquisitions]
    for acq, raster in zip(source.acquisitions, rasters):
        assert raster.band("red")[0, 0] == 1000 * (acq.step + 1) + 1 and raster.band("nir")[0, 0] == 1000 * (acq.step + 1) + 2
    products = analysis_ready_tile(rasters, source.dates, cfg)
    assert products.composite.band("red")[0, 0] == 2001  # the median over the 3 dates
    assert products.nodata.shape == (3, 32, 32)
    # a file holding another number of bands than the dates imply: error naming the file and the counts
    write_tif(tmp_path / "inbox" / "ts" / "ndvi_stack.tif", np.ones((4, 32, 32), np.uint16))
    (source,) = discover_scenes(tmp_path / "inbox", cfg)
    late = "'red' of date 2023-05-10 is band 5" if order == "date_major" else "'nir' of date 2023-05-10 is band 6"
    with pytest.raises(ImagingInputError, match=rf"ndvi_stack\.tif: band {late}, but the file has 4 band"):
        read_acquisition_window(source, source.acquisitions[1], cfg, grid, PixelWindow(0, 0, 8, 8))
    with pytest.raises(ImagingInputError, match=r"ndvi_stack\.tif: time_series declares 3 date\(s\) x 2 band\(s\) = 6 "
                                                r"bands, but the file has 4"):  # step 0 fits, the total not
        read_acquisition_window(source, source.acquisitions[2], cfg, grid, PixelWindow(0, 0, 8, 8))
    with pytest.raises(ValueError, match="not a YYYY-MM-DD date"):
        RemoteSensingConfig.model_validate({"bands": bands, "indices": [], "time_series": {"dates": ["June"]}})


# -- catalog validate checks band indices against the files -------------------------------------------
def rs_catalog(root: Path, dataset_id: str, remote_sensing: dict) -> Path:
    entry = {"id": dataset_id, "domain": "remote_sensing", "inbox": "../inbox", "formats": ["geotiff"],
             "partitioning": "tile", "remote_sensing": remote_sensing}
    (root / "catalog").mkdir(exist_ok=True)
    (root / "catalog" / f"{dataset_id}.yaml").write_text(yaml.safe_dump(entry))
    return root / "catalog"


def test_catalog_validate_checks_band_indices_against_the_files(tmp_path):
    write_tif(tmp_path / "inbox" / "rgb_20240105.tif", np.ones((3, 16, 16), np.uint16))
    catalog = rs_catalog(tmp_path, "rgbn", {"bands": RGBN, "indices": [], "tiling": {"size": 16, "overlap": 2}})
    result = CliRunner().invoke(app, ["catalog", "validate", str(catalog)])
    assert result.exit_code == 1
    assert "rgb_20240105.tif: remote_sensing.bands: band 'nir' is band 4, but the file has 3 band(s)" in result.output
    rs_catalog(tmp_path, "rgbn", {"bands": RGBN[:3], "indices": [], "tiling": {"size": 16, "overlap": 2}})
    result = CliRunner().invoke(app, ["catalog", "validate", str(catalog)])
    assert result.exit_code == 0 and "1 dataset(s) valid" in result.output, result.output


# -- GeoJSON labels: CRS from the file or the catalog, never assumed -----------------------------------
def label_scene(tmp_path, doc: dict) -> Path:
    write_tif(tmp_path / "inbox" / "lab" / "lab_20240105.tif", reflectance(1000, (32, 32)))
    (tmp_path / "inbox" / "lab" / "buildings.geojson").write_text(json.dumps(doc))
    return tmp_path / "inbox"


def square_doc(crs_member: str | None = None) -> dict:
    """One 10 x 10 px building at rows/cols 5..14 of the grid, in UTM 16N metres."""
    x, y = X0 + 50, Y0 - 50
    ring = [[x, y], [x + 100, y], [x + 100, y - 100], [x, y - 100], [x, y]]
    doc = {"type": "FeatureCollection",
           "features": [{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}
    if crs_member:
        doc["crs"] = {"type": "name", "properties": {"name": crs_member}}
    return doc


def labels_cfg(crs: str | None = None) -> RemoteSensingConfig:
    labels = {"source": "geojson", **({"crs": crs} if crs else {})}
    return config(cloud_mask={"source": "none"}, segmentation={"classes": {"building": 1}, "labels": labels})


def test_geojson_labels_crs_from_file_or_catalog_never_assumed(tmp_path):
    window = PixelWindow(0, 0, 32, 32)
    inbox = label_scene(tmp_path, square_doc())  # projected metres, no crs member
    (source,) = discover_scenes(inbox, labels_cfg())
    grid = scene_grid(source, labels_cfg())
    with pytest.raises(ImagingInputError, match=r"buildings\.geojson: coordinate \(740050, 3\.73995e\+06\) is not "
                                                r"longitude/latitude.*segmentation\.labels\.crs"):
        read_label_window(source, labels_cfg(), grid, window)
    declared = read_label_window(source, labels_cfg("EPSG:32616"), grid, window)  # declared in the catalog
    assert int(declared.sum()) == 100 and declared[5:15, 5:15].all()
    label_scene(tmp_path, square_doc("urn:ogc:def:crs:EPSG::32616"))  # the legacy crs member
    from_file = read_label_window(source, labels_cfg(), grid, window)
    assert np.array_equal(from_file, declared)
    with pytest.raises(ImagingInputError, match=r"buildings\.geojson: the file's crs member .* contradicts"):
        read_label_window(source, labels_cfg("EPSG:32617"), grid, window)
    # longitude/latitude without a crs member stays RFC 7946 EPSG:4326
    from rasterio.warp import transform_geom

    doc = square_doc()
    doc["features"][0]["geometry"] = transform_geom(UTM16, "EPSG:4326", doc["features"][0]["geometry"])
    label_scene(tmp_path, doc)
    lonlat = read_label_window(source, labels_cfg(), grid, window)
    assert int(lonlat.sum()) == 100 and lonlat[5:15, 5:15].all()


# -- deterministic input errors are never retried -----------------------------------------------------
def test_deterministic_input_error_fails_once_naming_the_file(tmp_path, monkeypatch):
    from dagster import DagsterInstance

    from imaging_pipelines.dagster_layer.factory import build_definitions

    label_scene(tmp_path, square_doc())  # projected, no crs member, none declared
    rs = {"bands": RGBN, "indices": [], "coregister": False, "cloud_mask": {"source": "none"},
          "tiling": {"size": 32, "overlap": 0},
          "segmentation": {"method": "baseline", "classes": {"building": 1}, "baselines": {},
                           "labels": {"source": "geojson"}}}
    monkeypatch.setenv("IMAGING_PIPELINES_CATALOG", str(rs_catalog(tmp_path, "bld", rs)))
    defs = build_definitions()
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("bld__tiles", ["lab__r0_c0"])
        result = defs.resolve_job_def("bld__tile_job").execute_in_process(
            partition_key="lab__r0_c0", instance=instance, raise_on_error=False)
    assert not result.success
    types = [e.event_type_value for e in result.all_events]
    assert "STEP_UP_FOR_RETRY" not in types and types.count("STEP_FAILURE") == 1
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.message
    assert "buildings.geojson" in message and "not longitude/latitude" in message


# -- incomplete scenes: reported as such, never with sentinel numbers ---------------------------------
def test_incomplete_scene_is_reported_as_incomplete_without_sentinels(tmp_path, monkeypatch):
    from imaging_pipelines.config.catalog import load_catalog
    from imaging_pipelines.report.cohort import cohort_report
    from imaging_pipelines.remote_sensing.stages.scene_mosaic import build_scene_outputs, scene_row

    write_tif(tmp_path / "inbox" / "part" / "part_20240105.tif", reflectance(1000, (48, 48)))
    rs = {"bands": RGBN, "indices": [], "tiling": {"size": 16, "overlap": 2}, "cloud_mask": {"source": "none"},
          "segmentation": {"method": "baseline", "classes": {"water": 1}, "baselines": {}}}
    (dataset,) = load_catalog(rs_catalog(tmp_path, "inc", rs))
    outcome = build_scene_outputs(dataset, tmp_path / "storage", log=lambda m: None)  # no tile segmented yet
    (scene,) = outcome.scenes
    assert not scene.complete and (scene.tiles, scene.missing_tiles) == (9, 9)
    assert scene.cloud_fraction is None and scene.nodata_fraction is None
    row = scene_row(scene)
    assert row["status"] == "incomplete: 9 of 9 tiles not segmented"
    assert "cloud_fraction" not in row and -1.0 not in row.values()
    status = json.loads((tmp_path / "storage" / "inc" / "scene_outputs" / "part" / "status.json").read_text())
    assert status["status"] == "incomplete" and status["missing_tiles"] == 9 and len(status["missing"]) == 9
    report = cohort_report(dataset, tmp_path / "storage")
    html = Path(report.path).read_text()
    assert "incomplete: 9 of 9 tiles not segmented" in html and "-1.0" not in html
    assert report.summary["incomplete_scenes"] == 1
