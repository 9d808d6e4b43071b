"""Decoding compressed DICOM frames on all cores, in forked worker processes.

The JPEG 2000 and JPEG decoders pydicom uses (pylibjpeg-openjpeg, pylibjpeg-libjpeg) hold the GIL while they
decode (their Cython entry points read the data through Python file objects), so a thread pool decodes one frame
at a time. Worker processes do not share the GIL. They are forked, so they inherit the parsed headers and the
imported decoders and start in milliseconds; only the decoded arrays travel back (pickled through a pipe).

Forking a process that runs other threads can deadlock the child (a lock held by a thread that does not exist in
the child), so processes are used only when the calling process has a single thread (e.g. ``imaging-pipelines
convert``); elsewhere (Dagster runs, servers) :func:`can_fork` is False and the caller decodes in threads.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
from collections.abc import Sequence
from typing import Any

_SOURCES: Sequence[Any] = ()  # the sources being decoded, inherited by the forked workers


def can_fork() -> bool:
    """True where forking decoder processes is safe: Linux-like ``fork`` available and a single thread running."""
    return sys.platform.startswith("linux") and threading.active_count() == 1 and \
        "fork" in multiprocessing.get_all_start_methods()


def _decode(index: int) -> tuple[int, Any, str | None, str]:
    """In a worker: (index, decoded frames or None, error type name or None, error message)."""
    try:
        return index, _SOURCES[index].frames(), None, ""
    except Exception as exc:
        return index, None, type(exc).__name__, str(exc)


def decode_in_processes(sources: Sequence[Any], indices: Sequence[int], workers: int,
                        error_type: type[Exception]) -> dict[int, Exception]:
    """Decode ``sources[i].frames()`` for each ``i`` in ``indices`` in ``workers`` forked processes and keep the
    arrays on the sources (``_frames``); returns {index: error} (``MemoryError`` kept, others as ``error_type``
    with their message). The first source is decoded here first, so the decoder plugins are imported once."""
    global _SOURCES
    errors: dict[int, Exception] = {}
    first, rest = indices[0], list(indices[1:])
    try:
        sources[first].frames()
    except Exception as exc:
        errors[first] = exc
    if not rest:
        return errors
    _SOURCES = sources
    try:
        with multiprocessing.get_context("fork").Pool(min(workers, len(rest))) as pool:
            for index, frames, kind, message in pool.imap_unordered(_decode, rest):
                if kind is None:
                    sources[index]._frames = frames
                else:
                    errors[index] = MemoryError(message) if kind == "MemoryError" else error_type(message)
    finally:
        _SOURCES = ()
    return errors
