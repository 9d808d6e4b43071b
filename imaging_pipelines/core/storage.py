"""Storage root and atomic publication of Zarr stores.

Layout: ``<root>/<dataset>/<asset>/<partition>.zarr``. The root is a UPath: a local folder by default
(``IMAGING_PIPELINES_STORAGE_ROOT`` or ``<project>/var/storage``), any fsspec URI by configuration.

A store is written into a staging sibling (``<name>.staging-<host>-<pid>-<random>``) and only then
published in place of the previous one, so a failed or killed write never leaves a half-written store
where a good one was. Folders of killed writers are removed by the next write: at once when the writer was
a process of this host that no longer runs, otherwise when untouched for an hour.

- Locally the switch is two renames; if a process dies between them, the previous store is still there
  under ``<name>.replaced-<id>`` and :func:`recover_interrupted` (called before every read and write) puts
  it back.
- Object stores (S3, GCS, ...) have no atomic rename of a prefix. There the store prefix holds versions
  and a manifest: ``<name>/v-<id>/`` is a complete Zarr store and ``<name>/manifest.json`` (one PUT, which
  replaces an object whole) names the published one. A write goes to a new version; the manifest is
  switched only once it is complete; the version it replaced is deleted afterwards. Readers open
  :func:`readable_store`, which follows the manifest. A killed writer leaves at most an unreferenced
  version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path, PosixPath, WindowsPath
from typing import TYPE_CHECKING

from imaging_pipelines.config.paths import PROJECT_ROOT
from imaging_pipelines.core.secrets import resolve_env_refs

if TYPE_CHECKING:  # upath (and fsspec with it) is imported when a UPath is first needed: not to write a local file
    from upath import UPath

STORAGE_ROOT_ENV = "IMAGING_PIPELINES_STORAGE_ROOT"
DEFAULT_STORAGE_ROOT = PROJECT_ROOT / "var" / "storage"
STALE_STAGING_SECONDS = 3600  # a staging folder untouched this long belongs to a killed writer
MANIFEST = "manifest.json"  # object stores: names the published version inside a store prefix
VERSION_PREFIX = "v-"


def storage_root(root: str | os.PathLike | None = None, storage_options: dict | None = None) -> UPath:
    """The configured storage root as a UPath; ``storage_options`` go to its fsspec filesystem, each
    ``{env: VARIABLE}`` reference replaced by that variable's value here (credentials are never stored in
    configuration: :mod:`imaging_pipelines.core.secrets`)."""
    from upath import UPath

    if isinstance(root, UPath) and not storage_options:
        return root
    options = resolve_env_refs(storage_options or {})
    return UPath(str(root or os.environ.get(STORAGE_ROOT_ENV) or DEFAULT_STORAGE_ROOT), **options)


def as_upath(path: UPath | str | os.PathLike) -> UPath:
    """``path`` as a UPath, keeping the filesystem options of one that already is."""
    from upath import UPath

    return path if isinstance(path, UPath) else UPath(os.fspath(path))


def partition_store_path(root: UPath | str, dataset: str, asset: str, partition: str) -> UPath:
    """``<root>/<dataset>/<asset>/<partition>.zarr``."""
    return as_upath(root) / dataset / asset / f"{partition}.zarr"


def plain_local_path(path: UPath | str | os.PathLike) -> Path | None:
    """``path`` as a Path when it is a plain local path (a str or pathlib path without ``:``, so without a
    protocol), else None: what :func:`as_upath` would make a local UPath of, without importing upath."""
    if type(path) in (str, PosixPath, WindowsPath) and ":" not in os.fspath(path):
        return Path(path)
    return None


def is_local(path: UPath) -> bool:
    return getattr(path, "protocol", "") in ("", "file", "local")


def local_path(path: UPath) -> Path:
    return Path(path.path if hasattr(path, "path") else str(path))


PARTIAL_PREFIX = ".partial-"  # temporary files of the atomic writer: .partial-<host>-<pid>-<random>.<name>


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_partials(target: Path) -> list[Path]:
    """Remove the temporary files that killed writers of ``target`` left next to it: ours
    (``.partial-<host>-<pid>-<random>.<name>``) at once when their process of this host has ended, any
    other's (and the older ``.<name>.*.partial`` form) when untouched for STALE_STAGING_SECONDS. Returns
    the files removed."""
    removed = []
    candidates = [*target.parent.glob(f"{PARTIAL_PREFIX}*.{target.name}"), *target.parent.glob(f".{target.name}.*.partial")]
    for leftover in candidates:
        token = leftover.name.removeprefix(PARTIAL_PREFIX).split(".", 1)[0]
        try:
            stale = _writer_gone(f"partial-{token}") or time.time() - leftover.stat().st_mtime > STALE_STAGING_SECONDS
            if stale:
                leftover.unlink()
                removed.append(leftover)
        except FileNotFoundError:
            continue
    return removed


@contextmanager
def atomic_file(path: UPath | str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """The one atomic file writer: yield a local temporary path to write ``path``'s content into (with any
    library: ``nib.save``, rasterio, ``torch.save``, pydicom); publish it only if the block succeeds.

    Locally the temporary file is a sibling, ``.partial-<writer>.<name>`` (same folder, so same filesystem;
    it ends with the target's name, so writers that read the format from the suffix, such as ``.nii.gz``, see
    the right one). On success it is fsynced, renamed over ``path`` and the folder fsynced: readers see the
    old file or the whole new one, never a part, even after a power cut. On failure it is removed. A writer
    killed before the rename leaves its temporary file, which the next write of ``path`` removes
    (:func:`remove_stale_partials`). On object stores the file is written locally and uploaded with one PUT,
    which replaces an object whole. ``durable=False`` skips the fsyncs (still renamed whole into place): for
    scratch files that a crash may lose, such as a tool's input in a temporary folder."""
    with atomic_files([path], durable) as (tmp,):
        yield tmp


