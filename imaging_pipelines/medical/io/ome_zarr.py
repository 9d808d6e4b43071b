"""Volumes as OME-Zarr 0.5 images (Zarr v3) with a multiscale pyramid.

One store holds several images (one per series), each an OME-Zarr multiscales group named by the series.
Axes are ``z, y, x`` (or ``t, z, y, x``) in millimetres (seconds for t). ``scale`` is the voxel spacing and
``translation`` the LPS world position of voxel (0, 0, 0) of each level; the direction cosines (LPS,
column c = index axis c in i, j, k order) and the non-identifying series attributes are stored under the
custom ``imaging_pipelines`` attribute, so a Volume is restored exactly.

A store's group and array documents are built here (the ones zarr's ``create_array`` and ome-zarr's
``write_multiscales_metadata`` write for the same arguments) and written in one ``zarr.create_hierarchy``
call, concurrently; then the voxels of all arrays are compressed and written, several at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr
from upath import UPath
from zarr.codecs import BloscCodec, BytesCodec
from zarr.core.group import GroupMetadata
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.dtype import parse_dtype

from imaging_pipelines.core.storage import atomic_store, readable_store, zarr_store
from imaging_pipelines.core.volume import Volume

ATTR_KEY = "imaging_pipelines"
OME_VERSION = "0.5"
MAX_LEVELS = 4
MIN_SIZE_TO_HALVE = 32
SPATIAL_CHUNK = (64, 256, 256)  # voxels (z, y, x): 16 MiB of float32 per chunk


# Every chunk is written, even one that holds only the fill value: zarr's check for such chunks compares each
# chunk with the fill value element by element, which took more time than compressing and writing it (about
# 40 % of a store write); a chunk of zeros compresses to a few hundred bytes.
ARRAY_CONFIG = {"write_empty_chunks": True}


def store_compressors() -> tuple[BloscCodec]:
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


def level_chunks(volume: Volume, level_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Chunks of one pyramid level: :data:`SPATIAL_CHUNK` cut to the level's own shape (a chunk as large as
    level 0 would be padded to full size, compressed and written for every coarse level)."""
    spatial = tuple(min(c, s) for c, s in zip(SPATIAL_CHUNK, level_shape[-3:]))
    return ((1,) + spatial) if volume.is_timeseries else spatial


def ome_axes(volume: Volume) -> list[dict[str, str]]:
    """OME-Zarr axes of a volume's arrays: ``z, y, x`` in millimetres, led by ``t`` in seconds for a time series."""
    axes = [{"name": a, "type": "space", "unit": "millimeter"} for a in ("z", "y", "x")]
    if volume.is_timeseries:
        axes.insert(0, {"name": "t", "type": "time", "unit": "second"})
    return axes


