"""Inboxes behind an fsspec URI (``s3://bucket/scans``, ``memory://...``): listing and a local file cache.

Readers (pydicom, nibabel, SimpleITK) need local files, so a remote inbox file is copied once into
``<cache>/<hash of the inbox URI>/<path inside the inbox>`` (cache: ``IMAGING_PIPELINES_INBOX_CACHE`` or
``var/cache/inbox``) and re-copied when its size or modification time changes.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from pathlib import Path

from upath import UPath

from imaging_pipelines.config.paths import PROJECT_ROOT

INBOX_CACHE_ENV = "IMAGING_PIPELINES_INBOX_CACHE"


def is_remote(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def _mtime_ns(info: dict) -> int:
    """Modification time in ns from an fsspec info dict (keys differ between filesystems)."""
    for key in ("mtime", "LastModified", "last_modified", "created", "updated"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, datetime):
            return int(value.timestamp() * 1e9)
        if isinstance(value, (int, float)):
            return int(float(value) * 1e9)
        try:
            return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1e9)
        except ValueError:
            continue
    return 0


def list_remote_files(inbox: str) -> list[tuple[str, str, int, int]]:
    """(uri, path inside the inbox, size in bytes, mtime in ns) of every file under a remote inbox."""
    root = UPath(inbox)
    base = root.path.rstrip("/")
    if not root.fs.exists(base):
        return []
    found = []
    for full, info in sorted(root.fs.find(base, detail=True).items()):
        if info.get("type") == "directory":
            continue
        rel = full.lstrip("/")[len(base.lstrip("/")):].lstrip("/")
        found.append((str(root / rel), rel, int(info.get("size") or 0), _mtime_ns(info)))
    return found


def remote_file_signature(uri: str) -> tuple[int, int] | None:
    """(size in bytes, mtime in ns) of one remote file, as :func:`list_remote_files` gives them; None when absent."""
    path = UPath(uri)
    try:
        info = path.fs.info(path.path)
    except (FileNotFoundError, OSError):
        return None
    return int(info.get("size") or 0), _mtime_ns(info)


def cache_folder(inbox: str) -> Path:
    root = Path(os.environ.get(INBOX_CACHE_ENV) or PROJECT_ROOT / "var" / "cache" / "inbox")
    return root / hashlib.sha256(inbox.encode()).hexdigest()[:16]


def fetch(uri: str, relpath: str, inbox: str, size: int, mtime_ns: int) -> str:
    """Local copy of a remote inbox file (downloaded when missing or changed); returns its path."""
    local = cache_folder(inbox) / relpath
    if local.is_file():
        st = local.stat()
        if st.st_size == size and st.st_mtime_ns == mtime_ns:
            return str(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = local.with_name(local.name + ".partial")
    src = UPath(uri)
    src.fs.get_file(src.path, str(partial))
    os.utime(partial, ns=(mtime_ns, mtime_ns))
    os.replace(partial, local)
    return str(local)
