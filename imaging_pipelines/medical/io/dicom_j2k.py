"""JPEG 2000 frames decoded with pylibjpeg-openjpeg directly, for files the raw header scan read.

pydicom decodes JPEG 2000 through the same library (``openjpeg.utils.decode_pixel_data``, version 2); this module
reproduces its result for the case :func:`~imaging_pipelines.medical.io.dicom_raw.single_frame_greyscale_16`
admits, so that such series convert without importing pydicom: one frame (all fragments joined, as pydicom joins
them for a single-frame image), a bare codestream whose precision is 9-16 bits and whose signedness matches
PixelRepresentation (then pydicom applies no sign correction and returns the decoded bytes as 16-bit integers of
that signedness). Anything else returns None and the caller decodes with pydicom.
"""

from __future__ import annotations

import struct

import numpy as np

_ITEM = b"\xfe\xff\x00\xe0"


def fragments(pixel_data: bytes) -> list[bytes] | None:
    """The fragments of encapsulated pixel data (items after the basic offset table), or None when malformed."""
    out, pos, n = [], 0, len(pixel_data)
    while pos + 8 <= n:
        if pixel_data[pos:pos + 4] != _ITEM:
            return None
        length = struct.unpack_from("<I", pixel_data, pos + 4)[0]
        if pos + 8 + length > n:
            return None
        out.append(pixel_data[pos + 8:pos + 8 + length])
        pos += 8 + length
    return out[1:] if out and pos == n else None


def codestream_parameters(frame: bytes) -> tuple[int, bool] | None:
    """(precision in bits, signed) from the SIZ marker of a bare JPEG 2000 codestream (as pydicom reads them),
    or None when ``frame`` does not start with SOC + SIZ (e.g. a JP2 file)."""
    if len(frame) < 43 or frame[0:4] != b"\xff\x4f\xff\x51":
        return None
    ssiz = frame[42]
    return (ssiz & 0x7F) + 1, bool(ssiz & 0x80)


def decode_single_frame(ds) -> np.ndarray | None:
    """The stored values (1, rows, cols) of a single-frame 16-bit greyscale JPEG 2000 image, or None when this
    module does not reproduce pydicom for it."""
    parts = fragments(ds.PixelData)
    if not parts:
        return None
    frame = b"".join(parts)
    params = codestream_parameters(frame)
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    if params is None or not 8 < params[0] <= 16 or params[1] != signed:
        return None
    from openjpeg.utils import decode_pixel_data

    decoded = decode_pixel_data(frame, version=2)
    rows, cols = int(ds.Rows), int(ds.Columns)
    if len(decoded) != rows * cols * 2:
        return None
    return np.frombuffer(decoded, dtype="<i2" if signed else "<u2").reshape(1, rows, cols)
