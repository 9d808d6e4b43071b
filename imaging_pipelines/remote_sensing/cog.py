"""Write a :class:`Raster` as a Cloud-Optimized GeoTIFF (rio-cogeo) and validate it.

Output: internally tiled (``blocksize`` px blocks), DEFLATE-compressed (lossless, so pixels
round-trip bit for bit), pixel-interleaved, with internal overviews (halving until a level fits one
block; ``overview_resampling`` default ``nearest``) and the raster's CRS, transform, nodata and band
names (as band descriptions). The file appears atomically: written to a hidden sibling, then renamed.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rio_cogeo.cogeo import cog_translate, cog_validate
from rio_cogeo.profiles import cog_profiles

from imaging_pipelines.core.storage import atomic_file
from imaging_pipelines.remote_sensing.io import write_geotiff
from imaging_pipelines.core.raster import Raster


def geotiff_to_cog(
    src: str | os.PathLike,
    path: str | os.PathLike,
    *,
    blocksize: int = 256,
    compress: str = "deflate",
    overview_resampling: str = "nearest",
) -> Path:
    """Convert any GDAL-readable raster file ``src`` into a COG at ``path`` (see module docstring)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(src) as ds:
            return _translate(ds, path, blocksize, compress, overview_resampling)


def write_cog(
    raster: Raster,
    path: str | os.PathLike,
    *,
    blocksize: int = 256,
    compress: str = "deflate",
    overview_resampling: str = "nearest",
) -> Path:
    """Write ``raster`` as a COG at ``path`` (see module docstring); returns the path."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile() as mem:
            write_geotiff(raster, mem.name)
            with mem.open() as ds:
                return _translate(ds, path, blocksize, compress, overview_resampling)


def _translate(ds, path, blocksize: int, compress: str, overview_resampling: str) -> Path:
    final = Path(path)
    profile = cog_profiles.get(compress)
    profile.update(blockxsize=blocksize, blockysize=blocksize)
    if compress == "deflate" and ds.dtypes[0].startswith(("uint", "int")):
        profile.update(predictor=2)  # horizontal differencing: smaller integer files, still lossless
    with atomic_file(final) as tmp:
        cog_translate(
            ds, str(tmp), profile, nodata=ds.nodata, overview_resampling=overview_resampling,
            in_memory=True, quiet=True, forward_band_tags=True,
        )
    return final


def validate_cog(path: str | os.PathLike, strict: bool = False) -> tuple[bool, list[str], list[str]]:
    """``(is_valid, errors, warnings)`` from :func:`rio_cogeo.cogeo.cog_validate`."""
    return cog_validate(str(path), strict=strict, quiet=True)
