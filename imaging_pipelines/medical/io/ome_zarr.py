"""Volumes as OME-Zarr 0.5 images (Zarr v3) with a multiscale pyramid.

One store holds several images (one per series), each an OME-Zarr multiscales group named by the series.
Axes are ``z, y, x`` (or ``t, z, y, x``) in millimetres (seconds for t). ``scale`` is the voxel spacing and
``translation`` the LPS world position of voxel (0, 0, 0) of each level; the direction cosines (LPS,
column c = index axis c in i, j, k order) and the non-identifying series attributes are stored under the
custom ``imaging_pipelines`` attribute, so a Volume is restored exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr
from ome_zarr.format import FormatV05
from ome_zarr.writer import write_multiscales_metadata
from upath import UPath
from zarr.codecs import BloscCodec

from imaging_pipelines.core.storage import atomic_store, readable_store, zarr_store
from imaging_pipelines.core.volume import Volume

ATTR_KEY = "imaging_pipelines"
MAX_LEVELS = 4
MIN_SIZE_TO_HALVE = 32
SPATIAL_CHUNK = (64, 256, 256)  # voxels (z, y, x): 16 MiB of float32 per chunk


# Every chunk is written, even one that holds only the fill value: zarr's check for such chunks compares each
# chunk with the fill value element by element, which took more time than compressing and writing it (about
# 40 % of a store write); a chunk of zeros compresses to a few hundred bytes.
ARRAY_CONFIG = {"write_empty_chunks": True}


def _compressors() -> tuple[BloscCodec]:
    """Blosc LZ4 with byte shuffle: about 2x faster to write than zstd on volumes, for ~25 % more bytes."""
    return (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),)


def pyramid_factors(shape_zyx: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """Downsampling factors (z, y, x) per level: halve each axis that is still >= 32 voxels."""
    factors = [(1, 1, 1)]
    while len(factors) < MAX_LEVELS:
        prev = factors[-1]
        size = [s // f for s, f in zip(shape_zyx, prev)]
        nxt = tuple(f * 2 if s >= MIN_SIZE_TO_HALVE else f for s, f in zip(size, prev))
        if nxt == prev:
            break
        factors.append(nxt)
    return factors


def downsample(array: np.ndarray, factor: tuple[int, int, int], labels: bool = False) -> np.ndarray:
    """Block mean over the last three axes by ``factor`` (z, y, x); integers are rounded back to their type.

    Label maps (``labels=True``) take one voxel per block instead, so no new label values appear.
    """
    if factor == (1, 1, 1):
        return array
    cropped = array[(...,) + tuple(slice(0, (s // f) * f) for s, f in zip(array.shape[-3:], factor))]
    if labels:
        return np.ascontiguousarray(cropped[(...,) + tuple(slice(f // 2, None, f) for f in factor)])
    exact_in_float32 = array.dtype.itemsize <= 2 or array.dtype == np.float32  # sums of 8..64 values stay exact enough
    mean = _block_sum(cropped, factor, np.float32 if exact_in_float32 else np.float64)
    mean *= mean.dtype.type(1.0 / float(np.prod(factor)))
    if np.issubdtype(array.dtype, np.integer):  # in place: one float temporary of the level's size, not three
        info = np.iinfo(array.dtype)
        np.clip(np.rint(mean, out=mean), info.min, info.max, out=mean)
    return mean.astype(array.dtype, copy=False)


def _block_sum(array: np.ndarray, factor: tuple[int, int, int], dtype: type) -> np.ndarray:
    """Sum of each block of ``factor`` (z, y, x) voxels of ``array`` (shape divisible by ``factor`` on the last
    three axes) in ``dtype``: strided slices added axis by axis (several times faster than a reshaped mean)."""
    out = array
    for axis, f in zip(range(array.ndim - 3, array.ndim), factor):
        if f == 1:
            continue
        index = [slice(None)] * out.ndim
        index[axis] = slice(0, None, f)
        total = out[tuple(index)].astype(dtype, copy=True)
        for k in range(1, f):
            index[axis] = slice(k, None, f)
            total += out[tuple(index)]
        out = total
    return out if out is not array else array.astype(dtype)


def _chunks(volume: Volume, level_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Chunks of one pyramid level: :data:`SPATIAL_CHUNK` cut to the level's own shape (a chunk as large as
    level 0 would be padded to full size, compressed and written for every coarse level)."""
    spatial = tuple(min(c, s) for c, s in zip(SPATIAL_CHUNK, level_shape[-3:]))
    return ((1,) + spatial) if volume.is_timeseries else spatial


