"""Split a scene into overlapping tiles and stitch processed tiles back into one scene.

Grid convention: the *core* windows partition the scene on a regular grid of ``tile`` x ``tile``
pixels starting at pixel (0, 0); each tile's *window* is its core grown by ``overlap`` pixels on
every side, clipped at the scene border. Edge tiles are therefore **smaller, never padded**: the last
row/column of cores is ``height % tile`` / ``width % tile`` pixels, and border windows have no
overlap on the border side. Tile ``(row, col)`` has partition key ``<scene>__r<row>_c<col>``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from affine import Affine

from imaging_pipelines.core.raster import PixelWindow, Raster, nodata_in_dtype

_KEY = re.compile(r"^(?P<scene>.+)__r(?P<row>\d+)_c(?P<col>\d+)$")
SCENE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def partition_key(scene: str, row: int, col: int) -> str:
    """``<scene>__r<row>_c<col>``; ``scene`` is letters, digits, ``._-`` (no ``__`` inside)."""
    if not SCENE_NAME.match(scene) or "__" in scene:
        raise ValueError(f"scene name {scene!r} must match [A-Za-z0-9][A-Za-z0-9._-]* without '__'")
    return f"{scene}__r{row}_c{col}"


def parse_partition_key(key: str) -> tuple[str, int, int]:
    """Inverse of :func:`partition_key`: ``(scene, row, col)``."""
    match = _KEY.match(key)
    if not match:
        raise ValueError(f"{key!r} is not a tile partition key '<scene>__r<row>_c<col>'")
    return match["scene"], int(match["row"]), int(match["col"])


@dataclass(frozen=True)
class Tile:
    """Tile ``(row, col)`` of a grid: ``window`` (with overlap) and ``core`` (without), in scene pixels."""

    row: int
    col: int
    window: PixelWindow
    core: PixelWindow

    @property
    def core_in_window(self) -> PixelWindow:
        """The core window relative to the tile's own (windowed) array."""
        return PixelWindow(
            self.core.row_off - self.window.row_off, self.core.col_off - self.window.col_off,
            self.core.height, self.core.width,
        )

    def key(self, scene: str) -> str:
        return partition_key(scene, self.row, self.col)


def tile_grid(height: int, width: int, tile: int, overlap: int = 0) -> list[Tile]:
    """Tiles covering a ``height`` x ``width`` scene, row-major (see module docstring)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"scene size must be positive, got {height}x{width}")
    if tile <= 0 or overlap < 0:
        raise ValueError(f"need tile > 0 and overlap >= 0, got tile={tile}, overlap={overlap}")
    tiles = []
    for row, r0 in enumerate(range(0, height, tile)):
        r1 = min(r0 + tile, height)
        w_r0, w_r1 = max(r0 - overlap, 0), min(r1 + overlap, height)
        for col, c0 in enumerate(range(0, width, tile)):
            c1 = min(c0 + tile, width)
            w_c0, w_c1 = max(c0 - overlap, 0), min(c1 + overlap, width)
            window = PixelWindow(w_r0, w_c0, w_r1 - w_r0, w_c1 - w_c0)
            tiles.append(Tile(row, col, window, PixelWindow(r0, c0, r1 - r0, c1 - c0)))
    return tiles


def split(raster: Raster, tile: int, overlap: int = 0) -> list[tuple[Tile, Raster]]:
    """``(tile, sub-raster view)`` pairs of an in-memory raster."""
    return [(t, raster.window(*t.window)) for t in tile_grid(raster.height, raster.width, tile, overlap)]


def _check_piece(tile: Tile, raster: Raster, first: Raster | None) -> None:
    """A processed tile must fill its window and match the first tile's bands and dtype."""
    name = f"tile r{tile.row}_c{tile.col}"
    if raster.shape[1:] != (tile.window.height, tile.window.width):
        raise ValueError(f"{name}: array {raster.shape[1:]} does not match its window {tuple(tile.window)}")
    if first is not None and (raster.count != first.count or raster.dtype != first.dtype):
        raise ValueError(f"{name}: {raster.count} bands of {raster.dtype}, expected {first.count} of {first.dtype}")


def _check_cover(cores: list[PixelWindow], height: int, width: int) -> None:
    """Raise unless the core windows tile the ``height`` x ``width`` scene exactly (no gap, no overlap).

    Works on the grid of distinct core edges (a few cells per tile), not on a per-pixel mask.
    """
    if not cores:
        raise ValueError("no tiles to stitch")
    rows = np.unique([0, height] + [c.row_off for c in cores] + [c.row_off + c.height for c in cores])
    cols = np.unique([0, width] + [c.col_off for c in cores] + [c.col_off + c.width for c in cores])
    if rows[0] < 0 or cols[0] < 0 or rows[-1] > height or cols[-1] > width:
        raise ValueError(f"a tile core lies outside the {height}x{width} scene")
    count = np.zeros((len(rows) - 1, len(cols) - 1), dtype=np.int64)
    for c in cores:
        r0, r1 = np.searchsorted(rows, [c.row_off, c.row_off + c.height])
        c0, c1 = np.searchsorted(cols, [c.col_off, c.col_off + c.width])
        count[r0:r1, c0:c1] += 1
    area = np.outer(np.diff(rows), np.diff(cols))
    if (count > 1).any():
        raise ValueError(f"tile cores overlap on {int(area[count > 1].sum())} scene pixels: duplicate tiles?")
    if (count == 0).any():
        raise ValueError(f"{int(area[count == 0].sum())} scene pixels are in no tile's core: tiles are missing")


def _ramp(length: int, before: int, after: int) -> np.ndarray:
    """1-D feather weights: rise over ``2*before`` px from the start, fall over ``2*after`` px to the end."""
    i = np.arange(length, dtype=np.float64) + 0.5
    w = np.ones(length)
    if before:
        w = np.minimum(w, i / (2 * before))
    if after:
        w = np.minimum(w, (length - i) / (2 * after))
    return w


