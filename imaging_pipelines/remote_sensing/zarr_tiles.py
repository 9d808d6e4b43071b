"""Store one raster tile as a Zarr group readable by xarray + rioxarray (CF ``grid_mapping``).

Layout: data variable ``raster`` with dims ``(band, y, x)``; coordinates ``band`` (1-based band
numbers), ``x``/``y`` (pixel-centre CRS coordinates; omitted for rotated grids) and the CF grid
mapping variable ``spatial_ref`` (``crs_wkt`` and GDAL ``GeoTransform``, the exact pixel-corner
transform). Attributes of ``raster``: ``band_names`` and ``nodata`` (when set); an optional ``tile``
attribute records the scene name and the tile's window and core (see :mod:`.tiling`).

``xarray.open_zarr(path).rio.crs`` / ``.rio.transform()`` give back the tile's CRS and transform bit
for bit: rioxarray rebuilds the origin as ``x[0] - a/2``, so ``x[0]`` (and ``y[0]``) is nudged by at
most a few ulps so that this subtraction lands exactly on the stored origin; in the rare case where no
nudge works, ``x``/``y`` are left out and rioxarray falls back to ``GeoTransform`` (also exact).
Writes go through :func:`imaging_pipelines.core.storage.atomic_store` (staging sibling, then rename).
"""

from __future__ import annotations

import math
import os

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from upath import UPath
from zarr.codecs import BloscCodec

from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.core.storage import as_upath, atomic_store, readable_store, zarr_store
from imaging_pipelines.core.raster import PixelWindow, Raster
from imaging_pipelines.remote_sensing.tiling import Tile

VAR = "raster"
GRID_MAPPING = "spatial_ref"


def _centres(origin: float, step: float, n: int) -> np.ndarray | None:
    """Pixel-centre coordinates ``origin + step*(i+0.5)`` with ``c[0] - step/2 == origin`` exactly.

    ``None`` when no value within 16 ulps of ``c[0]`` achieves that (the caller then omits x/y).
    """
    coords = origin + step * (np.arange(n, dtype=np.float64) + 0.5)
    half = step / 2.0
    up = down = coords[0]
    for _ in range(17):
        for cand in (up, down):
            if cand - half == origin:
                coords[0] = cand
                return coords
        up, down = np.nextafter(up, math.inf), np.nextafter(down, -math.inf)
    return None


def _time_coordinate(times: list[str]) -> np.ndarray:
    """``datetime64[D]`` of ISO dates; the date index (0, 1, ...) when some date is missing or not ISO."""
    try:
        return np.array([np.datetime64(t, "D") for t in times]) if all(times) else np.arange(len(times))
    except ValueError:
        return np.arange(len(times))


def raster_to_dataset(raster: Raster, attrs: dict | None = None, *, stack: list[Raster] | None = None,
                      times: list[str] | None = None, layers: dict[str, np.ndarray] | None = None) -> xr.Dataset:
    """The in-memory xarray form of the store (see module docstring).

    ``stack``/``times``: several rasters on ``raster``'s grid (one per acquisition date) stored as
    ``(time, band, y, x)`` with a ``time`` coordinate of date strings. ``layers``: extra per-pixel
    variables, ``(y, x)`` or ``(time, y, x)`` arrays or ``(dims, array)`` pairs (e.g. ``(("class", "y", "x"),
    probabilities)``), stored beside ``raster`` on the same grid.
    """
    t = raster.transform
    coords: dict = {"band": np.arange(1, raster.count + 1)}
    if not raster.rotated:
        xs, ys = _centres(t.c, t.a, raster.width), _centres(t.f, t.e, raster.height)
        if xs is not None and ys is not None:
            coords.update(x=xs, y=ys)
    var_attrs = {"band_names": list(raster.band_names)}
    if raster.nodata is not None:
        var_attrs["nodata"] = raster.nodata
    if attrs:
        var_attrs.update(attrs)
    if stack is not None:
        times = list(times if times is not None else [""] * len(stack))
        var_attrs["times"] = times  # the acquisition dates as given ("" = undated)
        coords["time"] = _time_coordinate(times)
        data, dims = np.stack([r.array for r in stack]), ("time", "band", "y", "x")
    else:
        data, dims = raster.array, ("band", "y", "x")
    da = xr.DataArray(data, dims=dims, coords=coords, name=VAR, attrs=var_attrs)
    if raster.crs is not None:
        da = da.rio.write_crs(raster.crs_obj, grid_mapping_name=GRID_MAPPING)
    da = da.rio.write_transform(t, grid_mapping_name=GRID_MAPPING)
    ds = da.to_dataset()
    for name, layer in (layers or {}).items():
        if isinstance(layer, tuple):  # (dims, array) with its own leading dimension, e.g. ("class", "y", "x")
            layer_dims, layer = layer
        else:
            layer_dims = ("time", "y", "x") if layer.ndim == 3 else ("y", "x")
        ds[name] = xr.DataArray(layer, dims=layer_dims, attrs={"grid_mapping": GRID_MAPPING})
    ds.attrs["coordinates"] = GRID_MAPPING  # so a plain open_zarr keeps spatial_ref as a coordinate
    return ds


