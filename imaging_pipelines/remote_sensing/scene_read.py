"""Read one window of a scene's grid from an acquisition's band files (and from the scene's labels).

Every band ends up on the window grid (scene grid CRS, ``window_transform`` of the scene transform):

* a file on the scene grid (same CRS and pixel size, integer pixel offset) is read directly, bit exact;
  parts of the window outside the file are NaN (a boundless read);
* any other file is warped with :func:`rasterio.warp.reproject`: nearest neighbour for ``role == "qa"``
  bands (bit flags must not be blended), ``average`` when the file's pixels are finer than the grid's,
  ``bilinear`` when coarser or equal; a file in another CRS is reprojected and reported in the notes.

Source nodata is the file's own, else ``cfg.nodata``; nodata and pixels outside the file become NaN.

Layers (``cfg.layers``: cloud mask, QA, DEM, extra rasters in their own files) follow the bands in the
window raster, under their layer names; masks and QA layers are resampled with nearest neighbour. A layer file
not on the scene grid is resampled (with a note naming the file) or, with ``on_other_grid: error``,
refused with an error naming the file and both grids.
"""

from __future__ import annotations

import contextlib
import json
import math

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window

try:  # GDAL errors raised while warping
    from rasterio._err import CPLE_BaseError
except ImportError:  # pragma: no cover
    CPLE_BaseError = RasterioError

from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.config.remote_sensing import RemoteSensingConfig
from imaging_pipelines.remote_sensing.io import RasterReader, gdal_message
from imaging_pipelines.remote_sensing.labels import load_geojson, rasterize_labels
from imaging_pipelines.core.raster import PixelWindow, Raster, nodata_in_dtype, window_transform
from imaging_pipelines.remote_sensing.scenes import Acquisition, SceneGrid, SceneSource

_TOL = 1e-9  # relative tolerance on pixel sizes
_PX_TOL = 1e-6  # tolerance (pixels) on an integer offset


def _crs_text(crs) -> str:
    return "no CRS" if crs is None else crs.to_string()


def _pixel_offset(reader: RasterReader, grid: SceneGrid) -> tuple[int, int] | None:
    """(row, col) of the grid's pixel (0, 0) in the file when the file is on the scene grid, else None."""
    t, g = reader.transform, grid.transform
    if reader.crs != grid.crs:
        return None
    if abs(t.a - g.a) > _TOL * abs(g.a) or abs(t.e - g.e) > _TOL * abs(g.e):
        return None
    dc, dr = (g.c - t.c) / g.a, (g.f - t.f) / g.e
    if abs(dc - round(dc)) > _PX_TOL or abs(dr - round(dr)) > _PX_TOL:
        return None
    return round(dr), round(dc)


def _check_overlap(reader: RasterReader, grid: SceneGrid) -> None:
    """ImagingInputError unless the file's footprint intersects the scene grid."""
    if (reader.crs is None) != (grid.crs is None):
        raise ImagingInputError(reader.path, f"file has {_crs_text(reader.crs)}, scene grid has "
                                             f"{_crs_text(grid.crs)}: cannot place it on the grid")
    bounds = reader._ds.bounds
    if reader.crs != grid.crs:
        try:
            bounds = transform_bounds(reader.crs, grid.crs, *bounds, densify_pts=21)
        except Exception as exc:  # noqa: BLE001 - projection failures
            problem = f"cannot project its footprint to {_crs_text(grid.crs)}: {exc}"
            raise ImagingInputError(reader.path, problem) from exc
    gl, gb, gr, gt = grid.bounds
    left, right = sorted(bounds[0::2])  # south-up files report bottom > top
    bottom, top = sorted(bounds[1::2])
    if not (all(map(math.isfinite, bounds)) and left < gr and right > gl and bottom < gt and top > gb):
        raise ImagingInputError(
            reader.path, f"footprint {tuple(round(v, 3) for v in bounds)} does not overlap the scene grid "
                         f"{tuple(round(v, 3) for v in grid.bounds)} ({_crs_text(grid.crs)})")


def _grid_text(crs, transform) -> str:
    return f"{_crs_text(crs)}, pixel {abs(transform.a):g} x {abs(transform.e):g}, origin ({transform.c:g}, {transform.f:g})"