@contextmanager
def atomic_files(paths: list[UPath | str | os.PathLike], durable: bool = True) -> Iterator[list[Path]]:
    """:func:`atomic_file` for files published together (a mask, its DICOM SEG and the SR that references
    the SEG): yield one temporary path per target; after the block every temporary file is fsynced first
    and only then are they all renamed into place, in order. A failure or a kill at any point of writing or
    flushing leaves every previous file as it was; only a kill between two of the (back-to-back) renames
    can publish some of the set. On object stores each file is uploaded after the block, in order."""
    plains = [plain_local_path(p) for p in paths]
    targets = [None if plain is not None else as_upath(p) for p, plain in zip(paths, plains)]
    if not all(t is None or is_local(t) for t in targets):
        with ExitStack() as stack:
            yield [stack.enter_context(_uploaded_file(t)) if t is not None and not is_local(t) else
                   stack.enter_context(atomic_file(p, durable)) for p, t in zip(paths, targets)]
        return
    finals = [plain if plain is not None else local_path(t) for plain, t in zip(plains, targets)]
    token = f"{_writer_id()}-{uuid.uuid4().hex[:8]}"
    tmps = []
    for final in finals:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(final)
        tmps.append(final.with_name(f"{PARTIAL_PREFIX}{token}.{final.name}"))
    try:
        yield tmps
        for tmp in tmps if durable else ():  # the contents must be on disk before any name points at them
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        for tmp, final in zip(tmps, finals):
            os.replace(tmp, final)
        for folder in dict.fromkeys(final.parent for final in finals) if durable else ():
            _fsync_dir(folder)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


@contextmanager
def _uploaded_file(target: UPath) -> Iterator[Path]:
    """A local temporary file uploaded to the object-store ``target`` with one PUT when the block succeeds."""
    with tempfile.TemporaryDirectory(prefix="imaging-pipelines-upload-") as folder:
        tmp = Path(folder) / target.name
        yield tmp
        target.parent.mkdir(parents=True, exist_ok=True)
        target.fs.put_file(str(tmp), target.path)


def write_bytes_atomic(path: UPath | str | os.PathLike, data: bytes) -> str:
    """Write ``data`` to ``path`` through :func:`atomic_file`; returns the path written."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return _written_name(path)


def _written_name(path: UPath | str | os.PathLike) -> str:
    """The local path of ``path`` as a string, or ``path`` itself on an object store."""
    plain = plain_local_path(path)
    if plain is not None:
        return str(plain)
    return str(local_path(as_upath(path)) if is_local(as_upath(path)) else path)


def write_chunks_atomic(path: UPath | str | os.PathLike, chunks: Iterable[bytes], durable: bool = True) -> str:
    """Write the concatenation of ``chunks`` to ``path`` through :func:`atomic_file` (streamed: one chunk in
    memory at a time; ``durable``: as there); returns the path written."""
    with atomic_file(path, durable) as tmp, open(tmp, "wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
    return _written_name(path)


def write_text_atomic(path: UPath | str | os.PathLike, text: str) -> str:
    """Write UTF-8 ``text`` to ``path`` through :func:`atomic_file`; returns the path written."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def copy_file_atomic(source: str | os.PathLike, path: UPath | str | os.PathLike) -> str:
    """Publish the local file ``source`` at ``path`` (local or object store) through :func:`atomic_file`,
    streamed in 8 MiB blocks."""
    with atomic_file(path) as tmp, open(source, "rb") as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 8 << 20)
    return _written_name(path)


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
        if _writer_gone(stale.name) or time.time() - stale.stat().st_mtime > STALE_STAGING_SECONDS:
            shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def atomic_store(final: UPath) -> Iterator[UPath]:
    """Yield a staging path to write a store into; publish it at ``final`` only if the block succeeds."""
    recover_interrupted(final)
    token = f"{_writer_id()}-{uuid.uuid4().hex[:8]}"
    if is_local(final):
        staging = final.with_name(f"{final.name}.staging-{token}")
        staging.parent.mkdir(parents=True, exist_ok=True)
    else:
        staging = final / f"{VERSION_PREFIX}{token}"
    try:
        yield staging
    except BaseException:
        _remove(staging)
        raise
    if is_local(final):
        _publish_local(local_path(staging), local_path(final), token)
    else:
        _publish_version(final, staging)