def stitch(pieces: Iterable[tuple[Tile, Raster]], height: int, width: int, blend: str = "core") -> Raster:
    """Assemble processed tiles into one ``height`` x ``width`` scene.

    ``blend="core"``: each output pixel comes from the one tile whose core holds it (exact: an identity
    pipeline gives back the input bit for bit, any dtype). ``blend="feather"``: overlaps are averaged
    with linear weights that fall to 0 at each interior tile edge, ignoring nodata/NaN values band by
    band (a value no tile has valid stays nodata); integer outputs are rounded, so identical overlaps
    give back integers exactly (floats to within 1 ulp). Memory: the scene, plus two float64 copies
    for ``feather``; use :func:`stitch_to_geotiff` for scenes that do not fit.
    CRS, nodata and band names come from the tiles; the transform from the tile whose window starts
    at pixel (0, 0), so it equals the scene's bit for bit.
    """
    if blend not in ("core", "feather"):
        raise ValueError(f"blend must be 'core' or 'feather', got {blend!r}")
    out = acc = wsum = first = origin = None
    cores: list[PixelWindow] = []
    for tile, raster in pieces:
        _check_piece(tile, raster, first)
        if first is None:
            first = raster
            out = np.empty((raster.count, height, width), dtype=raster.dtype)  # cores cover it all (checked)
            if blend == "feather":
                fill = nodata_in_dtype(raster.nodata, raster.dtype)
                if raster.nodata is not None and raster.dtype.kind == "f":
                    fill = raster.dtype.type(raster.nodata)  # NaN too
                out[...] = 0 if fill is None else fill
                acc = np.zeros(out.shape, dtype=np.float64)
                wsum = np.zeros(out.shape, dtype=np.float64)
        if tile.window.row_off == 0 and tile.window.col_off == 0:
            origin = raster
        core_rows, core_cols = tile.core.slices
        local_rows, local_cols = tile.core_in_window.slices
        cores.append(tile.core)
        if blend == "core":
            out[:, core_rows, core_cols] = raster.array[:, local_rows, local_cols]
            continue
        w = tile.window
        wy = _ramp(w.height, tile.core.row_off - w.row_off, w.row_off + w.height - tile.core.row_off - tile.core.height)
        wx = _ramp(w.width, tile.core.col_off - w.col_off, w.col_off + w.width - tile.core.col_off - tile.core.width)
        weight = np.outer(wy, wx) * ~raster.invalid_mask(per_band=True)  # (bands, y, x)
        rows, cols = w.slices
        acc[:, rows, cols] += np.where(weight > 0, raster.array, 0) * weight
        wsum[:, rows, cols] += weight
    _check_cover(cores, height, width)
    if origin is None:
        raise ValueError("no tile starts at pixel (0, 0): cannot place the scene")
    if blend == "feather":
        have = wsum > 0
        mean = np.divide(acc, wsum, out=np.zeros_like(acc), where=have)
        if out.dtype.kind in "iub":
            info = np.iinfo(out.dtype) if out.dtype.kind != "b" else None
            mean = np.rint(mean)
            if info is not None:
                mean = np.clip(mean, info.min, info.max)
        out[have] = mean[have].astype(out.dtype)
    return Raster(out, origin.crs, origin.transform, origin.nodata, list(origin.band_names))


def stitch_to_geotiff(
    pieces: Iterable[tuple[Tile, Raster]],
    path: str | os.PathLike,
    height: int,
    width: int,
    *,
    transform: Affine | None = None,
    **creation_options,
) -> Path:
    """Streaming :func:`stitch` (``blend="core"``) straight into a GeoTIFF: each tile's core is written
    as it arrives, so the scene never sits in memory. Geo-referencing comes from the first piece,
    which must be the tile at pixel (0, 0) (``tile_grid`` order) unless ``transform`` is given.
    ``creation_options`` are GDAL GTiff options (default: tiled 256 x 256). Convert with
    :func:`~imaging_pipelines.remote_sensing.cog.geotiff_to_cog` for a COG.
    """
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    dst = first = None
    cores: list[PixelWindow] = []
    options = dict(tiled=True, blockxsize=256, blockysize=256)
    options.update(creation_options)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            for tile, raster in pieces:
                _check_piece(tile, raster, first)
                if first is None:
                    # keep only what later checks need: holding the first tile's pixels (or the previous
                    # tile's, below) while the next tile is computed makes the allocator fault in fresh pages
                    first = SimpleNamespace(count=raster.count, dtype=raster.dtype)
                    if transform is None:
                        if (tile.window.row_off, tile.window.col_off) != (0, 0):
                            raise ValueError("the first tile must start at pixel (0, 0) when no transform is given")
                        transform = raster.transform
                    dst = rasterio.open(
                        path, "w", driver="GTiff", dtype=raster.dtype.name, count=raster.count, height=height,
                        width=width, crs=raster.crs_obj, transform=transform, nodata=raster.nodata, **options,
                    )
                    dst.descriptions = tuple(raster.band_names)
                local_rows, local_cols = tile.core_in_window.slices
                core = raster.array[:, local_rows, local_cols]
                target = tile.core.to_rasterio()
                for band in range(raster.count):  # 2-D writes: less rasterio overhead than one 3-D write
                    dst.write(np.ascontiguousarray(core[band]), band + 1, window=target)
                cores.append(tile.core)
                del raster, core  # release this tile before the next one is computed
        _check_cover(cores, height, width)
    except BaseException:
        if dst is not None:
            dst.close()
            Path(path).unlink(missing_ok=True)
        raise
    dst.close()
    return Path(path)