def band_count_problem(cfg: RemoteSensingConfig, acquisition: Acquisition, count: int) -> str | None:
    """Why a file with ``count`` bands cannot hold ``acquisition``'s bands (catalog indices, time series), else None."""
    label = f" of date {acquisition.date}" if cfg.time_series is not None else ""
    for spec in cfg.bands:
        index = cfg.file_band(spec.name, acquisition.step)
        if index > count:
            return f"band {spec.name!r}{label} is band {index}, but the file has {count} band(s)"
    if cfg.time_series is not None and count != len(cfg.time_series.dates) * cfg.bands_per_date:
        return (f"time_series declares {len(cfg.time_series.dates)} date(s) x {cfg.bands_per_date} band(s) = "
                f"{len(cfg.time_series.dates) * cfg.bands_per_date} bands, but the file has {count}")
    return None


def _resampling(reader: RasterReader, grid: SceneGrid, qa: bool) -> Resampling:
    if qa:
        return Resampling.nearest
    left, bottom, right, top = reader._ds.bounds
    if reader.crs != grid.crs:
        left, bottom, right, top = transform_bounds(reader.crs, grid.crs, left, bottom, right, top)
    src_res = max((right - left) / reader.width, (top - bottom) / reader.height)
    dst_res = max(abs(grid.transform.a), abs(grid.transform.e))
    return Resampling.average if src_res < dst_res * (1 - 1e-6) else Resampling.bilinear