def _array_metadata(data: np.ndarray, chunks: tuple[int, ...], dimension_names: list[str]) -> ArrayV3Metadata:
    """Zarr v3 metadata of one array: regular ``chunks``, "/" chunk keys, fill value 0, little-endian bytes
    and :func:`store_compressors` (the same document ``create_array`` writes for these arguments)."""
    return ArrayV3Metadata(
        shape=data.shape, data_type=parse_dtype(data.dtype, zarr_format=3),
        chunk_grid={"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        chunk_key_encoding={"name": "default", "configuration": {"separator": "/"}}, fill_value=0,
        codecs=(BytesCodec(endian="little"), *store_compressors()), attributes={}, dimension_names=dimension_names,
    )


def _auto_chunks(array: np.ndarray, max_bytes: int = 16 * 2**20) -> tuple[int, ...]:
    """Chunks of a large plain array: its shape, the longest axis halved until a chunk holds <= ``max_bytes``."""
    chunks = list(array.shape)
    while int(np.prod(chunks)) * array.itemsize > max_bytes and max(chunks) > 1:
        axis = int(np.argmax(chunks))
        chunks[axis] = (chunks[axis] + 1) // 2
    return tuple(chunks)


Nodes = tuple[dict[str, Any], dict[str, np.ndarray]]  # ({path: GroupMetadata | ArrayV3Metadata}, {array path: voxels})


def volume_image_nodes(name: str, volume: Volume, is_label: bool = False) -> Nodes:
    """The OME-Zarr image ``name`` of ``volume`` (a label image when ``is_label``) as Zarr nodes, paths relative
    to the image's parent: ``({path: GroupMetadata | ArrayV3Metadata}, {array path: voxels})``. Level ``k`` of
    the pyramid is array ``name/k``; each level's ``scale`` is its spacing and ``translation`` the LPS world
    position (mm) of its voxel (0, 0, 0), both in ``z, y, x`` order."""
    spacing_zyx = np.array(volume.spacing[::-1])
    axes = ome_axes(volume)
    nodes: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    datasets = []
    data, previous = volume.array, (1, 1, 1)
    for level, factor in enumerate(pyramid_factors(volume.spatial_shape)):
        # each level from the one before (cheaper than from full resolution every time)
        data = downsample(data, tuple(f // p for f, p in zip(factor, previous)), labels=is_label)
        previous = factor
        nodes[f"{name}/{level}"] = _array_metadata(data, level_chunks(volume, data.shape), [a["name"] for a in axes])
        arrays[f"{name}/{level}"] = data
        # voxel (0,0,0) of a level is the centre of a block of `factor` level-0 voxels
        shift_ijk = (np.array(factor[::-1]) - 1) / 2.0 * np.array(volume.spacing)
        translation = (np.array(volume.origin) + volume.direction @ shift_ijk)[::-1]
        scale, trans = list(spacing_zyx * np.array(factor)), list(translation)
        if volume.is_timeseries:
            scale, trans = [float(volume.time_step or 1.0)] + scale, [0.0] + trans
        datasets.append({
            "path": str(level),
            "coordinateTransformations": [
                {"type": "scale", "scale": [float(s) for s in scale]},
                {"type": "translation", "translation": [float(t) for t in trans]},
            ],
        })
    ome: dict[str, Any] = {"version": OME_VERSION, "multiscales": [{"datasets": datasets, "name": name, "axes": axes}]}
    if is_label:
        ome["image-label"] = {"version": OME_VERSION, "source": {"image": "../../"}}
    nodes[name] = GroupMetadata(attributes={"ome": ome, ATTR_KEY: {
        "coordinate_system": "LPS",
        "direction": volume.direction.tolist(),
        "time_step_s": volume.time_step,
        "series": volume.attributes,
        "warnings": list(volume.warnings),
    }})
    return nodes, arrays


def labels_nodes(image: str, labels: dict[str, Volume]) -> Nodes:
    """OME-Zarr ``labels/`` of the image ``image``: one label image per entry (integer arrays on the image's
    grid), as nodes and voxels like :func:`volume_image_nodes`."""
    nodes: dict[str, Any] = {f"{image}/labels": GroupMetadata(attributes={"ome": {"version": OME_VERSION,
                                                                                  "labels": list(labels)}})}
    arrays: dict[str, np.ndarray] = {}
    for name, label in labels.items():
        label_nodes, label_arrays = volume_image_nodes(name, label, is_label=True)
        nodes.update({f"{image}/labels/{path}": node for path, node in label_nodes.items()})
        arrays.update({f"{image}/labels/{path}": data for path, data in label_arrays.items()})
    return nodes, arrays


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
    nodes: dict[str, Any] = {}
    voxels: dict[str, np.ndarray] = {}
    for name, vol in images.items():
        parts = [volume_image_nodes(name, vol)]
        if (labels or {}).get(name):
            parts.append(labels_nodes(name, labels[name]))
        for part_nodes, part_voxels in parts:
            nodes.update(part_nodes)
            voxels.update(part_voxels)
    for key, (array, attrs) in (arrays or {}).items():
        chunks = array.shape if array.nbytes < 64 * 2**20 else _auto_chunks(array)
        nodes[key] = _array_metadata(array, chunks, None).update_attributes(attrs)
        voxels[key] = array
    nodes[""] = GroupMetadata(attributes={ATTR_KEY: {**(attributes or {}), "images": list(images),
                                                     "arrays": sorted(arrays or {})}})
    summaries = [{"name": name, "shape": list(vol.array.shape), "levels": len(pyramid_factors(vol.spatial_shape))}
                 for name, vol in images.items()]
    with atomic_store(path) as staging:
        # every group and array document in one call (zarr writes them concurrently), then the voxels
        created = dict(zarr.create_hierarchy(store=zarr_store(staging), nodes=nodes, overwrite=True))
        write_arrays([(created[key].with_config(ARRAY_CONFIG), data) for key, data in voxels.items()])
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
