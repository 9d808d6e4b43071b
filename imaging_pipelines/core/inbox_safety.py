"""List a local inbox folder as a hostile one: every entry that cannot be used safely is reported on its own
and skipped, never followed and never allowed to stop the scan.

- **Symbolic links** are resolved; a link whose target lies outside the data roots
  (``IMAGING_PIPELINES_DATA_ROOTS``) is refused, a dangling link reported. Links to folders are not followed.
- **Unreadable entries**: a file name that is not valid UTF-8, a file or folder without read permission, an
  entry that vanished or cannot be stat'ed: one problem each, the scan carries on.
- **Quiescence**: a file is eligible only once neither its content nor its metadata changed for
  ``quiescent_seconds`` (the newer of mtime and ctime: ctime cannot be set back by a copying tool, so a file
  still being written, even with ``cp -p``, waits). A folder holding a file that still changes waits as a
  whole, so a partly copied series is never read as a complete one.

Times are seconds since the epoch; paths are reported relative to the inbox (names the user chose, no header
content).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ListedFile:
    """A file that may be read: ``path`` (the entry; a link was checked to resolve inside the data roots),
    ``relpath`` (inside the inbox), size in bytes and mtime in ns (of the file a link points to)."""

    path: str
    relpath: str
    size: int
    mtime_ns: int


@dataclass
class SafeListing:
    """``files``: eligible files; ``problems``: one message per refused or unreadable entry; ``waiting``:
    inbox-relative folders whose files are not quiescent yet (looked at again by the next scan)."""

    files: list[ListedFile] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)


def shown_name(relpath: str) -> str:
    """``relpath`` printable: bytes of a name that is not valid UTF-8 shown as ``\\xNN`` escapes."""
    return relpath.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace") \
        if not is_valid_utf8(relpath) else relpath


def is_valid_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def within(path: str | os.PathLike, roots: Iterable[Path]) -> bool:
    """Whether the resolved ``path`` lies in (or is) one of the resolved ``roots``."""
    resolved = Path(os.path.realpath(path))
    return any(resolved == r or r in resolved.parents for r in (Path(os.path.realpath(x)) for x in roots))


def safe_listing(root: str | os.PathLike, data_roots: Iterable[Path], quiescent_seconds: float = 0.0,
                 now: float | None = None) -> SafeListing:
    """Every eligible file under the folder ``root`` (recursive, sorted; hidden entries skipped), with the
    problems and waiting folders described in the module docstring. ``quiescent_seconds``: how long a file
    must have been unchanged; ``now``: the current time (tests)."""
    root = Path(root)
    roots = [Path(os.path.realpath(r)) for r in data_roots]
    now = time.time() if now is None else now
    out = SafeListing()
    changing: set[str] = set()
    candidates: list[tuple[str, ListedFile]] = []

    def folder_error(exc: OSError) -> None:
        rel = os.path.relpath(exc.filename, root) if exc.filename else "."
        out.problems.append(f"{shown_name(rel)}/: cannot list this folder ({exc.strerror or exc}); skipped")

    for dirpath, dirnames, filenames in os.walk(root, onerror=folder_error):
        kept = []
        for name in sorted(dirnames):
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            if name.startswith("."):
                continue
            if not is_valid_utf8(name):
                out.problems.append(f"{shown_name(rel)}/: folder name is not valid UTF-8; skipped (rename it)")
            elif os.path.islink(os.path.join(dirpath, name)):
                out.problems.append(f"{rel}/: symbolic link to a folder; not followed")
            else:
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            entry = os.path.join(dirpath, name)
            rel = os.path.relpath(entry, root)
            listed, problem = _check_file(entry, rel, roots)
            if problem:
                out.problems.append(problem)
                continue
            if now - _changed_at(listed) < quiescent_seconds:
                changing.add(os.path.dirname(rel))
            candidates.append((os.path.dirname(rel), listed))
    out.waiting = sorted(changing)
    out.files = [f for folder, f in candidates if folder not in changing]
    return out


def _changed_at(file: ListedFile) -> float:
    return changed_at(file.path)


def changed_at(path: str | os.PathLike) -> float:
    """When ``path`` last changed, content or metadata (the newer of mtime and ctime, seconds since the epoch;
    0 for a path that cannot be stat'ed)."""
    try:
        st = os.stat(path)
    except OSError:
        return 0.0
    return max(st.st_mtime, st.st_ctime)


def changing_files(paths: Iterable[str | os.PathLike], quiescent_seconds: float, now: float | None = None) -> list[str]:
    """The ``paths`` that changed less than ``quiescent_seconds`` ago (still being written or copied)."""
    now = time.time() if now is None else now
    return [str(p) for p in paths if now - changed_at(p) < quiescent_seconds]


def _check_file(entry: str, rel: str, roots: list[Path]) -> tuple[ListedFile | None, str | None]:
    """(the file, None) or (None, the problem) for one inbox entry."""
    if not is_valid_utf8(rel):
        return None, f"{shown_name(rel)}: file name is not valid UTF-8; skipped (rename it)"
    target = entry
    if os.path.islink(entry):
        target = os.path.realpath(entry)
        if not os.path.exists(target):
            return None, f"{rel}: dangling symbolic link (its target does not exist); skipped"
        if not within(target, roots):
            return None, f"{rel}: symbolic link to a file outside the data roots; refused"
    try:
        st = os.stat(target)
    except OSError as exc:
        return None, f"{rel}: cannot read its size and time ({exc.strerror or exc}); skipped"
    if not stat.S_ISREG(st.st_mode):
        return None, f"{rel}: not a regular file; skipped"
    if not os.access(target, os.R_OK):
        return None, f"{rel}: not readable (permission denied); skipped"
    return ListedFile(entry, rel, st.st_size, st.st_mtime_ns), None
