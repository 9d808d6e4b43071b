"""Burn vector labels (GeoJSON polygons) onto a raster grid.

GeoJSON coordinates are in the file's legacy ``crs`` member (e.g. ``urn:ogc:def:crs:EPSG::32616``)
when present, else EPSG:4326 longitude/latitude (RFC 7946); they are reprojected to the raster CRS
when it differs. A pixel is burned when its centre falls inside a polygon (``all_touched=False``,
GDAL's rule), or when the polygon touches it at all with ``all_touched=True``.
"""

from __future__ import annotations

import json
import os

import numpy as np
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.warp import transform_geom

from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.core.raster import Raster

WGS84 = CRS.from_epsg(4326)
GEOMETRY_TYPES = ("Polygon", "MultiPolygon", "GeometryCollection", "Point", "MultiPoint", "LineString", "MultiLineString")


def load_geojson(path: str | os.PathLike) -> tuple[list[dict], CRS]:
    """``(geometries, crs)`` of a GeoJSON FeatureCollection, Feature or bare geometry (null ones dropped)."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ImagingInputError(path, f"not a readable GeoJSON file: {exc}") from exc
    crs = WGS84
    name = (doc.get("crs") or {}).get("properties", {}).get("name")
    if name:
        try:
            crs = CRS.from_user_input(name)
        except Exception as exc:
            raise ImagingInputError(path, f"unknown GeoJSON crs {name!r}: {exc}") from exc
    kind = doc.get("type")
    if kind == "FeatureCollection":
        geoms = [f.get("geometry") for f in doc.get("features", [])]
    elif kind == "Feature":
        geoms = [doc.get("geometry")]
    elif kind in GEOMETRY_TYPES:
        geoms = [doc]
    else:
        raise ImagingInputError(path, f"not GeoJSON (type {kind!r})")
    return [g for g in geoms if g], crs


def rasterize_labels(
    geometries: list[dict] | str | os.PathLike,
    grid: Raster,
    *,
    labels_crs: CRS | str | None = None,
    burn_value: int = 255,
    dtype: str = "uint8",
    all_touched: bool = False,
) -> np.ndarray:
    """A (y, x) ``dtype`` mask on ``grid``'s pixels: ``burn_value`` inside the geometries, 0 elsewhere.

    ``geometries`` is a GeoJSON path or a list of GeoJSON geometry dicts in ``labels_crs``
    (default EPSG:4326, or the file's own CRS).
    """
    source = None
    if isinstance(geometries, (str, os.PathLike)):
        source = os.fspath(geometries)
        geometries, file_crs = load_geojson(source)
        labels_crs = labels_crs or file_crs
    src_crs = CRS.from_user_input(labels_crs) if labels_crs is not None else WGS84
    dst_crs = grid.crs_obj
    shape = (grid.height, grid.width)
    if not geometries:
        return np.zeros(shape, dtype=dtype)
    if dst_crs is None:
        raise ImagingInputError(source, "the target raster has no CRS: cannot place georeferenced labels")
    if src_crs != dst_crs:
        geometries = [transform_geom(src_crs, dst_crs, g) for g in geometries]
    return rasterize(
        ((g, burn_value) for g in geometries), out_shape=shape, transform=grid.transform,
        fill=0, all_touched=all_touched, dtype=dtype,
    )


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks (non-zero = foreground); 1.0 when both are empty."""
    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