def _axes(volume: Volume) -> list[dict[str, str]]:
    axes = [{"name": a, "type": "space", "unit": "millimeter"} for a in ("z", "y", "x")]
    if volume.is_timeseries:
        axes.insert(0, {"name": "t", "type": "time", "unit": "second"})
    return axes


def write_volume_image(parent: zarr.Group, name: str, volume: Volume, is_label: bool = False,
                       pending: list[tuple[zarr.Array, np.ndarray]] | None = None) -> dict[str, Any]:
    """Write ``volume`` as the OME-Zarr image ``parent/name`` (a label image when ``is_label``). With
    ``pending``, the arrays are created but their voxels are appended there as (array, data) for the caller
    to write (:func:`write_arrays`), so the levels of several images are compressed concurrently."""
    group = parent.create_group(name)
    spacing_zyx = np.array(volume.spacing[::-1])
    datasets = []
    data, previous = volume.array, (1, 1, 1)
    for level, factor in enumerate(pyramid_factors(volume.spatial_shape)):
        # each level from the one before (cheaper than from full resolution every time)
        data = downsample(data, tuple(f // p for f, p in zip(factor, previous)), labels=is_label)
        previous = factor
        arr = group.create_array(
            str(level), shape=data.shape, dtype=data.dtype, chunks=_chunks(volume, data.shape), compressors=_compressors(),
            config=ARRAY_CONFIG, dimension_names=[a["name"] for a in _axes(volume)],
        )
        if pending is None:
            arr[...] = data
        else:
            pending.append((arr, data))
        # voxel (0,0,0) of a level is the centre of a block of `factor` level-0 voxels
        shift_ijk = (np.array(factor[::-1]) - 1) / 2.0 * np.array(volume.spacing)
        translation = (np.array(volume.origin) + volume.direction @ shift_ijk)[::-1]
        scale = list(spacing_zyx * np.array(factor))
        trans = list(translation)
        if volume.is_timeseries:
            scale, trans = [float(volume.time_step or 1.0)] + scale, [0.0] + trans
        datasets.append({
            "path": str(level),
            "coordinateTransformations": [
                {"type": "scale", "scale": [float(s) for s in scale]},
                {"type": "translation", "translation": [float(t) for t in trans]},
            ],
        })
    write_multiscales_metadata(group, datasets, fmt=FormatV05(), axes=_axes(volume), name=name)
    group.attrs[ATTR_KEY] = {
        "coordinate_system": "LPS",
        "direction": volume.direction.tolist(),
        "time_step_s": volume.time_step,
        "series": volume.attributes,
        "warnings": list(volume.warnings),
    }
    if is_label:
        group.attrs["ome"] = {**group.attrs["ome"], "image-label": {"version": "0.5", "source": {"image": "../../"}}}
    return {"name": name, "shape": list(volume.array.shape), "levels": len(datasets)}


def write_arrays(pending: list[tuple[zarr.Array, np.ndarray]], threads: int = 4) -> None:
    """Write each (array, data) pair, ``threads`` at a time (compression releases the GIL): the pyramid
    levels and label images of a store are compressed in parallel instead of one after the other."""
    if len(pending) <= 1 or threads <= 1:
        for arr, data in pending:
            arr[...] = data
        return
    from concurrent.futures import ThreadPoolExecutor

    def write(item: tuple[zarr.Array, np.ndarray]) -> None:
        item[0][...] = item[1]

    largest_first = sorted(pending, key=lambda item: -item[1].nbytes)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(write, largest_first))


def write_labels(image_group: zarr.Group, labels: dict[str, Volume],
                 pending: list[tuple[zarr.Array, np.ndarray]] | None = None) -> None:
    """OME-Zarr ``labels/`` of an image: one label image per entry (integer arrays on the image's grid);
    ``pending`` as in :func:`write_volume_image`."""
    group = image_group.create_group("labels")
    for name, label in labels.items():
        write_volume_image(group, name, label, is_label=True, pending=pending)
    group.attrs["ome"] = {"version": "0.5", "labels": list(labels)}


def read_volume_image(group: zarr.Group, level: int = 0) -> Volume:
    """Read one OME-Zarr image group written by :func:`write_volume_image` back into a Volume."""
    ome = group.attrs["ome"]["multiscales"][0]
    ds = ome["datasets"][level]
    transforms = {t["type"]: t for t in ds["coordinateTransformations"]}
    scale = transforms["scale"]["scale"][-3:]
    translation = transforms["translation"]["translation"][-3:]
    custom = group.attrs.get(ATTR_KEY, {})
    return Volume(
        array=group[ds["path"]][...],
        spacing=tuple(scale[::-1]),
        origin=tuple(translation[::-1]),
        direction=np.array(custom.get("direction", np.eye(3).tolist())),
        time_step=custom.get("time_step_s"),
        warnings=tuple(custom.get("warnings", ())),
        attributes=dict(custom.get("series", {})),
    )


def write_volume_store(
    path: UPath,
    images: dict[str, Volume],
    attributes: dict[str, Any] | None = None,
    labels: dict[str, dict[str, Volume]] | None = None,
    arrays: dict[str, tuple[np.ndarray, dict[str, Any]]] | None = None,
) -> list[dict]:
    """Atomically (re)write a store holding one OME-Zarr image per entry of ``images``.

    ``labels[image][name]`` become OME-Zarr label images of that image; ``arrays[key]`` = (array, attrs)
    are further plain Zarr arrays (displacement fields, serialised transforms) at ``key`` (e.g.
    ``"transforms/s001_t1"``), listed in the root attributes.
    """
    with atomic_store(path) as staging:
        root = zarr.create_group(zarr_store(staging), zarr_format=3, overwrite=True)
        summaries, pending = [], []
        for name, vol in images.items():
            summaries.append(write_volume_image(root, name, vol, pending=pending))
            if labels and labels.get(name):
                write_labels(root[name], labels[name], pending)
        write_arrays(pending)
        for key, (array, attrs) in (arrays or {}).items():
            arr = root.create_array(key, shape=array.shape, dtype=array.dtype, compressors=_compressors(), config=ARRAY_CONFIG,
                                    chunks=array.shape if array.nbytes < 64 * 2**20 else "auto")
            arr[...] = array
            arr.attrs.update(attrs)
        root.attrs[ATTR_KEY] = {**(attributes or {}), "images": [s["name"] for s in summaries],
                                "arrays": sorted(arrays or {})}
    return summaries


def open_volume_store(path: UPath) -> zarr.Group:
    """The root group of the published store at ``path`` (see :func:`readable_store`)."""
    return zarr.open_group(zarr_store(readable_store(path), read_only=True), mode="r", zarr_format=3)


def read_volume_store(path: UPath, level: int = 0) -> dict[str, Volume]:
    """All images of a store written by :func:`write_volume_store`, by name."""
    root = open_volume_store(path)
    return {name: read_volume_image(root[name], level) for name in root.attrs[ATTR_KEY]["images"]}


def read_labels(path: UPath, image: str, level: int = 0) -> dict[str, Volume]:
    """The label images of one image of a store (empty when it has none), at pyramid ``level``."""
    root = open_volume_store(path)
    if "labels" not in root[image]:
        return {}
    group = root[image]["labels"]
    return {name: read_volume_image(group[name], level) for name in group.attrs["ome"]["labels"]}


def coarsest_level(group: zarr.Group, min_size: int) -> int:
    """The coarsest pyramid level of an image group whose spatial axes all keep >= ``min_size`` voxels
    (level 0 when none does); only array metadata is read."""
    datasets = group.attrs["ome"]["multiscales"][0]["datasets"]
    best = 0
    for level, ds in enumerate(datasets):
        if min(group[ds["path"]].shape[-3:]) >= min_size:
            best = level
    return best


def read_array(path: UPath, key: str) -> tuple[np.ndarray, dict[str, Any]]:
    """A plain array written through ``arrays=`` of :func:`write_volume_store`, with its attributes."""
    arr = open_volume_store(path)[key]
    return arr[...], dict(arr.attrs)


def store_attributes(path: UPath) -> dict[str, Any]:
    """The root ``imaging_pipelines`` attributes of a store."""
    return dict(open_volume_store(path).attrs[ATTR_KEY])
