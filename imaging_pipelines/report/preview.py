"""A small PNG thumbnail of any stage store, for the asset's metadata in the Dagster UI.

Medical OME-Zarr stores: orthogonal slices of the first image through its first label (segmentation,
reference or mask, in that order of preference). Raster tile stores: the RGB quicklook, or the class map
of a segmentation tile, drawn with numpy and PIL (:mod:`imaging_pipelines.report.thumbnails`; a
Matplotlib figure cost more than the imaging of a small partition). Previews read the stores the stages
just wrote; a store they cannot picture gives ``None`` (never an error: the preview is decoration).
"""

from __future__ import annotations

import logging

import numpy as np
from upath import UPath

from imaging_pipelines.core.storage import as_upath, readable_store
from imaging_pipelines.report.thumbnails import class_thumbnail, raster_thumbnail, volume_thumbnail

log = logging.getLogger("imaging_pipelines")
LABEL_PREFERENCE = ("segmentation", "reference", "brain_mask", "foreground")
PREVIEW_MIN_VOXELS = 64  # per axis, of the pyramid level a medical preview reads (thumbnails are 96 px high)


def _medical_preview(path: UPath, max_width: int) -> bytes | None:
    from imaging_pipelines.medical.io.ome_zarr import (
        coarsest_level, open_volume_store, read_labels, read_volume_image, store_attributes,
    )

    names = store_attributes(path).get("images") or []
    if not names:
        return None
    name = names[0]  # only the first image is read: the thumbnail shows one
    group = open_volume_store(path)[name]
    # a pyramid level that still has a thumbnail's pixels: a fraction of the full-resolution read
    level = coarsest_level(group, PREVIEW_MIN_VOXELS)
    volume = read_volume_image(group, level)
    array = np.asarray(volume.array, np.float32)
    if array.ndim == 4:  # (t, z, y, x): the first time point
        array = array[0]
    labels = read_labels(path, name, level)
    label = next((labels[k] for k in LABEL_PREFERENCE if k in labels), next(iter(labels.values()), None))
    overlay = np.asarray(label.array) if label is not None and np.shape(label.array) == array.shape else None
    return volume_thumbnail(array, volume.spacing, overlay, max_width=max_width)


def _raster_preview(path: UPath, max_width: int) -> bytes | None:
    from imaging_pipelines.remote_sensing.zarr_tiles import read_tile_zarr

    raster = read_tile_zarr(path)
    if raster.band_names == ["class"]:
        return class_thumbnail(raster.array[0], max_width)
    return raster_thumbnail(raster.array, raster.band_names, max_width)


def store_preview(store_path: str, max_width: int = 256) -> bytes | None:
    """A PNG thumbnail (<= ``max_width`` px wide, palette-quantised) of a stage store, or None."""
    path = readable_store(as_upath(store_path))
    try:
        raster = '"spatial_ref"' in (path / "zarr.json").read_text()  # CF tile stores name their grid mapping
        return _raster_preview(path, max_width) if raster else _medical_preview(path, max_width)
    except Exception as exc:  # noqa: BLE001 - a preview never fails the asset
        log.warning(f"no preview of {path.name}: {type(exc).__name__}: {exc}")
        return None


def preview_markdown(png: bytes | None, alt: str = "preview") -> str | None:
    """Markdown with the PNG embedded as a data URI (what Dagster's UI renders in metadata)."""
    import base64

    return None if png is None else f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
