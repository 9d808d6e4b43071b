"""NIfTI-1 single files (``.nii`` / ``.nii.gz``) written without nibabel: the same header and voxel bytes as
``nibabel.save`` of the image :func:`imaging_pipelines.medical.io.image_files.write_nifti` builds (tests compare
the two byte for byte), at a fraction of the start-up cost (importing nibabel also imports pydicom).

Geometry: ``affine`` is the RAS+ voxel-to-world matrix in mm for data indexed [i, j, k(, t)]. It is written as the
sform (code 1, scanner) and as the qform (code 1): zooms = column norms, qfac = sign of the determinant, the
quaternion of the nearest rotation (polar decomposition), as nibabel's ``Nifti1Header.set_qform`` computes it.
Units: mm, and s for the 4th axis of time series.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from imaging_pipelines.core.small_matrix import det3, nearest_rotation, rotation_quaternion

# NIfTI-1 datatype codes of the dtypes nibabel writes unchanged (little endian); nibabel refuses 64-bit integers
DATATYPES = {
    np.dtype("uint8"): 2, np.dtype("int16"): 4, np.dtype("int32"): 8, np.dtype("float32"): 16,
    np.dtype("complex64"): 32, np.dtype("float64"): 64, np.dtype("int8"): 256, np.dtype("uint16"): 512,
    np.dtype("uint32"): 768, np.dtype("complex128"): 1792,
}
RGB24 = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
_HEADER = struct.Struct("<i10s18sihcc8h3fhhhh8ffffhcc4f2i80s24shh6f4f4f4f16s4s")
UNITS_MM, UNITS_SEC = 2, 8
QUAT_NOISE = 1e-5  # a quaternion component at or below this (a rotation by 90 or 180 degrees about a tilted or
# coordinate axis, or within ~2e-5 rad of one) holds, in nibabel's bytes, LAPACK's rounding noise and arbitrary
# choices (the sign of a half turn's axis, -0.0 or +0.0): such affines are computed as nibabel does, except the
# rotations by 0 or 180 degrees about the coordinate axes (a diagonal rotation: axial scans), where both agree
VOX_OFFSET = 352
GZIP_LEVEL = 1  # nibabel's default compression level for .nii.gz
GZIP_BLOCK = 1 << 20  # bytes of voxels compressed as one independent deflate block (on its own core)
MIN_PARALLEL_BLOCKS = 4  # fewer blocks (volumes under ~3 MiB) are compressed in this thread
DEFLATE_PIECE = 1 << 15  # bytes fed to zlib at a time when compressing in this thread (output streamed: zlib's
# output of a piece fits one buffer, so it is not copied to join blocks; 32 KiB: peak 0.36 MB, 128 KiB: 0.55 MB)


def mat2quat(m: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), w >= 0, of a 3x3 rotation (Bar-Itzhack's method, as nibabel.quaternions;
    LAPACK ``eigh``: only for matrices that are not near-orthogonal, see :func:`qform_parameters`)."""
    qxx, qyx, qzx, qxy, qyy, qzy, qxz, qyz, qzz = m.flat
    k = np.array([
        [qxx - qyy - qzz, 0, 0, 0],
        [qyx + qxy, qyy - qxx - qzz, 0, 0],
        [qzx + qxz, qzy + qyz, qzz - qxx - qyy, 0],
        [qyz - qzy, qzx - qxz, qxy - qyx, qxx + qyy + qzz],
    ]) / 3.0
    vals, vecs = np.linalg.eigh(k)
    q = vecs[[3, 0, 1, 2], np.argmax(vals)]
    return -q if q[0] < 0 else q