def _read_band(reader: RasterReader, index: int, grid: SceneGrid, window: PixelWindow, nodata, qa: bool) -> np.ndarray:
    """(h, w) float32 of band ``index`` on the window grid, NaN where nodata / outside the file."""
    out = np.full((window.height, window.width), np.nan, dtype=np.float32)
    ds = reader._ds
    try:
        offset = _pixel_offset(reader, grid)
        if offset is not None:
            r0, c0 = window.row_off + offset[0], window.col_off + offset[1]
            rr0, cc0 = max(r0, 0), max(c0, 0)
            rr1, cc1 = min(r0 + window.height, reader.height), min(c0 + window.width, reader.width)
            if rr1 > rr0 and cc1 > cc0:
                data = ds.read(index, window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0))
                value = nodata_in_dtype(nodata, data.dtype)
                piece = data.astype(np.float32)
                if value is not None:
                    piece[data == value] = np.nan
                out[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = piece
            return out
        reproject(
            source=rasterio.band(ds, index), destination=out, src_nodata=nodata,
            dst_transform=window_transform(grid.transform, window.row_off, window.col_off), dst_crs=grid.crs,
            dst_nodata=np.nan, resampling=_resampling(reader, grid, qa),
        )
    except (RasterioError, CPLE_BaseError) as exc:
        raise ImagingInputError(reader.path, f"corrupt or unreadable pixel data: {gdal_message(exc)}") from exc
    return out


def read_acquisition_window(
    source: SceneSource, acquisition: Acquisition, cfg: RemoteSensingConfig, grid: SceneGrid, window: PixelWindow
) -> tuple[Raster, list[str]]:
    """``(raster, notes)``: the ``cfg.bands`` of ``acquisition`` on ``window`` of the scene grid.

    ``raster``: (bands in ``cfg.bands`` order then ``cfg.layers``, window.height, window.width) float32 in
    file units (DN, not yet scaled), NaN = nodata / outside the file, band names = catalog band and layer
    names, CRS = grid CRS, transform = the window's. ``notes``: files reprojected from another CRS, layers
    resampled from another grid. Raises :class:`ImagingInputError` naming the file when it is unreadable /
    corrupt, lacks the band (or holds another number of bands than a ``time_series`` implies), does not
    overlap the scene grid, or is a layer on another grid with ``on_other_grid: error``.
    """
    window = PixelWindow(*window)
    label = acquisition.date or "undated"
    bands, notes = [], []
    with contextlib.ExitStack() as stack:
        readers: dict[str, RasterReader] = {}

        def reader_of(path: str) -> RasterReader:
            if path not in readers:
                reader = stack.enter_context(RasterReader(path))
                _check_overlap(reader, grid)
                if reader.crs != grid.crs:
                    notes.append(f"{label}: {path} is in {_crs_text(reader.crs)}, not the scene grid's "
                                 f"{_crs_text(grid.crs)}; reprojected")
                readers[path] = reader
            return readers[path]

        for spec in cfg.bands:
            path = acquisition.path_of(spec.name)
            reader = reader_of(path)
            problem = band_count_problem(cfg, acquisition, reader.count)
            if problem:
                raise ImagingInputError(path, problem)
            index = cfg.file_band(spec.name, acquisition.step)
            bands.append(_read_band(reader, index, grid, window, _nodata(reader, index, cfg), spec.role == "qa"))
        for layer in cfg.layers:
            path = acquisition.path_of(layer.name)
            reader = reader_of(path)
            if layer.band > reader.count:
                raise ImagingInputError(path, f"layer {layer.name!r} is band {layer.band}, but the file has {reader.count}")
            if _pixel_offset(reader, grid) is None and (reader.crs == grid.crs or layer.on_other_grid == "error"):
                where = (f"layer {layer.name!r} is on {_grid_text(reader.crs, reader.transform)}, not the scene grid "
                         f"({_grid_text(grid.crs, grid.transform)})")
                if layer.on_other_grid == "error":
                    raise ImagingInputError(path, where + " (on_other_grid: error)")
                notes.append(f"{label}: {path}: {where}; resampled onto the scene grid")
            bands.append(_read_band(reader, layer.band, grid, window, _nodata(reader, layer.band, cfg),
                                    layer.resample_nearest))
    transform = window_transform(grid.transform, window.row_off, window.col_off)
    names = [b.name for b in cfg.bands] + [x.name for x in cfg.layers]
    raster = Raster(np.stack(bands), grid.crs, transform, float("nan"), names)
    return raster, notes


def _nodata(reader: RasterReader, index: int, cfg: RemoteSensingConfig):
    """The nodata value of band ``index`` (the file's own, else ``cfg.nodata``)."""
    nodata = reader._ds.nodatavals[index - 1]
    return cfg.nodata if nodata is None else nodata


def _geojson_classes(path: str, cfg: RemoteSensingConfig) -> tuple[list[tuple[dict, int]], object]:
    """``([(geometry, class value)], crs)`` of a label GeoJSON (features of unknown classes skipped)."""
    labels, classes = cfg.segmentation.labels, cfg.segmentation.classes
    geometries, crs = load_geojson(path, labels.crs)  # validates the file and its CRS
    with open(path) as fh:
        doc = json.load(fh)
    features = doc.get("features") if doc.get("type") == "FeatureCollection" else None
    if labels.class_property is None or features is None:
        if labels.geojson_class is not None:
            if labels.geojson_class not in classes:
                raise ImagingInputError(path, f"geojson_class {labels.geojson_class!r} is not a class ({classes})")
            value = classes[labels.geojson_class]
        elif len(classes) == 1:
            value = next(iter(classes.values()))
        else:
            raise ImagingInputError(path, "cannot tell the polygons' class: set segmentation.labels.class_property "
                                          f"or geojson_class (classes {sorted(classes)})")
        return [(g, value) for g in geometries], crs
    out = []
    values = set(classes.values())
    for feature in features:
        geometry, name = feature.get("geometry"), (feature.get("properties") or {}).get(labels.class_property)
        if not geometry:
            continue
        if name in classes:
            out.append((geometry, classes[name]))
        elif isinstance(name, int) and name in values:
            out.append((geometry, name))
    return out, crs


def read_label_window(
    source: SceneSource, cfg: RemoteSensingConfig, grid: SceneGrid, window: PixelWindow
) -> np.ndarray | None:
    """(h, w) uint8 class values (0 = background) of the scene's labels on ``window``, or None.

    ``cfg.segmentation.labels.source`` picks the kind ("none" -> None). Raster labels are warped with
    nearest neighbour (values must be integers 0..255; nodata / outside -> 0). GeoJSON polygons are burned
    per class in ``classes`` order (later classes win where polygons overlap); the class comes from the
    ``class_property`` (a class name, or a class value), else every polygon is ``geojson_class`` (or the
    only class). Features whose class is not in ``classes`` are skipped.
    """
    window = PixelWindow(*window)
    kind = cfg.segmentation.labels.source
    if kind == "raster" and source.label_raster:
        with RasterReader(source.label_raster) as reader:
            _check_overlap(reader, grid)
            data = _read_band(reader, 1, grid, window, reader.nodata, qa=True)
        data = np.nan_to_num(data, nan=0.0)
        if data.size and (data.min() < 0 or data.max() > 255 or (data != np.round(data)).any()):
            raise ImagingInputError(source.label_raster, "label values must be integers 0..255 (class values)")
        return data.astype(np.uint8)
    if kind == "geojson" and source.label_geojson:
        transform = window_transform(grid.transform, window.row_off, window.col_off)
        target = Raster(np.zeros((1, window.height, window.width), np.uint8), grid.crs, transform)
        out = np.zeros((window.height, window.width), np.uint8)
        shapes, labels_crs = _geojson_classes(source.label_geojson, cfg)
        for value in dict.fromkeys(cfg.segmentation.classes.values() or [v for _, v in shapes]):
            geoms = [g for g, v in shapes if v == value]
            if geoms:
                mask = rasterize_labels(geoms, target, labels_crs=labels_crs, burn_value=1, source=source.label_geojson)
                out[mask > 0] = value
        return out
    return None
