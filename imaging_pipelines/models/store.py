"""Versioned model files under the storage root (used through :mod:`imaging_pipelines.models.protocol`).

Layout: ``<root>/<dataset>/<asset>/<prefix>-<version>.pt`` (+ ``.json`` training report) plus
``current.json`` naming the file in use (``{"version", "file", "report"}``). A file is written once per
version and never changed afterwards, so a model asset can reuse it whenever the version it computes
already exists.
"""

from __future__ import annotations

import json
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from upath import UPath

from imaging_pipelines.core.storage import as_upath, atomic_file, write_bytes_atomic, write_text_atomic


def model_folder(root: UPath | str, dataset_id: str, asset: str) -> UPath:
    """``<root>/<dataset_id>/<asset>``: the folder of one model asset's files."""
    return as_upath(root) / dataset_id / asset


def publish_model(folder: UPath, file_name: str, save: Callable[[Path], Any]) -> UPath:
    """Write a model file through ``save(local_path)`` and publish it as ``folder / file_name`` atomically
    (:func:`~imaging_pipelines.core.storage.atomic_file`)."""
    target = folder / file_name
    with atomic_file(target) as local:
        save(local)
    return target


def write_pointer(folder: UPath, info: dict[str, Any]) -> None:
    """Make ``info`` (must hold ``version`` and ``file``) the current model of ``folder``."""
    write_text_atomic(folder / "current.json", json.dumps(info, sort_keys=True))


def read_pointer(folder: UPath, what: str) -> dict[str, Any]:
    """``current.json`` of ``folder``; FileNotFoundError naming the asset to materialise when missing."""
    pointer = folder / "current.json"
    if not pointer.exists():
        raise FileNotFoundError(f"{folder}: no trained {what} yet (materialise {folder.name} first)")
    return json.loads(pointer.read_text())


@contextmanager
def local_copy(file: UPath) -> Iterator[Path]:
    """A local temporary copy of a (possibly remote) model file, for loaders that need a real path."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / file.name
        write_bytes_atomic(local, file.read_bytes())
        yield local