def write_tile_zarr(
    raster: Raster, path: str | os.PathLike, *, tile: Tile | None = None, scene: str | None = None,
    stack: list[Raster] | None = None, times: list[str] | None = None, layers: dict[str, np.ndarray] | None = None,
    attrs: dict | None = None,
) -> UPath:
    """Write ``raster`` (or the date ``stack`` on its grid) as a Zarr v3 group at ``path`` atomically.

    One chunk per band (and date); Blosc LZ4 compression. ``tile``/``scene`` are recorded in the ``tile``
    attribute; ``attrs`` (JSON values) are added to the ``raster`` variable's attributes. See
    :func:`raster_to_dataset` for ``stack``, ``times`` and ``layers``.
    """
    attrs = dict(attrs or {})
    if tile is not None:
        attrs["tile"] = {"scene": scene, "row": tile.row, "col": tile.col,
                         "window": list(tile.window), "core": list(tile.core)}
    ds = raster_to_dataset(raster, attrs, stack=stack, times=times, layers=layers)
    chunks = (1, 1, raster.height, raster.width) if stack is not None else (1, raster.height, raster.width)
    ds[VAR].encoding.update(
        chunks=chunks, _FillValue=None,
        compressors=(BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),),
    )
    for name in layers or {}:
        ds[name].encoding.update(_FillValue=None, compressors=(BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),))
    final = as_upath(path)
    with atomic_store(final) as staging:
        ds.to_zarr(zarr_store(staging), mode="w", zarr_format=3, consolidated=False)
    return final


def _open(path: str | os.PathLike) -> xr.Dataset:
    final = as_upath(path)
    try:
        return xr.open_zarr(zarr_store(readable_store(final), read_only=True), consolidated=False, mask_and_scale=False)
    except Exception as exc:  # zarr/xarray raise many types for missing or broken stores
        raise ImagingInputError(path, f"not a raster tile store: {exc}") from exc


def _grid(ds: xr.Dataset, path) -> tuple[Affine, CRS | None]:
    if VAR not in ds or GRID_MAPPING not in ds.variables:
        raise ImagingInputError(path, f"missing the {VAR!r} variable or its {GRID_MAPPING!r} grid mapping")
    gm = ds[GRID_MAPPING].attrs
    transform = Affine.from_gdal(*(float(v) for v in gm["GeoTransform"].split()))
    return transform, (CRS.from_wkt(gm["crs_wkt"]) if gm.get("crs_wkt") else None)


def read_tile_zarr(path: str | os.PathLike) -> Raster:
    """Read a store written by :func:`write_tile_zarr` back into a :class:`Raster` (exact transform).

    A ``(time, band, y, x)`` store gives its first date; see :func:`read_tile_stack`."""
    with _open(path) as ds:
        transform, crs = _grid(ds, path)
        da = ds[VAR]
        array = da.to_numpy()
        if array.ndim == 4:
            array = array[0]
        return Raster(array, crs, transform, da.attrs.get("nodata"), list(da.attrs.get("band_names", [])))


def read_tile_stack(path: str | os.PathLike) -> tuple[list[Raster], list[str]]:
    """``(rasters, times)`` of a store written with a date ``stack`` (one raster and ``[""]`` otherwise)."""
    with _open(path) as ds:
        transform, crs = _grid(ds, path)
        da = ds[VAR]
        array = da.to_numpy()
        names, nodata = list(da.attrs.get("band_names", [])), da.attrs.get("nodata")
        if array.ndim == 3:
            return [Raster(array, crs, transform, nodata, names)], [""]
        times = list(da.attrs.get("times") or [str(t) for t in ds["time"].to_numpy()])
        return [Raster(a, crs, transform, nodata, names) for a in array], times


def read_tile_layers(path: str | os.PathLike, *names: str) -> dict[str, np.ndarray]:
    """The extra per-pixel ``layers`` of a store (only those present), plus ``"attrs"`` of ``raster``."""
    with _open(path) as ds:
        out = {n: ds[n].to_numpy() for n in names if n in ds}
        out["attrs"] = dict(ds[VAR].attrs)
        return out


def read_tile_info(path: str | os.PathLike) -> tuple[str | None, Tile] | None:
    """``(scene, tile)`` recorded by :func:`write_tile_zarr`, or ``None`` when none was."""
    with _open(path) as ds:
        info = ds[VAR].attrs.get("tile")
    if not info:
        return None
    return info.get("scene"), Tile(info["row"], info["col"], PixelWindow(*info["window"]), PixelWindow(*info["core"]))
