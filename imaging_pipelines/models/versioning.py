"""Model versions: one hash over the training code, the training data and the training parameters.

A trained model's version is the first :data:`VERSION_DIGITS` hex digits of SHA-256 over, in this order,
the source text of the modules that define and train it, the bytes of its training data (as the task's
``fingerprint`` hook yields them) and its parameters as sorted JSON. Any change to one of the three gives a
new version (and so a new model file); unchanged inputs give the same version, and the stored model is
reused. Imported models (nnU-Net folders, MONAI bundles) hash their files through the same function.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from types import ModuleType
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from imaging_pipelines.core.volume import Volume

VERSION_DIGITS = 16


def content_hash(code: Iterable[ModuleType], data: Iterable[bytes], params: Mapping[str, Any]) -> str:
    """SHA-256 hex digest (64 characters) of the source of ``code``, every chunk of ``data`` in order, and
    ``params`` as JSON with sorted keys (values JSON cannot encode are written with ``str``)."""
    h = hashlib.sha256()
    for module in code:
        h.update(inspect.getsource(module).encode())
    for chunk in data:
        h.update(chunk)
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    return h.hexdigest()


def model_version(code: Iterable[ModuleType], data: Iterable[bytes], params: Mapping[str, Any]) -> str:
    """The model version: the first :data:`VERSION_DIGITS` hex digits of :func:`content_hash`."""
    return content_hash(code, data, params)[:VERSION_DIGITS]


def array_bytes(array: np.ndarray) -> Iterator[bytes]:
    """An array as hash input: its dtype and shape, then its values in C order."""
    arr = np.ascontiguousarray(array)
    yield str((arr.dtype.str, arr.shape)).encode()
    yield arr.tobytes()


def volume_bytes(volume: Volume) -> Iterator[bytes]:
    """A Volume as hash input: dtype, shape, spacing and origin (mm), direction cosines, then the voxel values;
    so moving or resampling an image changes the version even when its voxel values do not."""
    arr = np.ascontiguousarray(volume.array)
    yield str((arr.dtype.str, arr.shape, volume.spacing, volume.origin)).encode()
    yield np.asarray(volume.direction, dtype=np.float64).tobytes()
    yield arr.tobytes()
