"""Read GeoTIFFs (any GDAL raster) into :class:`Raster`, with clear errors for bad files.

Every failure is an :class:`~imaging_pipelines.core.errors.ImagingInputError` naming the file:
missing or non-raster files, corrupt pixel data (e.g. truncated JPEG tiles), unknown band names,
rotated/sheared grids (unless ``allow_rotated``) and scenes where every pixel is nodata (unless
``allow_empty``). Float NaN pixels are treated as nodata (see :meth:`Raster.invalid_mask`); a file
whose nodata is NaN reports ``nodata=nan``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from imaging_pipelines.core.storage import atomic_file
from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.core.limits import claimed_size_problem
from imaging_pipelines.core.raster import PixelWindow, Raster, is_rotated, window_transform


MAX_BANDS = 2000  # more bands than any real sensor (hyperspectral cubes have a few hundred); GDAL is slow beyond


def _is_local(path: str) -> bool:
    return "://" not in path and not path.startswith("/vsi")


def _band_names(ds) -> list[str]:
    descriptions = list(ds.descriptions or ())
    return [d if d else f"b{i + 1}" for i, d in enumerate(descriptions)] or [f"b{i + 1}" for i in range(ds.count)]


def gdal_message(exc: BaseException) -> str:
    """GDAL's own reason (rasterio chains it as the cause of a generic 'Read failed' error)."""
    cause = exc.__cause__ or exc.__context__
    return str(cause) if cause is not None and str(cause) else str(exc)


def _numpy_dtype_ok(name: str) -> bool:
    """Whether numpy has the band type GDAL reports (not e.g. GDAL's complex_int16)."""
    try:
        np.dtype(name)
    except TypeError:
        return False
    return True


def _nbits(ds) -> int:
    """Bits per stored sample (GDAL's NBITS, else the dtype's size)."""
    try:
        return int(ds.tags(1, ns="IMAGE_STRUCTURE").get("NBITS", 0)) or np.dtype(ds.dtypes[0]).itemsize * 8
    except (TypeError, ValueError, RasterioError):
        return np.dtype(ds.dtypes[0]).itemsize * 8


def _uncompressed_size_problem(path: str, ds) -> str | None:
    """For a local uncompressed GeoTIFF: why its header cannot be right (more pixel bytes than the file holds)."""
    if not _is_local(path) or ds.driver != "GTiff":
        return None
    try:
        if ds.compression is not None:
            return None
    except (ValueError, RasterioError):  # a compression code rasterio does not know
        return None
    nbits = _nbits(ds)
    stored = math.floor(ds.width * ds.height * ds.count * nbits / 8)  # bytes, at least
    size = os.path.getsize(path)
    if stored <= size:
        return None
    return (f"header claims {ds.count} x {ds.height} x {ds.width} pixels (bands x rows x columns) of {nbits} "
            f"bit(s) = {stored} bytes uncompressed, but the file holds {size} bytes: truncated file or corrupt header")


def _block_problem(ds) -> str | None:
    """Why GDAL must not allocate one block (tile or strip) of this file: one block claims far more pixels than
    the whole image, or more bytes than allowed (GDAL allocates a whole block to read any part of it)."""
    try:
        shapes = ds.block_shapes
        interleave = (ds.interleaving.value if ds.interleaving is not None else "BAND").upper()
    except (ValueError, RasterioError):
        return None
    itemsize = max(np.dtype(d).itemsize for d in ds.dtypes)
    per_block = ds.count if interleave == "PIXEL" else 1
    image = ds.width * ds.height * ds.count * itemsize
    for bh, bw in set(shapes):
        nbytes = bh * bw * itemsize * per_block
        if nbytes > max(4 * image, 64 * 2**20):
            return (f"header claims blocks (tiles/strips) of {bh} x {bw} pixels ({nbytes} bytes) for a "
                    f"{ds.height} x {ds.width} image: corrupt tile or strip tags")
        problem = claimed_size_problem((bh, bw), itemsize * per_block, what="pixels per block")
        if problem:
            return problem
    return None


def _resolve_bands(path: str, names: list[str], bands: Sequence[int | str] | None) -> list[int]:
    """1-based band indexes for ``bands`` given as 1-based ints or (case-insensitive) names."""
    if bands is None:
        return list(range(1, len(names) + 1))
    lowered = [n.lower() for n in names]
    indexes = []
    for band in bands:
        if isinstance(band, str):
            if band.lower() not in lowered:
                raise ImagingInputError(path, f"no band named {band!r}; bands are {names}")
            indexes.append(lowered.index(band.lower()) + 1)
        elif 1 <= int(band) <= len(names):
            indexes.append(int(band))
        else:
            raise ImagingInputError(path, f"band {band} out of range 1..{len(names)}")
    return indexes