def _publish_local(source: Path, target: Path, token: str) -> None:
    aside = target.with_name(f"{target.name}.replaced-{token}")
    if target.exists():
        os.rename(target, aside)
    os.rename(source, target)
    if aside.exists():
        remove_in_background(aside)


_REMOVER: ThreadPoolExecutor | None = None
_REMOVER_LOCK = threading.Lock()


def remove_in_background(folder: Path) -> Future[None]:
    """Delete ``folder`` (a replaced store, already renamed aside) on one background thread of this process.

    Freeing a store's blocks costs milliseconds per chunk file on disks mounted with ``discard``: about
    0.15 s for a preprocessed brain, which would otherwise sit between the publish and the end of the
    step. The new store is already published when this is called, so nothing waits on the deletion.
    Python joins the thread at interpreter exit (``concurrent.futures`` does), so a process that ends
    normally leaves nothing behind; a killed one leaves ``<name>.replaced-<id>`` beside the published
    store, which :func:`recover_interrupted` removes at the next read or write of it."""
    global _REMOVER
    with _REMOVER_LOCK:
        if _REMOVER is None:
            _REMOVER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-remover")
        return _REMOVER.submit(shutil.rmtree, folder, True)


def _forget_remover() -> None:
    """In a forked child the parent's remover thread does not exist: start a new one on first use."""
    global _REMOVER, _REMOVER_LOCK
    _REMOVER, _REMOVER_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_remover)


def wait_for_background_removals() -> None:
    """Block until every deletion queued by :func:`remove_in_background` in this process has finished."""
    with _REMOVER_LOCK:
        remover = _REMOVER
    if remover is not None:
        remover.submit(lambda: None).result()


def published_version(final: UPath) -> str | None:
    """Object stores: the version folder the manifest of ``final`` names (None without a manifest)."""
    manifest = final / MANIFEST
    manifest.fs.invalidate_cache(final.path)  # another process may have switched it since we listed it
    try:
        return json.loads(manifest.read_text())["version"]
    except FileNotFoundError:
        return None
    except (ValueError, KeyError) as exc:
        raise OSError(f"{manifest}: unreadable store manifest ({exc})") from exc


def _publish_version(final: UPath, staging: UPath) -> None:
    """Switch the manifest of ``final`` to the complete version ``staging``, then drop the replaced version
    and any stale unreferenced one (left by a killed writer)."""
    previous = published_version(final)
    write_text_atomic(final / MANIFEST, json.dumps({"version": staging.name, "published": time.time()}))
    for entry in final.fs.ls(final.path, detail=True):
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if not name.startswith(VERSION_PREFIX) or name == staging.name:
            continue
        if name == previous or _writer_gone(name) or _is_stale(final / name):
            _remove(final / name)


def _writer_id() -> str:
    """``<host hash>-<pid>``: names staging folders and versions after the process writing them."""
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
    return f"{host}-{os.getpid()}"


def _writer_gone(name: str) -> bool:
    """Whether the writer a staging folder or version is named after was a process of this host that has
    ended (killed): its folder can go at once. Other hosts' folders are left to the age rule."""
    parts = name.rsplit("-", 3)  # <prefix>-<host>-<pid>-<random>
    if len(parts) != 4 or not parts[2].isdigit():
        return False
    host, pid = parts[1], int(parts[2])
    if host != _writer_id().split("-")[0] or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _is_stale(version: UPath) -> bool:
    """An unpublished version folder none of whose objects changed for STALE_STAGING_SECONDS (its writer
    was killed); one still being written is younger."""
    try:
        objects = version.fs.find(version.path, detail=True).values()
        newest = max((o.get("LastModified") or o.get("mtime") or o.get("created") for o in objects), default=None)
    except (FileNotFoundError, OSError):
        return True
    if newest is None:
        return True
    stamp = newest.timestamp() if hasattr(newest, "timestamp") else float(newest)
    return time.time() - stamp > STALE_STAGING_SECONDS


def readable_store(final: UPath) -> UPath:
    """Where the published data of the store ``final`` is: ``final`` itself locally (after repairing an
    interrupted publish); on object stores the version its manifest names (``final`` itself for a store
    written without one)."""
    if is_local(final):
        recover_interrupted(final)
        return final
    version = published_version(final)
    return final / version if version else final


def store_exists(final: UPath) -> bool:
    """Whether the store ``final`` has published data, after putting back a store that an interrupted
    publish left aside (:func:`readable_store`): readers test this, never ``final.exists()``, so a store
    between its two publishing renames is recovered rather than taken for missing."""
    return readable_store(as_upath(final)).exists()


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
