"""2D U-Net training/prediction/save-load, Otsu baseline, polygons and class areas (raster segmentation)."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch
from affine import Affine
from scipy import ndimage

from imaging_pipelines.remote_sensing.baseline import otsu_baseline, otsu_thresholds
from imaging_pipelines.config.remote_sensing import RasterTrainingConfig
from imaging_pipelines.core.raster import Raster
from imaging_pipelines.remote_sensing.unet2d import (
    Normalisation, build_unet2d, load_unet2d, predict_unet2d, save_unet2d, train_unet2d,
)
from imaging_pipelines.remote_sensing.vectorize import class_areas_ha, class_iou, class_polygons, pixel_area_m2

CLASSES = {"water": 1}
BANDS = ["green", "red", "nir", "ndwi"]


def synthetic_tile(seed: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """(green, red, nir, ndwi) reflectance with smooth random lakes (low NIR) and noise; label 1 = water."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), 6)
    water = field > np.quantile(field, 0.7)
    land = ndimage.gaussian_filter(rng.normal(size=(size, size)), 3)
    green = 0.08 + 0.02 * land + rng.normal(0, 0.01, (size, size))
    red = 0.07 + 0.03 * land + rng.normal(0, 0.01, (size, size))
    nir = np.where(water, 0.03, 0.30 + 0.05 * land) + rng.normal(0, 0.02, (size, size))
    stack = np.stack([green, red, nir]).astype(np.float32)
    ndwi = (stack[0] - stack[2]) / (stack[0] + stack[2])
    image = np.concatenate([stack, ndwi[None]]).astype(np.float32)
    image[:, :3, :5] = np.nan  # an invalid corner
    return image, water.astype(np.uint8) * CLASSES["water"]


@pytest.fixture(scope="module")
def trained():
    tiles = [synthetic_tile(s) for s in range(4)]
    cfg = RasterTrainingConfig(patch_size=48, epochs=8, iterations_per_epoch=12, batch_size=8,
                               learning_rate=3e-3, base_filters=8, seed=0)
    val = [synthetic_tile(10)]
    lines: list[str] = []
    t0 = time.perf_counter()
    outcome = train_unet2d([t[0] for t in tiles], [t[1] for t in tiles], CLASSES, cfg,
                           validation=([v[0] for v in val], [v[1] for v in val]), log=lines.append)
    return outcome, cfg, time.perf_counter() - t0, lines


def test_unet_learns_water(trained):
    outcome, cfg, seconds, lines = trained
    assert len(outcome.curve) == cfg.epochs and len(lines) == cfg.epochs
    assert outcome.curve[-1] < outcome.curve[0]
    assert outcome.class_values == [0, 1]
    assert set(outcome.validation_iou) == {"water"} and outcome.validation_iou["water"] >= 0.9
    image, truth = synthetic_tile(99, size=120)  # held out, another size than the training tiles
    pred = predict_unet2d(outcome.model, outcome.normalisation, outcome.class_values, image, cfg.patch_size, 0.25)
    assert pred.shape == truth.shape and pred.dtype == np.uint8
    assert set(np.unique(pred)) <= {0, 1}
    valid = np.isfinite(image).all(axis=0)
    assert not pred[~valid].any()  # NaN-invalid pixels -> 0
    assert class_iou(pred, truth, CLASSES, valid)["water"] >= 0.9


def test_predict_small_image_and_class_values(trained):
    outcome, cfg, _, _ = trained
    image, truth = synthetic_tile(7, size=96)
    small = image[:, 10:40, 20:57]  # smaller than a patch, odd size: padded by sliding-window inference
    pred = predict_unet2d(outcome.model, outcome.normalisation, [0, 7], small, cfg.patch_size)
    assert pred.shape == (30, 37) and pred.dtype == np.uint8 and set(np.unique(pred)) <= {0, 7}
    with pytest.raises(ValueError, match="channels"):
        predict_unet2d(outcome.model, outcome.normalisation, outcome.class_values, image[:2], cfg.patch_size)
    with pytest.raises(ValueError, match="multiple"):
        predict_unet2d(outcome.model, outcome.normalisation, outcome.class_values, image, 36)


