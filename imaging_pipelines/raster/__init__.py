"""Remote-sensing imaging core: rasters, tiling, Zarr tile stores, COG output, labels, indices.

Conventions: arrays are ``(band, y, x)``; transforms map pixel-corner ``(col, row)`` to CRS
coordinates (GDAL/rasterio); CRS units are the CRS's own (metres for UTM). See :mod:`.raster`.
"""

from imaging_pipelines.raster.cog import geotiff_to_cog, validate_cog, write_cog
from imaging_pipelines.raster.indices import cloud_mask, ndbi, ndvi, ndwi, normalized_difference, spectral_indices
from imaging_pipelines.raster.io import RasterReader, read_raster, write_geotiff
from imaging_pipelines.raster.labels import iou, load_geojson, rasterize_labels
from imaging_pipelines.raster.process import map_tiles
from imaging_pipelines.raster.raster import PixelWindow, Raster, window_transform
from imaging_pipelines.raster.tiling import (
    Tile, parse_partition_key, partition_key, split, stitch, stitch_to_geotiff, tile_grid,
)
from imaging_pipelines.raster.zarr_tiles import read_tile_info, read_tile_zarr, write_tile_zarr

__all__ = [
    "PixelWindow", "Raster", "RasterReader", "Tile", "cloud_mask", "geotiff_to_cog", "iou", "load_geojson",
    "map_tiles", "ndbi", "ndvi", "ndwi", "normalized_difference", "parse_partition_key", "partition_key",
    "rasterize_labels", "read_raster", "read_tile_info", "read_tile_zarr", "spectral_indices", "split",
    "stitch", "stitch_to_geotiff", "tile_grid", "validate_cog", "window_transform", "write_cog",
    "write_geotiff", "write_tile_zarr",
]
