"""The synthetic Landsat-like demo scenes: layout, geo-referencing, truth, QA, shifts, and a baseline
that is imperfect (NDWI-Otsu) while all bands carry the answer."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
import rasterio
from skimage.filters import threshold_otsu
from skimage.registration import phase_cross_correlation

from imaging_pipelines.config.catalog import load_catalog
from imaging_pipelines.tools.demo.scenes import BAND_FILES, BANDS, QA_CLEAR, demo_scene, write_demo_scenes
from tests.conftest import REPO

SIZE = 320


def _iou(pred: np.ndarray, ref: np.ndarray) -> float:
    return float((pred & ref).sum() / (pred | ref).sum())


def _ndwi_otsu(refl: np.ndarray) -> np.ndarray:
    green, nir = refl[BANDS.index("green")], refl[BANDS.index("nir")]
    with np.errstate(divide="ignore", invalid="ignore"):
        ndwi = (green - nir) / (green + nir)
    valid = np.isfinite(ndwi)
    return valid & (ndwi > threshold_otsu(ndwi[valid]))


def _read(path) -> tuple[np.ndarray, rasterio.profiles.Profile]:
    with rasterio.open(path) as src:
        return src.read(1), src.profile


def _band_file(inbox, scene: str, date: str, band: str):
    return inbox / scene / date / f"{scene}_{date.replace('-', '')}_{BAND_FILES[band]}.tif"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    inbox = tmp_path_factory.mktemp("scenes")
    return inbox, write_demo_scenes(inbox)


def _digest(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_deterministic_for_a_seed(demo, tmp_path):
    inbox, records = demo
    again = write_demo_scenes(tmp_path / "a", n_scenes=1)
    assert again[0]["shifts"] == records[0]["shifts"] and again[0]["dates"] == records[0]["dates"]
    first = {k: v for k, v in _digest(inbox).items() if k.startswith(records[0]["name"] + "/")}
    assert _digest(tmp_path / "a") == first  # byte-identical files
    other = write_demo_scenes(tmp_path / "b", n_scenes=1, seed=1)
    assert _digest(tmp_path / "b") != first and other[0]["shifts"] != records[0]["shifts"]


def test_layout_crs_and_grids(demo):
    inbox, records = demo
    assert [r["name"] for r in records] == ["demo_scene_01", "demo_scene_02", "demo_scene_03"]
    assert sorted(p.name for p in inbox.iterdir()) == [r["name"] for r in records]
    origins, crss = set(), set()
    for rec in records:
        label, prof = _read(inbox / rec["name"] / f"{rec['name']}_label.tif")
        assert prof["dtype"] == "uint8" and label.shape == (SIZE, SIZE)
        assert prof["crs"].to_string() == rec["crs"] and prof["crs"].is_projected
        assert rec["crs"].startswith("EPSG:326") and prof["transform"].a == 10.0 and prof["transform"].e == -10.0
        origins.add((prof["transform"].c, prof["transform"].f))
        crss.add(rec["crs"])
        assert len(rec["dates"]) == 3 and rec["dates"] == sorted(rec["dates"])
        for date in rec["dates"]:
            folder = inbox / rec["name"] / date
            assert sorted(p.name for p in folder.iterdir()) == sorted(
                f"{rec['name']}_{date.replace('-', '')}_{f}.tif" for f in BAND_FILES.values())
            for band in BAND_FILES:
                data, p = _read(_band_file(inbox, rec["name"], date, band))
                assert p["dtype"] == "uint16" and p["nodata"] == 0 and data.shape == (SIZE, SIZE)
                assert p["crs"] == prof["crs"] and p["transform"] == prof["transform"]
            blue, _ = _read(_band_file(inbox, rec["name"], date, "blue"))
            valid = blue > 0
            assert 200 < np.median(blue[valid]) < 2000  # reflectance ~0.02-0.2 as DN * 1e-4
    assert len(origins) == 3 and len(crss) == 3


def test_truth_classes_and_clean_reflectance(demo):
    inbox, records = demo
    for index, rec in enumerate(records):
        label, _ = _read(inbox / rec["name"] / f"{rec['name']}_label.tif")
        assert set(np.unique(label)) == {0, 1, 2}
        assert 0.05 < (label == 1).mean() < 0.3 and 0.03 < (label == 2).mean() < 0.3
        truth = demo_scene(index)
        assert np.array_equal(truth.labels, label)
        # the first date is cloud-free: its reflectance is the clean scene plus noise and a gain
        first = np.stack([_read(_band_file(inbox, rec["name"], rec["dates"][0], b))[0] for b in BANDS]) * 1e-4
        assert np.median(np.abs(first - truth.reflectance)) < 0.01


def test_qa_clouds_and_fill(demo):
    inbox, records = demo
    for index, rec in enumerate(records):
        assert rec["cloud_fraction"][0] == 0.0 and all(0.02 < f < 0.3 for f in rec["cloud_fraction"][1:])
        for date, fraction in zip(rec["dates"], rec["cloud_fraction"]):
            qa, _ = _read(_band_file(inbox, rec["name"], date, "qa"))
            blue, _ = _read(_band_file(inbox, rec["name"], date, "blue"))
            cloud = (qa & (1 << 4)) != 0
            assert cloud.mean() == pytest.approx(fraction)
            assert np.all((qa == QA_CLEAR) | cloud | ((qa >> 7) & 3 == 3) | (qa == 1))
            if cloud.any():
                assert np.median(blue[cloud]) > 3 * np.median(blue[qa == QA_CLEAR])  # bright white clouds
            fill = qa == 1
            assert np.array_equal(fill, blue == 0)
            assert fill.any() == (index % 2 == 1 and date == rec["dates"][-1])


def test_shifts_are_recovered(demo):
    inbox, records = demo
    for rec in records:
        assert rec["shifts"][0] == (0.0, 0.0)
        assert all(v == int(v) for v in rec["shifts"][1]) and any(rec["shifts"][1])
        reference = _read(_band_file(inbox, rec["name"], rec["dates"][0], "swir1"))[0].astype(float)
        for date, (dy, dx) in zip(rec["dates"][1:], rec["shifts"][1:]):
            assert abs(dy) <= 2 and abs(dx) <= 2
            moving = _read(_band_file(inbox, rec["name"], date, "swir1"))[0].astype(float)
            qa = _read(_band_file(inbox, rec["name"], date, "qa"))[0]
            moving[qa != QA_CLEAR] = np.median(moving[qa == QA_CLEAR])
            found, _, _ = phase_cross_correlation(reference, moving, upsample_factor=10)
            # skimage gives the shift that registers `moving`: minus the generated displacement
            assert np.allclose(-found, (dy, dx), atol=0.25), (rec["name"], date, found, (dy, dx))


def test_ndwi_otsu_is_imperfect_but_bands_carry_the_answer(demo):
    inbox, records = demo
    ndwi_ious, swir_ious = [], []
    for index, rec in enumerate(records):
        truth = demo_scene(index)
        water = truth.labels == 1
        ndwi_ious.append(_iou(_ndwi_otsu(truth.reflectance), water))
        swir_ious.append(_iou(truth.reflectance[BANDS.index("swir1")] < 0.04, water))
        # the same on a cloud-masked median composite of the files
        stack = np.stack([np.stack([_read(_band_file(inbox, rec["name"], d, b))[0] for b in BANDS]) for d in rec["dates"]])
        stack = stack.astype(np.float32) * 1e-4
        qa = np.stack([_read(_band_file(inbox, rec["name"], d, "qa"))[0] for d in rec["dates"]])
        cloudy_or_fill = ((qa & (1 << 4)) != 0) | (qa == 1)
        composite = np.nanmedian(np.where(cloudy_or_fill[:, None], np.nan, stack), axis=0)
        assert 0.5 < _iou(_ndwi_otsu(composite), water) < 0.97
    assert all(0.5 < v < 0.97 for v in ndwi_ious), ndwi_ious
    # turbid water, wet soil, shadows and dark roofs fool NDWI; SWIR1 alone already separates most of them
    assert np.mean(swir_ious) > np.mean(ndwi_ious) + 0.05, (swir_ious, ndwi_ious)


def test_demo_catalog_matches_the_layout(demo):
    inbox, records = demo
    (ds,) = [d for d in load_catalog(REPO / "data_catalog") if d.id == "demo_scenes"]
    assert ds.domain == "remote_sensing" and ds.partitioning == "tile" and ds.formats == ["geotiff"]
    assert ds.inbox == str((REPO / "var" / "demo" / "scenes").resolve())
    rs = ds.remote_sensing
    assert [b.name for b in rs.bands] == [*BANDS, "qa"] and rs.band("qa").role == "qa"
    assert rs.cloud_mask.source == "qa_bits" and rs.cloud_mask.bits == [4] and rs.reflectance.scale == 1e-4
    assert rs.segmentation.classes == {"water": 1, "built": 2} and rs.segmentation.labels.source == "raster"
    assert (rs.tiling.size, rs.tiling.overlap) == (128, 16) and rs.indices == ["ndvi", "ndwi", "ndbi"]
    for rec in records:
        for date in rec["dates"]:
            names = [p.name for p in (inbox / rec["name"] / date).iterdir()]
            for band in rs.bands:  # every band pattern matches exactly one file of each acquisition
                assert len([n for n in names if re.search(band.file, n, re.IGNORECASE)]) == 1, (band.name, names)
        label = f"{rec['name']}_label.tif"
        assert any(label[:-4].endswith(s) for s in rs.segmentation.labels.suffixes)
