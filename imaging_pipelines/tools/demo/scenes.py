"""Generate small, deterministic Landsat-like demo scenes (per-band GeoTIFFs, QA band, truth labels).

Layout written by :func:`write_demo_scenes` (the catalog entry ``data_catalog/demo_scenes.yaml``)::

    <inbox>/<scene>/<YYYY-MM-DD>/<scene>_<YYYYMMDD>_B2.tif .. _B6.tif   blue, green, red, nir, swir1
    <inbox>/<scene>/<YYYY-MM-DD>/<scene>_<YYYYMMDD>_BQA.tif            Landsat 8 Collection 1-like QA
    <inbox>/<scene>/<scene>_label.tif                                  truth: 0 background, 1 water, 2 built

Every file of a scene is on one grid (``size`` x ``size`` px of ``pixel_m`` metres, a UTM CRS and origin
of its own). Reflectance bands are uint16 DN = reflectance * 10000 with nodata 0. QA (uint16, nodata 0):
clear 2720 (low cloud/shadow/snow/cirrus confidence, as in real C1 BQA), cloud 2800 (bit 4 = cloud, bits
5-6 = high cloud confidence), cloud shadow 2976 (bits 7-8 = high shadow confidence, bit 4 clear: a
``bits: [4]`` mask keeps shadows, as a real one does), fill 1 (bit 0) where the bands are nodata.

Land cover (the truth labels are on the first date's grid): smooth random lakes and a sinuous river
(water), rectangular building blocks (built, roofs of concrete, red tile or dark asphalt), vegetation,
dry bare soil. The NDWI-Otsu baseline is deliberately imperfect but all bands make the task learnable:

* turbid water (a smooth turbidity field, strongest in the river) has NDWI near/below the Otsu split
  but SWIR1 as low as clear water;
* wet soil rings around the water bodies and wet patches, dark asphalt roofs and the static shadows cast
  by buildings have NDWI near the split but much higher SWIR1 than water (or a building-shaped footprint).

Per date: a multiplicative gain (atmosphere), Gaussian sensor noise, bright white cloud blobs with darker
cloud shadows displaced from them, and a geolocation shift of later dates: date ``k`` shows the first
date's content moved by ``(dy, dx)`` px (pixel ``(r, c)`` of date ``k`` sees what ``(r - dy, c - dx)``
sees on the first date, the :func:`scipy.ndimage.shift` convention; the first date is ``(0, 0)``,
the second an integer shift, later ones subpixel, all within 2 px).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage

BANDS = ("blue", "green", "red", "nir", "swir1")
BAND_FILES = {"blue": "B2", "green": "B3", "red": "B4", "nir": "B5", "swir1": "B6", "qa": "BQA"}
CLASSES = {"water": 1, "built": 2}
QA_CLEAR, QA_CLOUD, QA_SHADOW, QA_FILL = 2720, 2800, 2976, 1
_MARGIN = 4  # px of extra world around the grid, so shifted dates never sample outside it
_ZONES = (32632, 32633, 32631, 32634, 32630)

# Surface reflectance spectra (blue, green, red, nir, swir1).
_SPECTRA = {
    "clear_water": (0.060, 0.075, 0.045, 0.018, 0.008),
    "turbid_water": (0.080, 0.105, 0.125, 0.165, 0.030),
    "vegetation": (0.040, 0.080, 0.050, 0.290, 0.170),
    "soil": (0.095, 0.120, 0.165, 0.280, 0.330),
    "wet_soil": (0.065, 0.092, 0.100, 0.102, 0.150),
    "concrete": (0.190, 0.205, 0.240, 0.380, 0.400),
    "tile": (0.090, 0.110, 0.200, 0.260, 0.300),
    "asphalt": (0.075, 0.085, 0.088, 0.094, 0.130),
}
_SKYLIGHT = np.array([0.030, 0.028, 0.015, 0.004, 0.002], np.float32)  # diffuse light left in shadows


@dataclass(frozen=True)
class DemoScene:
    """A scene's truth on its first-date grid: ``labels`` (y, x) uint8 class values, ``reflectance``
    (5, y, x) float32 noise- and cloud-free surface reflectance in :data:`BANDS` order, and the grid."""

    name: str
    labels: np.ndarray
    reflectance: np.ndarray
    crs: CRS
    transform: Affine


def _smooth(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth random field scaled to [0, 1]."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    lo, hi = field.min(), field.max()
    return ((field - lo) / (hi - lo + 1e-12)).astype(np.float32)


def _paint(refl: np.ndarray, mask: np.ndarray, spectrum, texture: np.ndarray) -> None:
    refl[:, mask] = np.asarray(spectrum, np.float32)[:, None] * texture[mask]


def _world(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels (n, n) uint8, reflectance (5, n, n) float32) of an ``n`` x ``n`` world."""
    texture = 0.9 + 0.2 * _smooth(rng, (n, n), 3.0)
    refl = np.empty((5, n, n), np.float32)
    cover = np.clip((_smooth(rng, (n, n), n / 14) - 0.3) / 0.35, 0, 1)  # fractional vegetation cover
    veg, soil = (np.asarray(_SPECTRA[k], np.float32)[:, None, None] for k in ("vegetation", "soil"))
    refl[:] = (veg * cover + soil * (1 - cover)) * texture

    # water: lakes (top of a smooth field) and a sinuous river across the scene
    field = _smooth(rng, (n, n), n / 16)
    lakes = field > np.quantile(field, rng.uniform(0.88, 0.93))
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    if rng.random() < 0.5:
        yy, xx = xx, yy
    centre = n * rng.uniform(0.3, 0.7) + n * 0.12 * np.sin(2 * np.pi * xx / (n * rng.uniform(0.5, 0.9)) + rng.uniform(0, 6))
    river = np.abs(yy - centre) < rng.uniform(3.0, 5.5) * (0.8 + 0.4 * _smooth(rng, (n, n), 8.0))
    water = lakes | river
    # wet soil: wetness fading over ~4 px from the shores, plus a few wet patches (mixed spectra)
    shore = np.clip(1 - ndimage.distance_transform_edt(~water) / 4.0, 0, 1)
    patches = _smooth(rng, (n, n), n / 20)
    wetness = np.maximum(shore, np.clip((patches - np.quantile(patches, 0.97)) / 0.05, 0, 1)) * ~water
    wet = np.asarray(_SPECTRA["wet_soil"], np.float32)[:, None, None] * texture
    refl[:] = refl * (1 - wetness) + wet * wetness
    # water: clear to turbid (lakes a little, the river strongly and unevenly)
    turbidity = np.clip(0.6 * _smooth(rng, (n, n), n / 18) - 0.1 + river * (0.2 + 0.6 * _smooth(rng, (n, n), 12.0)), 0, 1)
    clear, turbid = np.asarray(_SPECTRA["clear_water"], np.float32), np.asarray(_SPECTRA["turbid_water"], np.float32)
    refl[:, water] = (clear[:, None] * (1 - turbidity[water]) + turbid[:, None] * turbidity[water]) * texture[water]

    # built: a town of rectangular blocks on a street grid, away from the water
    labels = np.zeros((n, n), np.uint8)
    shadow = np.zeros((n, n), bool)
    for _ in range(int(rng.integers(1, 3))):
        cy, cx, half = rng.integers(n // 5, 4 * n // 5, 2).tolist() + [int(n * rng.uniform(0.15, 0.25))]
        y = cy - half
        while y < cy + half:
            h, x = int(rng.integers(6, 16)), cx - half
            while x < cx + half:
                w = int(rng.integers(6, 18))
                y0, y1, x0, x1 = max(y, 0), min(y + h, n), max(x, 0), min(x + w, n)
                block = np.s_[y0:y1, x0:x1]
                if y1 > y0 and x1 > x0 and not water[block].any() and rng.random() < 0.8:
                    labels[block] = CLASSES["built"]
                    roof = np.asarray(_SPECTRA[rng.choice(["concrete", "tile"])], np.float32)
                    dark = rng.uniform(0, 1) ** 3 if rng.random() < 0.3 else 0.0  # some dark asphalt roofs
                    roof = roof * (1 - dark) + np.asarray(_SPECTRA["asphalt"], np.float32) * dark
                    refl[:, y0:y1, x0:x1] = roof[:, None, None] * texture[block]
                    s = int(rng.integers(1, 3))  # shadow cast to the south-east
                    shadow[min(y1, n - 1):min(y1 + s, n), min(x0 + s, n - 1):min(x1 + s, n)] = True
                    shadow[min(y0 + s, n - 1):min(y1 + s, n), min(x1, n - 1):min(x1 + s, n)] = True
                x += w + int(rng.integers(2, 5))
            y += h + int(rng.integers(2, 5))
    shadow &= (labels == 0) & ~water
    depth = rng.uniform(0.7, 0.9)
    refl[:, shadow] = refl[:, shadow] * (1 - depth) + _SKYLIGHT[:, None] * depth
    labels[water] = CLASSES["water"]
    refl *= 0.94 + 0.12 * np.stack([_smooth(rng, (n, n), 2.0) for _ in range(5)])  # per-band texture
    refl *= 1 + 0.02 * rng.standard_normal((5, n, n)).astype(np.float32)
    return labels, refl


def demo_scene(index: int = 0, size: int = 320, seed: int = 0, pixel_m: float = 10.0) -> DemoScene:
    """The truth of scene ``index`` (named ``demo_scene_<index + 1:02d>``), deterministic for ``seed``."""
    return _scene(index, size, seed, pixel_m)[0]


def _scene(index: int, size: int, seed: int, pixel_m: float) -> tuple[DemoScene, np.ndarray]:
    """(truth, reflectance of the world with a ``_MARGIN`` px border)."""
    rng = np.random.default_rng([seed, index, 1])
    labels, refl = _world(rng, size + 2 * _MARGIN)
    core = np.s_[_MARGIN:_MARGIN + size, _MARGIN:_MARGIN + size]
    crs = CRS.from_epsg(_ZONES[index % len(_ZONES)])
    x0 = 300000.0 + pixel_m * 40 * int(rng.integers(0, 1000))
    y0 = 4_000_000.0 + pixel_m * 40 * int(rng.integers(0, 2000))
    transform = Affine(pixel_m, 0.0, x0, 0.0, -pixel_m, y0)
    return DemoScene(f"demo_scene_{index + 1:02d}", labels[core].copy(), refl[(slice(None),) + core].copy(),
                     crs, transform), refl


def _date_shift(rng: np.random.Generator, k: int) -> tuple[float, float]:
    if k == 0:
        return 0.0, 0.0
    if k == 1:
        pair = rng.integers(-2, 3, 2)
        while not pair.any():
            pair = rng.integers(-2, 3, 2)
        return float(pair[0]), float(pair[1])
    return tuple(float(v) for v in np.round(rng.uniform(-1.9, 1.9, 2), 1))


def _clouds(rng: np.random.Generator, n: int, cover: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(opacity (n, n) float 0..1, cloud mask, shadow mask) for a target cloud cover fraction."""
    if cover <= 0:
        zero = np.zeros((n, n), bool)
        return np.zeros((n, n), np.float32), zero, zero
    field = _smooth(rng, (n, n), n / 20)
    level = np.quantile(field, 1 - cover)
    opacity = np.clip((field - level) / 0.06, 0, 1).astype(np.float32)
    cloud = opacity > 0.3
    dy, dx = rng.integers(6, 14, 2)  # sun-dependent offset of the shadow from its cloud
    shadow = ndimage.shift(cloud, (int(dy), int(dx)), order=0, mode="constant", cval=False) & ~cloud
    return opacity, cloud, shadow


def write_demo_scenes(inbox: Path, n_scenes: int = 3, size: int = 320, n_dates: int = 3, seed: int = 0,
                      pixel_m: float = 10.0) -> list[dict]:
    """Write ``n_scenes`` scenes of ``n_dates`` dates into ``inbox`` (see the module docstring).

    Returns per scene ``{"name", "dates" ["YYYY-MM-DD"], "shifts" [(dy, dx) px per date], "cloud_fraction"
    [per date, share of the grid flagged cloudy in BQA], "crs", "label"}``. Same arguments, same bytes.
    """
    inbox = Path(inbox)
    records = []
    for index in range(n_scenes):
        scene, world = _scene(index, size, seed, pixel_m)
        rng = np.random.default_rng([seed, index, 2])
        folder = inbox / scene.name
        folder.mkdir(parents=True, exist_ok=True)
        profile = dict(driver="GTiff", height=size, width=size, count=1, crs=scene.crs, transform=scene.transform,
                       tiled=True, blockxsize=128, blockysize=128, compress="deflate")
        label_path = folder / f"{scene.name}_label.tif"
        with rasterio.open(label_path, "w", dtype="uint8", nodata=None, **profile) as dst:
            dst.write(scene.labels, 1)
        start = _dt.date(2023, 4, 3) + _dt.timedelta(days=int(rng.integers(0, 120)))
        dates, shifts, fractions = [], [], []
        for k in range(n_dates):
            date = start + _dt.timedelta(days=16 * k)
            dy, dx = _date_shift(rng, k)
            moved = ndimage.shift(world, (0, dy, dx), order=1, mode="nearest")
            refl = moved[:, _MARGIN:_MARGIN + size, _MARGIN:_MARGIN + size]
            refl = refl * rng.uniform(0.96, 1.04) + rng.normal(0, 0.004, refl.shape).astype(np.float32)
            cover = 0.0 if k == 0 and n_dates > 1 else float(rng.uniform(0.05, 0.25))
            opacity, cloud, shadow = _clouds(rng, size, cover)
            refl[:, shadow] *= 0.35
            white = np.float32(0.55) + 0.15 * _smooth(rng, (size, size), 4.0)
            refl = refl * (1 - opacity) + white * opacity
            dn = np.clip(np.rint(refl * 10000), 1, 65535).astype(np.uint16)
            qa = np.full((size, size), QA_CLEAR, np.uint16)
            qa[shadow] = QA_SHADOW
            qa[cloud] = QA_CLOUD
            if k == n_dates - 1 and index % 2 == 1:  # a swath edge: no data in a corner triangle
                rows, cols = np.mgrid[0:size, 0:size]
                fill = rows + cols < size // 4
                dn[:, fill], qa[fill] = 0, QA_FILL
            day = folder / date.isoformat()
            day.mkdir(exist_ok=True)
            stem = f"{scene.name}_{date:%Y%m%d}"
            for b, band in enumerate(BANDS):
                with rasterio.open(day / f"{stem}_{BAND_FILES[band]}.tif", "w", dtype="uint16", nodata=0, **profile) as dst:
                    dst.write(dn[b], 1)
            with rasterio.open(day / f"{stem}_BQA.tif", "w", dtype="uint16", nodata=0, **profile) as dst:
                dst.write(qa, 1)
            dates.append(date.isoformat())
            shifts.append((dy, dx))
            fractions.append(float(((qa & (1 << 4)) != 0).mean()))
        records.append({"name": scene.name, "dates": dates, "shifts": shifts, "cloud_fraction": fractions,
                        "crs": scene.crs.to_string(), "label": str(label_path)})
    return records
