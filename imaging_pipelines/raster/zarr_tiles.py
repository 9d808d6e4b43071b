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
Writes go through :func:`imaging_pipelines.io.storage.atomic_store` (staging sibling, then rename).
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

from imaging_pipelines.errors import ImagingInputError
from imaging_pipelines.io.storage import atomic_store, recover_interrupted, zarr_store
from imaging_pipelines.raster.raster import PixelWindow, Raster
from imaging_pipelines.raster.tiling import Tile

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


def raster_to_dataset(raster: Raster, attrs: dict | None = None) -> xr.Dataset:
    """The in-memory xarray form of the store (see module docstring)."""
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
    da = xr.DataArray(raster.array, dims=("band", "y", "x"), coords=coords, name=VAR, attrs=var_attrs)
    if raster.crs is not None:
        da = da.rio.write_crs(raster.crs_obj, grid_mapping_name=GRID_MAPPING)
    da = da.rio.write_transform(t, grid_mapping_name=GRID_MAPPING)
    ds = da.to_dataset()
    ds.attrs["coordinates"] = GRID_MAPPING  # so a plain open_zarr keeps spatial_ref as a coordinate
    return ds


def write_tile_zarr(
    raster: Raster, path: str | os.PathLike, *, tile: Tile | None = None, scene: str | None = None
) -> UPath:
    """Write ``raster`` as a Zarr v3 group at ``path`` atomically (staging sibling, then rename).

    One chunk per band; Blosc LZ4 compression. ``tile``/``scene`` are recorded in the ``tile`` attribute.
    """
    attrs = {}
    if tile is not None:
        attrs["tile"] = {"scene": scene, "row": tile.row, "col": tile.col,
                         "window": list(tile.window), "core": list(tile.core)}
    ds = raster_to_dataset(raster, attrs)
    ds[VAR].encoding.update(
        chunks=(1, raster.height, raster.width), _FillValue=None,
        compressors=(BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),),
    )
    final = UPath(os.fspath(path))
    with atomic_store(final) as staging:
        ds.to_zarr(zarr_store(staging), mode="w", zarr_format=3, consolidated=False)
    return final


def _open(path: str | os.PathLike) -> xr.Dataset:
    final = UPath(os.fspath(path))
    recover_interrupted(final)
    try:
        return xr.open_zarr(zarr_store(final, read_only=True), consolidated=False, mask_and_scale=False)
    except Exception as exc:  # zarr/xarray raise many types for missing or broken stores
        raise ImagingInputError(path, f"not a raster tile store: {exc}") from exc


def read_tile_zarr(path: str | os.PathLike) -> Raster:
    """Read a store written by :func:`write_tile_zarr` back into a :class:`Raster` (exact transform)."""
    with _open(path) as ds:
        if VAR not in ds or GRID_MAPPING not in ds.variables:
            raise ImagingInputError(path, f"missing the {VAR!r} variable or its {GRID_MAPPING!r} grid mapping")
        gm = ds[GRID_MAPPING].attrs
        transform = Affine.from_gdal(*(float(v) for v in gm["GeoTransform"].split()))
        crs = CRS.from_wkt(gm["crs_wkt"]) if gm.get("crs_wkt") else None
        da = ds[VAR]
        array = da.to_numpy()
        nodata = da.attrs.get("nodata")
        return Raster(array, crs, transform, nodata, list(da.attrs.get("band_names", [])))


def read_tile_info(path: str | os.PathLike) -> tuple[str | None, Tile] | None:
    """``(scene, tile)`` recorded by :func:`write_tile_zarr`, or ``None`` when none was."""
    with _open(path) as ds:
        info = ds[VAR].attrs.get("tile")
    if not info:
        return None
    return info.get("scene"), Tile(info["row"], info["col"], PixelWindow(*info["window"]), PixelWindow(*info["core"]))