def qform_parameters(affine: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """(qfac, zooms in mm, quaternion (b, c, d), offset in mm) of a 4x4 RAS affine.

    Near-orthogonal direction cosines (every scanner's) take closed forms without BLAS / LAPACK
    (:mod:`imaging_pipelines.core.small_matrix`: cofactor determinant, Newton polar decomposition, Shepperd's
    quaternion), whose float32 header fields equal nibabel's (``tests/test_nifti_qform.py``). nibabel's own
    computation (LAPACK ``det``, ``svd``, ``eigh``) remains for sheared or nearly singular matrices and where a
    quaternion component is within ``QUAT_NOISE`` of 0 (coronal / sagittal axes, half turns about tilted axes,
    near-axis-aligned tilts; not the axial 0 / 180 degree rotations), whose bytes hold LAPACK's own choices."""
    aff = np.asarray(affine, dtype=float)
    rzs = aff[:3, :3]
    zooms = np.sqrt(np.sum(rzs * rzs, axis=0))
    r = rzs / zooms
    qfac = -1.0 if det3(r) <= 0 else 1.0
    rot = nearest_rotation(r * [1.0, 1.0, qfac])
    if rot is not None:
        quat = rotation_quaternion(rot)
        if np.min(np.abs(quat)) > QUAT_NOISE or not np.any(rot[~np.eye(3, dtype=bool)]):
            return qfac, zooms, quat[1:], aff[:3, 3]
    qfac = 1.0
    if np.linalg.det(r) <= 0:
        qfac = -1.0
        r[:, -1] *= -1
    p, _, qs = np.linalg.svd(r)
    quat = mat2quat(np.dot(p, qs))
    return qfac, zooms, quat[1:], aff[:3, 3]


def header_bytes(shape: tuple[int, ...], dtype: np.dtype, affine: np.ndarray, time_step: float | None = None,
                 scl: tuple[float, float] | None = None) -> bytes:
    """The 348-byte NIfTI-1 header plus the 4-byte empty extension flag, for data of ``shape`` (i, j, k(, t)).

    ``time_step`` (s) sets pixdim[4] and the time unit for 4D data; ``scl`` = (scl_slope, scl_inter) other than
    are written as given; without, (1, 0), as nibabel writes unscaled data.
    """
    if len(shape) > 7:
        raise ValueError(f"NIfTI holds at most 7 dimensions, got {len(shape)}")
    code = 128 if dtype == RGB24 else DATATYPES[np.dtype(dtype)]
    dim = [len(shape), *shape] + [1] * (7 - len(shape))
    qfac, zooms, quat, offset = qform_parameters(affine)
    pixdim = [qfac, *zooms.tolist()] + [1.0] * 4
    timed = time_step is not None and len(shape) == 4
    if timed:
        pixdim[4] = float(time_step)  # type: ignore[arg-type]
    slope, inter = (float(scl[0]), float(scl[1])) if scl is not None else (1.0, 0.0)
    aff = np.asarray(affine, dtype=float)
    values = (
        348, b"", b"", 0, 0, b"\0", b"\0", *dim, 0.0, 0.0, 0.0, 0, code, dtype.itemsize * 8, 0, *pixdim,
        float(VOX_OFFSET), slope, inter, 0, b"\0", bytes([UNITS_MM | (UNITS_SEC if timed else 0)]),
        0.0, 0.0, 0.0, 0.0, 0, 0, b"", b"", 1, 1, *quat.tolist(), *offset.tolist(),
        *aff[0].tolist(), *aff[1].tolist(), *aff[2].tolist(), b"", b"n+1\0",
    )
    return _HEADER.pack(*values) + b"\0\0\0\0"


def nifti_chunks(data_c: np.ndarray, affine: np.ndarray, time_step: float | None = None,
                 scl: tuple[float, float] | None = None, compress: bool = True) -> Iterator[bytes]:
    """The bytes of a single-file NIfTI-1 image, in pieces of at most a few MiB (write them with
    :func:`imaging_pipelines.core.storage.write_chunks_atomic`): header, then the voxels ``data_c`` in array order
    [(t,) k, j, i] (C order = NIfTI's i-fastest layout); one gzip member (no name, mtime 0) when ``compress``,
    its deflate stream made of independently compressed 1 MiB blocks (other bytes than nibabel's gzip file, the
    same bytes once decompressed)."""
    shape = tuple(int(n) for n in data_c.shape[::-1])
    head = header_bytes(shape, data_c.dtype, affine, time_step, scl)
    data = np.ascontiguousarray(data_c)
    if data.dtype.byteorder == ">":
        raise ValueError("big-endian data")
    payload = memoryview(data).cast("B")
    step = 1 << 22
    if not compress:
        yield head
        for start in range(0, len(payload), step):
            yield bytes(payload[start:start + step])
        return
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    # the header is a block of its own: no copy of the first MiB of voxels to put the two together
    blocks = [head] + [payload[start:start + GZIP_BLOCK] for start in range(0, len(payload), GZIP_BLOCK)]
    yield from _deflate_blocks(blocks)
    crc = 0
    for block in blocks:
        crc = zlib.crc32(block, crc)
    yield struct.pack("<II", crc & 0xFFFFFFFF, (len(head) + len(payload)) & 0xFFFFFFFF)


def _deflate_block(block: Any, last: bool) -> bytes:
    comp = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return comp.compress(block) + comp.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _deflate_block_pieces(block: Any, last: bool) -> Iterator[bytes]:
    """:func:`_deflate_block`'s bytes in pieces, fed ``DEFLATE_PIECE`` bytes at a time: no whole compressed block
    (nor the copy that joins it to its flush) is held in memory."""
    comp = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    for start in range(0, len(block), DEFLATE_PIECE):
        out = comp.compress(block[start:start + DEFLATE_PIECE])
        if out:
            yield out
    yield comp.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _deflate_blocks(blocks: list[Any]) -> Iterator[bytes]:
    """Raw deflate of each block, in order; together one deflate stream (each block but the last ends with a sync
    flush, as pigz writes). Blocks are compressed on all cores: zlib releases the GIL while it compresses; volumes
    of fewer blocks are compressed in this thread, in pieces."""
    workers = min(os.cpu_count() or 1, len(blocks))
    if workers < 2 or len(blocks) < MIN_PARALLEL_BLOCKS:  # a thread pool costs more than it gains on a few MiB
        for n, block in enumerate(blocks):
            yield from _deflate_block_pieces(block, n == len(blocks) - 1)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for n, block in enumerate(blocks):
            pending.append(pool.submit(_deflate_block, block, n == len(blocks) - 1))
            if len(pending) >= 2 * workers:  # a bounded window: compressed blocks do not pile up in memory
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
