"""Class maps -> GeoJSON polygons, class areas in hectares, per-class IoU.

Label maps are ``(y, x)`` integer class *values* (0 = background; ``classes`` maps names to values) on a
grid given by a GDAL pixel-corner ``transform`` and a ``crs``. Areas are in hectares (1 ha = 10 000 m2):

* projected CRS: every pixel has the area ``|a*e - b*d|`` (CRS units squared) times the square of the CRS
  linear-unit factor (metres per unit; 1 for UTM, 0.3048 for international feet);
* geographic CRS (degrees): pixel areas are integrated on the CRS ellipsoid. For north-up grids each row
  is the ellipsoidal band between its two parallels, ``dlon * (S(lat_top) - S(lat_bottom))`` with ``S`` the
  ellipsoid's area-from-equator function (exact); rotated grids use the local area element
  ``M(lat) * N(lat) * cos(lat) * |det|`` at each pixel centre (second-order accurate).

A polygon's ``area_ha`` is the sum of the areas of its pixels, so polygon areas add up to the class areas.
"""

from __future__ import annotations

import math

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import shapes
from scipy import ndimage


def _crs(crs) -> CRS:
    if crs is None:
        raise ValueError("the label grid has no CRS: areas and polygons need one")
    return crs if isinstance(crs, CRS) else CRS.from_user_input(crs)


def _ellipsoid(crs: CRS) -> tuple[float, float]:
    """``(semi-major axis in metres, first eccentricity squared)`` of the CRS's ellipsoid."""
    import pyproj

    ell = pyproj.CRS.from_wkt(crs.to_wkt()).ellipsoid
    a, b = ell.semi_major_metre, ell.semi_minor_metre
    return a, 1.0 - (b * b) / (a * a)


def _band_area(lat_deg: np.ndarray, a: float, e2: float) -> np.ndarray:
    """Ellipsoid area (m2) between the equator and ``lat`` per radian of longitude (signed)."""
    s = np.sin(np.radians(lat_deg))
    b2 = a * a * (1.0 - e2)
    if e2 < 1e-15:
        return b2 * s
    e = math.sqrt(e2)
    return b2 / 2.0 * (s / (1.0 - e2 * s * s) + np.arctanh(e * s) / e)


def pixel_area_m2(shape: tuple[int, int], transform: Affine, crs) -> np.ndarray:
    """Pixel areas in m2, broadcastable to ``shape`` (a scalar array when every pixel is alike)."""
    crs = _crs(crs)
    t = transform
    det = abs(t.a * t.e - t.b * t.d)
    if not crs.is_geographic:
        factor = crs.linear_units_factor[1]
        return np.asarray(det * factor * factor)
    a, e2 = _ellipsoid(crs)
    h, w = shape
    if t.b == 0 and t.d == 0:  # north-up: exact ellipsoidal bands between parallels
        edges = t.f + t.e * np.arange(h + 1, dtype=np.float64)
        return (np.abs(np.radians(t.a) * np.diff(_band_area(edges, a, e2))))[:, None]
    rows, cols = np.mgrid[0:h, 0:w] + 0.5
    lat = np.radians(t.f + t.d * cols + t.e * rows)
    s2 = np.sin(lat) ** 2
    return a * a * (1.0 - e2) * np.cos(lat) / (1.0 - e2 * s2) ** 2 * det * (math.pi / 180.0) ** 2


def class_areas_ha(labels: np.ndarray, transform: Affine, crs, classes: dict[str, int]) -> dict[str, float]:
    """Area in hectares of every class (pixels equal to its value), see the module docstring."""
    labels = np.asarray(labels)
    area = np.broadcast_to(pixel_area_m2(labels.shape, transform, crs), labels.shape)
    return {name: float(area[labels == v].sum() / 1e4) for name, v in classes.items()}


def crs_name(crs) -> str:
    """``"EPSG:n"`` when the CRS has an EPSG code, else its WKT."""
    crs = _crs(crs)
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def class_polygons(labels: np.ndarray, transform: Affine, crs, classes: dict[str, int]) -> dict:
    """GeoJSON FeatureCollection of the class regions in the grid CRS (pixel-edge outlines, holes kept).

    One feature per 4-connected region of a class (``rasterio.features.shapes``); properties
    ``{"class": name, "value": v, "area_ha": ...}``; a legacy ``"crs"`` member names the CRS
    (``"EPSG:n"`` or WKT). Pixels of values not in ``classes`` are ignored.
    """
    labels = np.asarray(labels)
    crs = _crs(crs)
    component = np.zeros(labels.shape, np.int32)
    comp_class: list[tuple[str, int]] = [("", 0)]
    for name, v in classes.items():
        lab, n = ndimage.label(labels == v)  # 4-connectivity, as shapes(connectivity=4)
        component[lab > 0] = lab[lab > 0] + (len(comp_class) - 1)
        comp_class += [(name, int(v))] * n
    area = np.broadcast_to(pixel_area_m2(labels.shape, transform, crs), labels.shape)
    comp_area = np.bincount(component.ravel(), weights=area.ravel(), minlength=len(comp_class)) / 1e4
    features = []
    for geom, cid in shapes(component, mask=component > 0, connectivity=4, transform=transform):
        name, v = comp_class[int(cid)]
        features.append({"type": "Feature", "geometry": geom,
                         "properties": {"class": name, "value": v, "area_ha": float(comp_area[int(cid)])}})
    return {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": crs_name(crs)}},
            "features": features}


def class_iou(pred: np.ndarray, ref: np.ndarray, classes: dict[str, int],
              valid: np.ndarray | None = None) -> dict[str, float]:
    """Per-class IoU of two class-value maps over ``valid`` pixels (all when ``None``); 1.0 when a class is
    absent from both."""
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    keep = np.ones(pred.shape, bool) if valid is None else np.asarray(valid, bool)
    out = {}
    for name, v in classes.items():
        a, b = (pred == v) & keep, (ref == v) & keep
        union = int((a | b).sum())
        out[name] = 1.0 if union == 0 else float((a & b).sum() / union)
    return out
