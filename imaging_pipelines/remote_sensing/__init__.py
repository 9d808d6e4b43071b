"""Remote-sensing imaging core: rasters, tiling, Zarr tile stores, COG output, labels, indices.

Conventions: arrays are ``(band, y, x)``; transforms map pixel-corner ``(col, row)`` to CRS
coordinates (GDAL/rasterio); CRS units are the CRS's own (metres for UTM). See :mod:`imaging_pipelines.core.raster`.

Names are imported lazily (``from imaging_pipelines.remote_sensing import Raster`` loads ``.raster`` only), so
the catalog can import :mod:`.config` without rasterio, xarray or zarr.
"""

from importlib import import_module

_EXPORTS = {
    "cog": ["geotiff_to_cog", "validate_cog", "write_cog"],
    "indices": ["cloud_mask", "ndbi", "ndvi", "ndwi", "normalized_difference", "spectral_indices"],
    "io": ["RasterReader", "read_raster", "write_geotiff"],
    "labels": ["iou", "load_geojson", "rasterize_labels"],
    "process": ["map_tiles"],
    "imaging_pipelines.core.raster": ["PixelWindow", "Raster", "window_transform"],
    "tiling": ["Tile", "parse_partition_key", "partition_key", "split", "stitch", "stitch_to_geotiff", "tile_grid"],
    "zarr_tiles": ["read_tile_info", "read_tile_layers", "read_tile_stack", "read_tile_zarr", "write_tile_zarr"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module if "." in module else f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