def test_save_load_round_trip(trained, tmp_path):
    outcome, cfg, _, _ = trained
    path = tmp_path / "model.pt"
    save_unet2d(outcome, path, {"bands": BANDS, "patch_size": cfg.patch_size})
    model, norm, values, meta = load_unet2d(path)
    assert meta == {"bands": BANDS, "patch_size": cfg.patch_size}
    assert values == outcome.class_values and norm == outcome.normalisation
    assert not model.training
    image, _ = synthetic_tile(42)
    a = predict_unet2d(outcome.model, outcome.normalisation, outcome.class_values, image, cfg.patch_size)
    b = predict_unet2d(model, norm, values, image, cfg.patch_size)
    np.testing.assert_array_equal(a, b)


def test_normalisation_and_network_shapes():
    img = np.stack([np.full((8, 8), 5.0), np.arange(64.0).reshape(8, 8)]).astype(np.float32)
    img[1, 0, 0] = np.nan
    norm = Normalisation.fit([img])
    assert norm.mean[0] == pytest.approx(5.0) and norm.std[0] == 1.0  # constant band: std 1, not 0
    out = norm.apply(img)
    assert out.dtype == np.float32 and out[1, 0, 0] == 0 and np.isfinite(out).all()
    assert abs(float(out[1][1:].mean())) < 0.2
    net = build_unet2d(3, 4, 4)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 4, 32, 32)


def test_training_is_seeded():
    tiles = [synthetic_tile(s, size=48) for s in range(2)]
    cfg = RasterTrainingConfig(patch_size=32, epochs=1, iterations_per_epoch=3, batch_size=2, base_filters=4)
    a = train_unet2d([t[0] for t in tiles], [t[1] for t in tiles], CLASSES, cfg)
    b = train_unet2d([t[0] for t in tiles], [t[1] for t in tiles], CLASSES, cfg)
    assert a.curve == b.curve and a.validation_iou is None
    with pytest.raises(ValueError, match="multiple"):
        train_unet2d([tiles[0][0]], [tiles[0][1]], CLASSES, cfg.model_copy(update={"patch_size": 20}))
    with pytest.raises(ValueError, match="grid"):
        train_unet2d([tiles[0][0]], [tiles[0][1][:10]], CLASSES, cfg)


def test_otsu_baseline_synthetic():
    image, truth = synthetic_tile(3)
    rng = np.random.default_rng(1)
    built = np.zeros_like(truth, dtype=bool)
    built[60:80, 10:40] = True
    ndbi = np.where(built, 0.3, -0.3) + rng.normal(0, 0.05, truth.shape)
    ndbi[truth > 0] = 0.5  # would claim the water too: earlier classes (water) must win
    composite = Raster(np.concatenate([image, ndbi[None].astype(np.float32)]), "EPSG:32632",
                       Affine(10, 0, 500000, 0, -10, 5000000), band_names=BANDS + ["ndbi"])
    classes = {"water": 1, "built": 2}
    pred = otsu_baseline(composite, classes, {"water": "ndwi", "built": "ndbi"})
    assert pred.dtype == np.uint8 and pred.shape == truth.shape
    valid = composite.valid_mask()
    assert not pred[~valid].any()
    ref = truth.copy()
    ref[built & (truth == 0)] = 2
    ious = class_iou(pred, ref, classes, valid)
    assert ious["water"] > 0.9 and ious["built"] > 0.9
    t = otsu_thresholds(composite, classes, {"water": "ndwi"})
    assert set(t) == {"water"} and -0.9 < t["water"] < 0.5
    with pytest.raises(ValueError, match="no band 'swir'"):
        otsu_baseline(composite, classes, {"water": "swir"})


