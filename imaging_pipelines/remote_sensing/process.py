"""Run a per-tile function over a raster file, tile by tile, optionally on a thread pool.

Tiles are independent, so ``workers > 1`` reads and computes several at once: GDAL reads and
numpy ufuncs release the GIL. Each worker thread has its own open :class:`RasterReader` (GDAL dataset
handles must not be shared between threads). Results come back in ``tile_grid`` (row-major) order,
with at most ``2 * workers`` tiles in flight, so memory stays bounded for any scene size; feed them
to :func:`~imaging_pipelines.remote_sensing.tiling.stitch_to_geotiff` or :func:`~.tiling.stitch`.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

from imaging_pipelines.remote_sensing.io import RasterReader
from imaging_pipelines.core.raster import Raster
from imaging_pipelines.remote_sensing.tiling import Tile, tile_grid


def map_tiles(
    path: str | os.PathLike,
    fn: Callable[[Raster], Raster],
    tile: int,
    overlap: int = 0,
    *,
    bands: Sequence[int | str] | None = None,
    workers: int = 1,
    allow_rotated: bool = False,
) -> Iterator[tuple[Tile, Raster]]:
    """Yield ``(tile, fn(window raster))`` for every tile of ``tile_grid(h, w, tile, overlap)``.

    ``fn`` gets the tile's window (with overlap) as a :class:`Raster` with its exact sub-transform
    and must return a raster of the same height and width.
    """
    with RasterReader(path, allow_rotated=allow_rotated) as first:
        tiles = tile_grid(first.height, first.width, tile, overlap)
        if workers <= 1:
            for t in tiles:
                yield t, fn(first.read(bands, t.window))
            return
    local = threading.local()
    readers: list[RasterReader] = []
    lock = threading.Lock()

    def work(t: Tile) -> tuple[Tile, Raster]:
        reader = getattr(local, "reader", None)
        if reader is None:
            reader = local.reader = RasterReader(path, allow_rotated=allow_rotated)
            with lock:
                readers.append(reader)
        return t, fn(reader.read(bands, t.window))

    pool = ThreadPoolExecutor(workers, thread_name_prefix="map_tiles")
    todo = iter(tiles)
    pending = deque(pool.submit(work, t) for t in islice(todo, 2 * workers))
    try:
        while pending:
            result = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(work, nxt))
            yield result
    finally:  # also when the consumer stops early or a tile fails
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)
        for reader in readers:
            reader.close()
