"""Tiling + NDVI throughput of imaging_pipelines.raster vs a plain windowed rasterio loop.

Both sides compute NDVI = (NIR - Red) / (NIR + Red) as float32 with NaN where either band is
nodata (0) or the sum is 0, over the same scene, and write a tiled float32 GeoTIFF:

* ``imaging_pipelines``: ``map_tiles`` (``tile_grid`` + ``RasterReader.read(window=...)`` per tile)
  -> ``ndvi`` -> ``stitch_to_geotiff`` (core blend, streaming: each tile's core is written as it
  comes), single-threaded for the headline ratio.
* ``rasterio loop``: for each block window, ``src.read([red, nir], window)`` -> numpy -> ``dst.write``.

The scene is a synthetic 4-band (blue, green, red, nir) uint16 GeoTIFF (default 4096x4096, tiled
512, uncompressed unless ``--compress``), written to a temporary folder. Prints Mpixel/s (scene
pixels / wall time, median and best of ``--repeats`` interleaved runs) and the ratio project / rasterio
(goal >= 0.9x).
Extra rows (not in the headline ratio): in-memory ``stitch`` + ``write_geotiff``, 32 px overlap,
``map_tiles(workers=N)`` (tiles on a thread pool), and each tile stored to and read back from Zarr
(what the materialised per-tile pipeline adds).

    .venv/bin/python bench/bench_tiling.py [--size 4096] [--tile 512] [--repeats 7] [--workers 2]
        [--compress deflate] [--tmpdir /dev/shm]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from imaging_pipelines.raster import (
    Raster, map_tiles, ndvi, read_raster, read_tile_zarr, stitch, stitch_to_geotiff, tile_grid, write_geotiff,
    write_tile_zarr,
)

BANDS = ["blue", "green", "red", "nir"]


def make_scene(path: Path, size: int, block: int, compress: str | None) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = (1000 + 500 * np.sin(xx / 97.0) * np.cos(yy / 131.0)).astype(np.float32)
    array = np.empty((4, size, size), np.uint16)
    for i in range(4):
        array[i] = base * (0.6 + 0.3 * i) + rng.integers(0, 64, (size, size), dtype=np.uint16)
    array[:, : size // 16, : size // 16] = 0  # a nodata corner
    scene = Raster(array, "EPSG:32618", Affine(30.0, 0.0, 300000.0, 0.0, -30.0, 4500000.0), 0, BANDS)
    opts = dict(tiled=True, blockxsize=block, blockysize=block)
    if compress:
        opts["compress"] = compress
    write_geotiff(scene, path, **opts)


def out_profile(src, block: int, compress: str | None) -> dict:
    prof = dict(driver="GTiff", dtype="float32", count=1, height=src.height, width=src.width, crs=src.crs,
                transform=src.transform, nodata=float("nan"), tiled=True, blockxsize=block, blockysize=block)
    if compress:
        prof["compress"] = compress
    return prof


def run_rasterio(src_path: Path, dst_path: Path, block: int, compress: str | None) -> None:
    with rasterio.open(src_path) as src:
        red_i, nir_i = BANDS.index("red") + 1, BANDS.index("nir") + 1
        with rasterio.open(dst_path, "w", **out_profile(src, block, compress)) as dst:
            for _, win in src.block_windows(1):
                red, nir = src.read([red_i, nir_i], window=win)
                # the same numpy kernel as the project's (float32 ufuncs casting uint16 on the fly)
                out = np.subtract(nir, red, dtype=np.float32)
                total = np.add(nir, red, dtype=np.float32)
                with np.errstate(divide="ignore", invalid="ignore"):
                    np.divide(out, total, out=out)
                out[(red == 0) | (nir == 0) | (total == 0)] = np.nan
                dst.write(out, 1, window=win)


def run_project(src_path: Path, dst_path: Path, tile: int, overlap: int, compress: str | None,
                zarr_dir: Path | None = None, in_memory: bool = False, workers: int = 1) -> None:
    opts = dict(tiled=True, blockxsize=tile, blockysize=tile)
    if compress:
        opts["compress"] = compress
    with rasterio.open(src_path) as src:
        height, width = src.height, src.width

    def compute(window: Raster) -> Raster:
        return ndvi(window)

    pieces = map_tiles(src_path, compute, tile, overlap, bands=["red", "nir"], workers=workers)
    if zarr_dir is not None:
        pieces = ((t, read_tile_zarr(write_tile_zarr(p, zarr_dir / f"{t.key('scene')}.zarr", tile=t, scene="scene")))
                  for t, p in pieces)
    if in_memory:
        write_geotiff(stitch(pieces, height, width), dst_path, **opts)
    else:
        stitch_to_geotiff(pieces, dst_path, height, width, **opts)


def timed(fns: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """(median, best) wall time of each callable; runs are interleaved so background load hits all alike."""
    for fn in fns.values():
        fn()  # warm-up (page cache, imports)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--workers", type=int, default=2, help="threads for the map_tiles(workers=N) row")
    ap.add_argument("--tmpdir", default=None, help="folder for the scene and outputs (default: system temp)")
    ap.add_argument("--compress", default=None, help="GeoTIFF compression for input and outputs (e.g. deflate)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        tmp = Path(tmp)
        src = tmp / "scene.tif"
        make_scene(src, args.size, args.tile, args.compress)
        mpx = args.size * args.size / 1e6
        c = args.compress
        t = timed({
            "rio": lambda: run_rasterio(src, tmp / "rio.tif", args.tile, c),
            "prj": lambda: run_project(src, tmp / "prj.tif", args.tile, 0, c),
            "mem": lambda: run_project(src, tmp / "mem.tif", args.tile, 0, c, in_memory=True),
            "ovl": lambda: run_project(src, tmp / "ovl.tif", args.tile, 32, c),
            "thr": lambda: run_project(src, tmp / "thr.tif", args.tile, 0, c, workers=args.workers),
        }, args.repeats)
        a = read_raster(tmp / "rio.tif", allow_empty=True).array
        same = all(np.array_equal(a, read_raster(tmp / f"{k}.tif", allow_empty=True).array, equal_nan=True)
                   for k in ("prj", "mem", "ovl", "thr"))
        (tmp / "zarr").mkdir()
        t0 = time.perf_counter()
        run_project(src, tmp / "zarr.tif", args.tile, 0, c, tmp / "zarr")
        t["zarr"] = (time.perf_counter() - t0,) * 2
    print(f"scene {args.size}x{args.size} x4 uint16 ({mpx:.1f} Mpixel), tile {args.tile}, "
          f"compress={args.compress}, {args.repeats} interleaved runs each")
    print(f"{'method':<50}{'median s':>9}{'Mpx/s':>8}{'best s':>9}{'Mpx/s':>8}")
    rows = [("rasterio windowed loop", t["rio"]), ("imaging_pipelines tiles+ndvi+stitch_to_geotiff", t["prj"]),
            ("  in-memory stitch + write_geotiff (info)", t["mem"]), ("  overlap 32 (info)", t["ovl"]),
            (f"  map_tiles(workers={args.workers}) (info)", t["thr"]),
            ("  tiles via Zarr store, 1 run (info)", t["zarr"])]
    for name, (med, best) in rows:
        print(f"{name:<50}{med:>9.3f}{mpx / med:>8.1f}{best:>9.3f}{mpx / best:>8.1f}")
    ratio, ratio_best = t["rio"][0] / t["prj"][0], t["rio"][1] / t["prj"][1]
    print(f"throughput ratio project / rasterio: {ratio:.2f}x median, {ratio_best:.2f}x best (goal >= 0.9x), "
          f"single-threaded; outputs identical: {same}")
    print(f"with map_tiles(workers={args.workers}): {t['rio'][0] / t['thr'][0]:.2f}x median, "
          f"{t['rio'][1] / t['thr'][1]:.2f}x best")


if __name__ == "__main__":
    main()