def test_polygons_and_areas_projected():
    labels = np.zeros((200, 220), np.uint8)
    labels[50:150, 60:160] = 1  # 100 x 100 px at 10 m = 100 ha
    labels[90:110, 100:120] = 0  # a 4 ha hole
    labels[5:15, 200:210] = 2  # 1 ha
    labels[180:190, 0:10] = 9  # not a class: ignored
    transform = Affine(10, 0, 600000, 0, -10, 4100000)
    classes = {"water": 1, "built": 2}
    areas = class_areas_ha(labels, transform, "EPSG:32632", classes)
    assert areas == pytest.approx({"water": 96.0, "built": 1.0})
    fc = class_polygons(labels, transform, "EPSG:32632", classes)
    assert fc["type"] == "FeatureCollection" and fc["crs"]["properties"]["name"] == "EPSG:32632"
    json.dumps(fc)
    assert len(fc["features"]) == 2
    water = next(f for f in fc["features"] if f["properties"]["class"] == "water")
    assert water["properties"] == {"class": "water", "value": 1, "area_ha": pytest.approx(96.0)}
    rings = water["geometry"]["coordinates"]
    assert len(rings) == 2  # exterior + hole
    xs, ys = zip(*rings[0])
    assert (min(xs), max(xs), min(ys), max(ys)) == (600600, 601600, 4098500, 4099500)
    # a square at 10 m without a hole: exactly 100 ha; feet-based CRS uses the unit factor
    square = np.zeros((120, 120), np.uint8)
    square[10:110, 10:110] = 1
    assert class_areas_ha(square, transform, "EPSG:32632", {"water": 1})["water"] == pytest.approx(100.0)
    feet = class_areas_ha(square, Affine(10, 0, 0, 0, -10, 0), "EPSG:2263", {"water": 1})["water"]  # NY ftUS
    assert feet == pytest.approx(100.0 * (1200 / 3937) ** 2, rel=1e-9)


def test_areas_geographic_crs():
    pyproj = pytest.importorskip("pyproj")
    deg = 0.001
    lat0, lon0 = 45.0, 7.0
    transform = Affine(deg, 0, lon0, 0, -deg, lat0 + 0.1)
    labels = np.zeros((140, 140), np.uint8)
    labels[20:120, 20:120] = 1  # 0.1 x 0.1 degree box, top edge at lat0 + 0.08
    top, bottom = lat0 + 0.1 - 20 * deg, lat0 + 0.1 - 120 * deg
    left, right = lon0 + 20 * deg, lon0 + 120 * deg
    # analytic on the authalic sphere: R^2 * dlon * (sin(top) - sin(bottom))
    r = 6371007.2
    analytic = r * r * math.radians(right - left) * (math.sin(math.radians(top)) - math.sin(math.radians(bottom)))
    geod_area, _ = pyproj.Geod(ellps="WGS84").polygon_area_perimeter(
        [left, right, right, left], [bottom, bottom, top, top])
    areas = class_areas_ha(labels, transform, "EPSG:4326", {"water": 1})
    assert areas["water"] == pytest.approx(analytic / 1e4, rel=0.01)
    assert areas["water"] == pytest.approx(abs(geod_area) / 1e4, rel=1e-3)
    fc = class_polygons(labels, transform, "EPSG:4326", {"water": 1})
    assert fc["features"][0]["properties"]["area_ha"] == pytest.approx(areas["water"])
    # rotated geographic grid (local area element) agrees with the exact north-up integration
    rotated = Affine(0, deg, lon0, -deg, 0, lat0 + 0.1)  # rows go east, columns go south
    rot = class_areas_ha(labels.T.copy(), rotated, "EPSG:4326", {"water": 1})
    assert rot["water"] == pytest.approx(areas["water"], rel=1e-4)
    assert pixel_area_m2((4, 4), transform, "EPSG:4326").shape == (4, 1)
    with pytest.raises(ValueError, match="no CRS"):
        class_areas_ha(labels, transform, None, {"water": 1})
