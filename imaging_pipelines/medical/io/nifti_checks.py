"""Checks of a NIfTI file's header against the file itself, before nibabel allocates anything.

Sizes are in bytes. A gzip stream cannot expand by more than :data:`~imaging_pipelines.core.limits.DEFLATE_MAX_RATIO`,
so a ``.nii.gz`` of ``n`` bytes holds at most ``1032 * n`` bytes of header, extensions and voxels.

:class:`BoundedGzipFile` is the stream the voxels of a ``.nii.gz`` are read from: decompressed in chunks of
:data:`GZIP_CHUNK_BYTES` straight into the array's buffer, never past a cap on output bytes (the header's claim).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from os import PathLike

from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.core.limits import DEFLATE_MAX_RATIO

GZIP_CHUNK_BYTES = 1 << 20  # decompressed bytes per step of BoundedGzipFile.readinto


class BoundedGzipFile(gzip.GzipFile):
    """A gzip file for reading whose ``readinto`` streams: chunks of :data:`GZIP_CHUNK_BYTES` decompressed
    straight into the caller's buffer, and never more than ``max_bytes`` of output in all.

    ``gzip.GzipFile.readinto`` (``io.BufferedIOBase``'s) reads a ``bytes`` object of the buffer's whole size
    and copies it: nibabel reads voxels with one ``readinto`` into a buffer of the image's size, so a
    ``.nii.gz`` read through it held the voxels twice. Reading past ``max_bytes`` (more than the header
    claimed) raises :class:`ImagingInputError`."""

    def __init__(self, path: str | PathLike, max_bytes: int):
        super().__init__(os.fspath(path), "rb")
        self.path, self.max_bytes = path, int(max_bytes)

    def readinto(self, buffer) -> int:  # noqa: D102 - see the class docstring
        view = memoryview(buffer).cast("B")
        if self.tell() + len(view) > self.max_bytes:
            raise ImagingInputError(self.path, f"read of {len(view)} bytes at offset {self.tell()} goes past the "
                                               f"{self.max_bytes} bytes the header claims: corrupt header")
        done = 0
        while done < len(view):
            n = super().readinto(view[done:done + GZIP_CHUNK_BYTES])
            if not n:
                break
            done += n
        return done

    def read(self, size: int = -1) -> bytes:  # noqa: D102 - bounded like readinto
        if size is None or size < 0 or self.tell() + size > self.max_bytes:
            size = max(0, self.max_bytes - self.tell())
        return super().read(size)


def read_gzip_nifti_voxels(path: str | PathLike, img):
    """The voxels of the ``.nii.gz`` ``path`` (``img``: its nibabel image, header loaded) as nibabel returns
    them (scaled by slope/intercept), decompressed once into the array's own buffer through
    :class:`BoundedGzipFile` capped at the header's voxel offset plus the bytes it claims."""
    import numpy as np

    offset = int(getattr(img.dataobj, "offset", 0) or 0)
    with BoundedGzipFile(path, offset + stored_nbytes(img)) as fh:
        return np.asanyarray(type(img).from_stream(fh).dataobj)


def nifti_claim(path: str | PathLike, img) -> tuple[int, int | None]:
    """(bytes per voxel of the loaded array, most pixel bytes the file can hold or None)."""
    header = img.header
    itemsize = header.get_data_dtype().itemsize
    slope, inter = getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0)
    if slope != 1 or inter != 0:  # scaled data come back as floats
        itemsize = max(itemsize, 8)
    name = str(path).lower()
    try:
        size = os.path.getsize(path)
    except OSError:
        return itemsize, None
    if name.endswith(".gz"):
        return itemsize, size * DEFLATE_MAX_RATIO
    if name.endswith(".nii"):
        offset = int(getattr(img.dataobj, "offset", 0) or 0)
        return itemsize, size - offset
    return itemsize, None


def check_nifti_extensions(path: str | PathLike) -> None:
    """Refuse a single-file NIfTI whose header extensions claim more bytes than the file can hold.

    nibabel reads each extension with one ``read(esize)``, which allocates ``esize`` bytes (up to 2 GiB)
    before noticing the file is shorter; this walks the same chain of (esize, ecode) records first.
    """
    name = str(path).lower()
    size = os.path.getsize(path)
    available = size * DEFLATE_MAX_RATIO if name.endswith(".gz") else size
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(544)
        for hdr_size, vox_fmt, vox_at in ((348, "f", 108), (540, "q", 168)):
            endian = next((e for e in "<>" if len(head) >= 4 and struct.unpack(e + "i", head[:4])[0] == hdr_size),
                          None)
            if endian is not None:
                break
        else:
            return  # not a NIfTI header: nibabel gives the error
        if len(head) < hdr_size + 4 or head[hdr_size] == 0:
            return  # no extensions
        vox_offset = struct.unpack(endian + vox_fmt, head[vox_at:vox_at + struct.calcsize(vox_fmt)])[0]
        if not math.isfinite(vox_offset):
            return
        pos = hdr_size + 4
        remaining = vox_offset - pos
        fh.seek(pos)
        while remaining >= 16 or remaining < 0:  # nibabel reads to the end of the file when vox_offset < pos
            record = fh.read(8)
            if len(record) < 8:
                return  # nibabel reports the short read
            esize = struct.unpack(endian + "i", record[:4])[0]
            if esize < 16 or esize - 8 > available - pos - 8:
                raise ImagingInputError(path, f"header extension claims {esize} bytes at offset {pos}, but the file "
                                              f"holds at most {max(0, available - pos)} more: corrupt header")
            pos += esize
            fh.seek(pos)
            remaining -= esize


def stored_nbytes(img) -> int:
    """Bytes of voxel data the NIfTI header says are stored on disk."""
    return math.prod(int(d) for d in img.shape) * img.header.get_data_dtype().itemsize
