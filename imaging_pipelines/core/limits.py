"""Allocation guard: refuse image headers that claim more pixel data than allowed, before allocating.

Readers call :func:`claimed_size_problem` / :func:`check_claimed_size` with the dimensions a header
declares, the bytes per element of the array they would allocate and, where the format stores pixels
uncompressed (or with a known maximum compression ratio), the bytes the file can actually hold.
The limit is :data:`DEFAULT_MAX_IMAGE_BYTES` (8 GiB) unless ``IMAGING_PIPELINES_MAX_IMAGE_BYTES`` (bytes,
a plain integer) says otherwise; more than :data:`MAX_VOXELS` elements are refused whatever the bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from os import PathLike

from imaging_pipelines.core.errors import ImagingInputError

MAX_IMAGE_BYTES_ENV = "IMAGING_PIPELINES_MAX_IMAGE_BYTES"
DEFAULT_MAX_IMAGE_BYTES = 8 * 2**30  # bytes
MAX_VOXELS = 2**31  # elements (voxels x samples), whatever the byte limit
DEFLATE_MAX_RATIO = 1032  # deflate/gzip cannot expand a stream by more than this factor
MAX_GZIP_RATIO_ENV = "IMAGING_PIPELINES_MAX_GZIP_RATIO"
DEFAULT_MAX_GZIP_RATIO = 200  # decompressed / compressed bytes allowed for a large compressed image
GZIP_RATIO_FLOOR_BYTES = 256 * 2**20  # below this decompressed size any ratio is fine (mostly empty label maps)


def max_image_bytes() -> int:
    """The byte limit in force: ``$IMAGING_PIPELINES_MAX_IMAGE_BYTES`` or :data:`DEFAULT_MAX_IMAGE_BYTES`."""
    raw = os.environ.get(MAX_IMAGE_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{MAX_IMAGE_BYTES_ENV}={raw!r} is not a whole number of bytes") from None
    if value <= 0:
        raise ValueError(f"{MAX_IMAGE_BYTES_ENV}={raw!r} must be a positive number of bytes")
    return value


def format_bytes(n: float) -> str:
    """``n`` bytes as a short human string (binary units)."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def _describe(dims: Sequence[int], what: str, itemsize: int) -> str:
    return f"{' x '.join(str(d) for d in dims)} {what} of {itemsize} byte(s)"


def claimed_size_problem(dims: Sequence[int], itemsize: int, *, what: str = "voxels",
                         available_bytes: int | None = None, stored_bytes: int | None = None) -> str | None:
    """Why an image of ``dims`` elements of ``itemsize`` bytes must not be allocated, or None if it may.

    ``available_bytes``: how many bytes of pixel data the file can hold at most (file size for
    uncompressed data, a bound for compressed data); ``stored_bytes``: how many the header says are
    stored (default: elements x itemsize). Works on Python ints, so absurd claims cannot overflow.
    """
    dims = [int(d) for d in dims]
    itemsize = max(1, int(itemsize))
    if any(d <= 0 for d in dims):
        return f"header claims {_describe(dims, what, itemsize)}: an empty or negative size"
    n = math.prod(dims)
    nbytes = n * itemsize
    limit = max_image_bytes()
    if n > MAX_VOXELS or nbytes > limit:
        return (f"header claims {_describe(dims, what, itemsize)} ({format_bytes(nbytes)}), more than the "
                f"{format_bytes(limit)} / {MAX_VOXELS} elements allowed (raise {MAX_IMAGE_BYTES_ENV} for larger "
                "images); refused before allocating")
    stored = nbytes if stored_bytes is None else int(stored_bytes)
    if available_bytes is not None and stored > available_bytes:
        return (f"header claims {_describe(dims, what, itemsize)} ({stored} bytes of pixel data) but the file "
                f"can hold at most {max(0, int(available_bytes))} bytes: truncated file or corrupt header")
    return None


def check_claimed_size(path: str | PathLike | None, dims: Sequence[int], itemsize: int, *, what: str = "voxels",
                       available_bytes: int | None = None, stored_bytes: int | None = None) -> None:
    """Raise :class:`ImagingInputError` naming ``path`` when :func:`claimed_size_problem` finds a problem."""
    problem = claimed_size_problem(dims, itemsize, what=what, available_bytes=available_bytes,
                                   stored_bytes=stored_bytes)
    if problem:
        raise ImagingInputError(path, problem)


def max_gzip_ratio() -> float:
    """The largest decompressed / compressed ratio accepted for a large image: ``$IMAGING_PIPELINES_MAX_GZIP_RATIO``
    or :data:`DEFAULT_MAX_GZIP_RATIO`."""
    raw = os.environ.get(MAX_GZIP_RATIO_ENV, "").strip()
    try:
        return float(raw) if raw else float(DEFAULT_MAX_GZIP_RATIO)
    except ValueError:
        raise ValueError(f"{MAX_GZIP_RATIO_ENV}={raw!r} is not a number") from None


def check_compression_ratio(path: str | PathLike, decompressed_bytes: int, compressed_bytes: int) -> None:
    """Refuse a compressed image whose header claims more than :data:`GZIP_RATIO_FLOOR_BYTES` of data at a
    ratio above :func:`max_gzip_ratio` (a decompression bomb: a few hundred KiB that would become GiBs in
    memory), before anything is decompressed. Real scans compress 2-10x; a mostly empty volume that large
    and that compressible is refused too (raise ``IMAGING_PIPELINES_MAX_GZIP_RATIO`` to accept it)."""
    limit = max_gzip_ratio()
    if decompressed_bytes <= GZIP_RATIO_FLOOR_BYTES or compressed_bytes <= 0:
        return
    ratio = decompressed_bytes / compressed_bytes
    if ratio > limit:
        raise ImagingInputError(path, (
            f"{format_bytes(compressed_bytes)} of compressed data would decompress to {format_bytes(decompressed_bytes)} "
            f"(ratio {ratio:.0f}, more than the {limit:g} allowed): a decompression bomb or a nearly empty volume; "
            f"refused before decompressing (raise {MAX_GZIP_RATIO_ENV} to accept it)"))
