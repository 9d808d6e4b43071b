"""Storage root and atomic publication of Zarr stores.

Layout: ``<root>/<dataset>/<asset>/<partition>.zarr``. The root is a UPath: a local folder by default
(``IMAGING_PIPELINES_STORAGE_ROOT`` or ``<project>/var/storage``), any fsspec URI by configuration.

A store is written into a staging sibling (``<name>.staging-<id>``) and only then published in place of
the previous one, so a failed or killed write never leaves a half-written store where a good one was.
Locally the switch is two renames; if a process dies between them, the previous store is still there
under ``<name>.replaced-<id>`` and :func:`recover_interrupted` (called before every read and write) puts
it back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from upath import UPath

from imaging_pipelines.catalog import PROJECT_ROOT

STORAGE_ROOT_ENV = "IMAGING_PIPELINES_STORAGE_ROOT"
DEFAULT_STORAGE_ROOT = PROJECT_ROOT / "var" / "storage"
STALE_STAGING_SECONDS = 3600  # a staging folder untouched this long belongs to a killed writer


def storage_root(root: str | os.PathLike | None = None) -> UPath:
    """The configured storage root as a UPath."""
    return UPath(str(root or os.environ.get(STORAGE_ROOT_ENV) or DEFAULT_STORAGE_ROOT))


def partition_store_path(root: UPath | str, dataset: str, asset: str, partition: str) -> UPath:
    """``<root>/<dataset>/<asset>/<partition>.zarr``."""
    return UPath(str(root)) / dataset / asset / f"{partition}.zarr"


def is_local(path: UPath) -> bool:
    return getattr(path, "protocol", "") in ("", "file", "local")


def local_path(path: UPath) -> Path:
    return Path(path.path if hasattr(path, "path") else str(path))


def write_text_atomic(path: UPath | str, text: str) -> str:
    """Write a small text file so that readers see the old file or the whole new one, never a part: locally a
    temporary sibling then ``os.replace``; on object stores one PUT (which replaces an object whole)."""
    path = UPath(str(path))
    if is_local(path):
        target = local_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return str(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def recover_interrupted(final: UPath) -> None:
    """Put back a previous store that an interrupted publish left renamed aside; drop stale staging dirs."""
    if not is_local(final):
        return
    target = local_path(final)
    parent = target.parent
    if not parent.is_dir():
        return
    replaced = sorted(parent.glob(f"{target.name}.replaced-*"), key=lambda p: p.stat().st_mtime)
    if replaced and not target.exists():
        os.rename(replaced.pop(), target)
    for leftover in replaced:
        shutil.rmtree(leftover, ignore_errors=True)
    # staging folders of writers that were killed (old enough not to belong to a live writer)
    for stale in parent.glob(f"{target.name}.staging-*"):
        if time.time() - stale.stat().st_mtime > STALE_STAGING_SECONDS:
            shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def atomic_store(final: UPath) -> Iterator[UPath]:
    """Yield a staging path to write a store into; publish it at ``final`` only if the block succeeds."""
    recover_interrupted(final)
    token = uuid.uuid4().hex[:12]
    staging = final.with_name(f"{final.name}.staging-{token}")
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield staging
    except BaseException:
        _remove(staging)
        raise
    _publish(staging, final, token)


def _publish(staging: UPath, final: UPath, token: str) -> None:
    if is_local(final):
        target, source = local_path(final), local_path(staging)
        aside = target.with_name(f"{target.name}.replaced-{token}")
        if target.exists():
            os.rename(target, aside)
        os.rename(source, target)
        shutil.rmtree(aside, ignore_errors=True)
        return
    # Object stores have no atomic directory rename: copy into place, then remove staging.
    fs = final.fs
    if fs.exists(final.path):
        fs.rm(final.path, recursive=True)
    fs.mv(staging.path, final.path, recursive=True)


def _remove(path: UPath) -> None:
    if is_local(path):
        shutil.rmtree(local_path(path), ignore_errors=True)
    elif path.exists():
        path.fs.rm(path.path, recursive=True)


def zarr_store(path: UPath, read_only: bool = False):
    """A zarr v3 store for a UPath (LocalStore for local folders, FsspecStore otherwise)."""
    from zarr.storage import FsspecStore, LocalStore

    if is_local(path):
        if not read_only:
            local_path(path).mkdir(parents=True, exist_ok=True)
        return LocalStore(str(local_path(path)), read_only=read_only)
    # from_url wraps synchronous filesystems (memory://, some plugins) in an async adapter
    return FsspecStore.from_url(str(path), read_only=read_only, storage_options=dict(path.storage_options))