class RasterReader:
    """An open raster file for repeated (windowed) reads; use as a context manager.

    Opening checks what the whole file must satisfy (readable, has bands, north-up unless
    ``allow_rotated``); :meth:`read` returns :class:`Raster` objects. ``height``/``width``/``count``,
    ``crs``, ``transform``, ``nodata`` and ``band_names`` describe the whole file.
    """

    def __init__(self, path: str | os.PathLike, *, allow_rotated: bool = False):
        self.path = os.fspath(path)
        if _is_local(self.path) and not Path(self.path).is_file():
            raise ImagingInputError(self.path, "file not found" if not Path(self.path).exists() else "not a file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._ds = rasterio.open(self.path)
        except RasterioError as exc:
            raise ImagingInputError(self.path, f"not a readable raster: {gdal_message(exc)}") from exc
        ds = self._ds
        self.transform, self.crs, self.nodata = ds.transform, ds.crs, ds.nodata
        self.height, self.width, self.count = ds.height, ds.width, ds.count
        if is_rotated(self.transform) and not allow_rotated:
            ds.close()
            raise ImagingInputError(
                self.path,
                f"rotated/sheared geotransform (b={self.transform.b:g}, d={self.transform.d:g}) is not supported; "
                "warp it to a north-up grid first (e.g. gdalwarp) or pass allow_rotated=True",
            )
        if ds.count == 0:
            ds.close()
            raise ImagingInputError(self.path, "the file has no raster bands")
        if ds.count > MAX_BANDS:
            ds.close()
            raise ImagingInputError(self.path, f"header claims {ds.count} bands, more than the {MAX_BANDS} supported "
                                               "(corrupt SamplesPerPixel?)")
        unsupported = sorted({d for d in ds.dtypes if not _numpy_dtype_ok(d)})
        if unsupported:
            ds.close()
            raise ImagingInputError(self.path, f"unsupported pixel type(s) {unsupported}")
        self.band_names = _band_names(ds)
        problem = _uncompressed_size_problem(self.path, ds) or _block_problem(ds)
        if problem:
            ds.close()
            raise ImagingInputError(self.path, problem)

    def __enter__(self) -> RasterReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._ds.close()

    def read(
        self, bands: Sequence[int | str] | None = None, window: PixelWindow | tuple[int, int, int, int] | None = None
    ) -> Raster:
        """Pixels of ``bands`` (1-based numbers or names; default all) in ``window`` (default: whole file)."""
        indexes = _resolve_bands(self.path, self.band_names, bands)
        transform, rio_window = self.transform, None
        if window is not None:
            win = PixelWindow(*window)
            if win.row_off < 0 or win.col_off < 0 or win.height <= 0 or win.width <= 0 or (
                win.row_off + win.height > self.height or win.col_off + win.width > self.width
            ):
                raise ImagingInputError(self.path, f"window {tuple(win)} outside the {self.height}x{self.width} raster")
            rio_window = win.to_rasterio()
            transform = window_transform(transform, win.row_off, win.col_off)
        height, width = (win.height, win.width) if window is not None else (self.height, self.width)
        itemsize = max(np.dtype(self._ds.dtypes[i - 1]).itemsize for i in indexes)
        problem = claimed_size_problem((len(indexes), height, width), itemsize,
                                       what="pixels (bands x rows x columns)")
        if problem:
            raise ImagingInputError(self.path, problem)
        try:
            array = self._ds.read(indexes, window=rio_window)
        except RasterioError as exc:
            raise ImagingInputError(self.path, f"corrupt or unreadable pixel data: {gdal_message(exc)}") from exc
        return Raster(array, self.crs, transform, self.nodata, [self.band_names[i - 1] for i in indexes])


def read_raster(
    path: str | os.PathLike,
    bands: Sequence[int | str] | None = None,
    *,
    window: PixelWindow | tuple[int, int, int, int] | None = None,
    allow_rotated: bool = False,
    allow_empty: bool = False,
) -> Raster:
    """Read ``path`` into a :class:`Raster` (bands as stored, dtype as stored).

    ``bands``: 1-based band numbers or band descriptions (default: all). ``window``:
    ``(row_off, col_off, height, width)`` in pixels, which must lie inside the file;
    its transform is :func:`window_transform` of the file's. Files without a CRS give ``crs=None``;
    files without any georeferencing get the identity transform (pixel units). The all-nodata check
    only applies to whole-file reads. For many windows of one file use :class:`RasterReader`.
    """
    with RasterReader(path, allow_rotated=allow_rotated) as reader:
        raster = reader.read(bands, window)
    if window is None and not allow_empty and not raster.valid_mask().any():
        raise ImagingInputError(reader.path, f"every pixel is nodata (nodata={raster.nodata}); nothing to process")
    return raster


def write_geotiff(raster: Raster, path: str | os.PathLike, **creation_options) -> Path:
    """Write a plain (optionally tiled/compressed) GeoTIFF; band descriptions are the band names."""
    profile = dict(
        driver="GTiff", dtype=raster.dtype.name, count=raster.count, height=raster.height, width=raster.width,
        crs=raster.crs_obj, transform=raster.transform, nodata=raster.nodata,
    )
    profile.update(creation_options)
    if isinstance(path, str) and path.startswith("/vsimem/"):  # GDAL's in-memory files: nothing to publish
        _write_raster(raster, path, profile)
        return Path(path)
    with atomic_file(path) as tmp:
        _write_raster(raster, tmp, profile)
    return Path(path)


def _write_raster(raster: Raster, path: str | os.PathLike, profile: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.ascontiguousarray(raster.array))
            dst.descriptions = tuple(raster.band_names)
