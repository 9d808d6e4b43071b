"""A small PNG thumbnail of any stage store, for the asset's metadata in the Dagster UI.

Medical OME-Zarr stores: orthogonal slices of the first image through its first label (segmentation,
reference or mask, in that order of preference). Raster tile stores: the RGB quicklook, or the class map
of a segmentation tile. Previews read the stores the stages just wrote; a store they cannot picture gives
``None`` (never an error: the preview is decoration).
"""

from __future__ import annotations

import logging

import numpy as np
from upath import UPath

from imaging_pipelines.io.storage import as_upath, readable_store

log = logging.getLogger("imaging_pipelines")
LABEL_PREFERENCE = ("segmentation", "reference", "brain_mask", "foreground")


def _medical_preview(path: UPath) -> bytes | None:
    from imaging_pipelines.io.ome_zarr import read_labels, read_volume_image, store_attributes, open_volume_store
    from imaging_pipelines.report.figures import slice_montage

    names = store_attributes(path).get("images") or []
    if not names:
        return None
    name = names[0]  # only the first image is read: the thumbnail shows one
    volume = read_volume_image(open_volume_store(path)[name])
    array = np.asarray(volume.array, np.float32)
    if array.ndim == 4:  # (t, z, y, x): the first time point
        array = array[0]
    labels = read_labels(path, name)
    label = next((labels[k] for k in LABEL_PREFERENCE if k in labels), next(iter(labels.values()), None))
    overlay = np.asarray(label.array) if label is not None and np.shape(label.array) == array.shape else None
    return slice_montage(array, volume.spacing, overlay, title=name)


def _raster_preview(path: UPath) -> bytes | None:
    from imaging_pipelines.raster.zarr_tiles import read_tile_zarr
    from imaging_pipelines.report.figures import raster_map

    raster = read_tile_zarr(path)
    if raster.band_names == ["class"]:
        classes = raster.array[0]
        shade = np.where(classes > 0, 0.3, 0.7).astype(np.float32)  # a grey background under the class map
        return raster_map(np.stack([shade] * 3), ["red", "green", "blue"], classes=classes)
    return raster_map(raster.array.astype(np.float32), raster.band_names)


def store_preview(store_path: str, max_width: int = 256) -> bytes | None:
    """A PNG thumbnail (<= ``max_width`` px wide) of a stage store, or None."""
    from imaging_pipelines.report.figures import preview_png

    path = readable_store(as_upath(store_path))
    try:
        raster = '"spatial_ref"' in (path / "zarr.json").read_text()  # CF tile stores name their grid mapping
        png = _raster_preview(path) if raster else _medical_preview(path)
    except Exception as exc:  # noqa: BLE001 - a preview never fails the asset
        log.warning(f"no preview of {path.name}: {type(exc).__name__}: {exc}")
        return None
    return preview_png(png, max_width) if png else None


def preview_markdown(png: bytes | None, alt: str = "preview") -> str | None:
    """Markdown with the PNG embedded as a data URI (what Dagster's UI renders in metadata)."""
    import base64

    return None if png is None else f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
