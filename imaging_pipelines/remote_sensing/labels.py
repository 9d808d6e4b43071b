"""Burn vector labels (GeoJSON polygons) onto a raster grid.

GeoJSON coordinates are in the file's legacy ``crs`` member (e.g. ``urn:ogc:def:crs:EPSG::32616``)
when present, else in the CRS the catalog declares (``segmentation.labels.crs``), else EPSG:4326
longitude/latitude (RFC 7946), which is never assumed for coordinates outside longitude/latitude ranges
(clearly projected): those are refused with an error naming the file. A file ``crs`` member that contradicts
the declared CRS is refused too. Coordinates are reprojected to the raster CRS when it differs; a
projection failure is an error naming the file. A pixel is burned when its centre falls inside a polygon (``all_touched=False``,
GDAL's rule), or when the polygon touches it at all with ``all_touched=True``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import numpy as np
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.warp import transform_geom

from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.core.raster import Raster

WGS84 = CRS.from_epsg(4326)
GEOMETRY_TYPES = ("Polygon", "MultiPolygon", "GeometryCollection", "Point", "MultiPoint", "LineString", "MultiLineString")


def _crs(path, text: str, what: str) -> CRS:
    try:
        return CRS.from_user_input(text)
    except Exception as exc:
        raise ImagingInputError(path, f"unknown {what} {text!r}: {exc}") from exc


def _coordinates(node) -> Iterator[tuple[float, float]]:
    """Every (x, y) position of a geometry dict (nested coordinate lists, geometry collections)."""
    if isinstance(node, dict):
        for child in node.get("geometries") or []:
            yield from _coordinates(child)
        node = node.get("coordinates")
    if isinstance(node, (list, tuple)):
        if len(node) >= 2 and all(isinstance(v, (int, float)) for v in node[:2]):
            yield float(node[0]), float(node[1])
        else:
            for child in node:
                yield from _coordinates(child)


def projected_position(geometries: list[dict]) -> tuple[float, float] | None:
    """The first position outside longitude [-180, 180] / latitude [-90, 90], else None."""
    return next(((x, y) for g in geometries for x, y in _coordinates(g) if abs(x) > 180 or abs(y) > 90), None)


def load_geojson(path: str | os.PathLike, declared_crs: str | None = None) -> tuple[list[dict], CRS]:
    """``(geometries, crs)`` of a GeoJSON FeatureCollection, Feature or bare geometry (null ones dropped).

    ``crs``: the file's ``crs`` member, else ``declared_crs`` (the catalog's), else EPSG:4326 when every
    coordinate is a plausible longitude/latitude; otherwise :class:`ImagingInputError` naming the file."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ImagingInputError(path, f"not a readable GeoJSON file: {exc}") from exc
    if not isinstance(doc, dict):
        raise ImagingInputError(path, "not GeoJSON (not a JSON object)")
    name = ((doc.get("crs") or {}).get("properties") or {}).get("name")
    crs = _crs(path, name, "GeoJSON crs") if name else None
    declared = _crs(path, declared_crs, "declared labels crs") if declared_crs else None
    if crs is not None and declared is not None and crs != declared:
        raise ImagingInputError(path, f"the file's crs member {name!r} contradicts the declared labels crs "
                                      f"{declared_crs!r}")
    kind = doc.get("type")
    if kind == "FeatureCollection":
        geoms = [f.get("geometry") for f in doc.get("features", [])]
    elif kind == "Feature":
        geoms = [doc.get("geometry")]
    elif kind in GEOMETRY_TYPES:
        geoms = [doc]
    else:
        raise ImagingInputError(path, f"not GeoJSON (type {kind!r})")
    geoms = [g for g in geoms if g]
    crs = crs or declared
    if crs is None:
        far = projected_position(geoms)
        if far is not None:
            raise ImagingInputError(path, f"coordinate ({far[0]:.6g}, {far[1]:.6g}) is not longitude/latitude, and "
                                          "the file has no 'crs' member: its CRS is unknown (declare it as "
                                          "segmentation.labels.crs, e.g. EPSG:32616)")
        crs = WGS84
    return geoms, crs


def rasterize_labels(
    geometries: list[dict] | str | os.PathLike,
    grid: Raster,
    *,
    labels_crs: CRS | str | None = None,
    burn_value: int = 255,
    dtype: str = "uint8",
    all_touched: bool = False,
    source: str | os.PathLike | None = None,
) -> np.ndarray:
    """A (y, x) ``dtype`` mask on ``grid``'s pixels: ``burn_value`` inside the geometries, 0 elsewhere.

    ``geometries`` is a GeoJSON path or a list of GeoJSON geometry dicts in ``labels_crs``
    (default EPSG:4326, or the file's own CRS, see :func:`load_geojson`); ``source`` names their file in
    errors (a projection failure is an :class:`ImagingInputError`).
    """
    if isinstance(geometries, (str, os.PathLike)):
        source = os.fspath(geometries)
        declared = None if labels_crs is None else CRS.from_user_input(labels_crs).to_string()
        geometries, labels_crs = load_geojson(source, declared)
    src_crs = CRS.from_user_input(labels_crs) if labels_crs is not None else WGS84
    dst_crs = grid.crs_obj
    shape = (grid.height, grid.width)
    if not geometries:
        return np.zeros(shape, dtype=dtype)
    if dst_crs is None:
        raise ImagingInputError(source, "the target raster has no CRS: cannot place georeferenced labels")
    if src_crs != dst_crs:
        try:
            geometries = [transform_geom(src_crs, dst_crs, g) for g in geometries]
        except Exception as exc:  # noqa: BLE001 - PROJ / GDAL errors of many types
            raise ImagingInputError(source, f"cannot project the label geometries from {src_crs.to_string()} to "
                                            f"{dst_crs.to_string()}: {exc}") from exc
    return rasterize(
        ((g, burn_value) for g in geometries), out_shape=shape, transform=grid.transform,
        fill=0, all_touched=all_touched, dtype=dtype,
    )


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks (non-zero = foreground); 1.0 when both are empty."""
    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
