"""Pixel decoding and rescaling for DICOM images.

Native little-endian data is read straight from the PixelData bytes (fast path); everything else
(JPEG, JPEG-LS, JPEG 2000, RLE, big endian) goes through pydicom's decoders (pylibjpeg plugins).
Rescaled values are ``stored * RescaleSlope + RescaleIntercept`` (Hounsfield units for CT).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from imaging_pipelines.core.limits import claimed_size_problem

from .dicom_raw import JPEG2000_SYNTAXES, RawDataset

# Implicit VR LE, explicit VR LE, deflated explicit VR LE (pydicom is imported only to decode other syntaxes)
NATIVE_LITTLE_ENDIAN = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"}


class PixelDecodeError(ValueError):
    """The pixel data of a file is missing, truncated or cannot be decoded."""


def transfer_syntax(ds) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""


def n_frames(ds) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def samples_per_pixel(ds) -> int:
    return int(ds.get("SamplesPerPixel", 1) or 1)


def is_supported_colour(ds) -> bool:
    """True for greyscale images and 8-bit RGB (the only colour images converted, as dcm2niix's RGB24)."""
    spp = samples_per_pixel(ds)
    return spp == 1 or (spp == 3 and int(ds.get("BitsAllocated", 8) or 8) == 8)


def _decode_rgb(ds, rows: int, cols: int, nf: int) -> np.ndarray:
    """8-bit colour pixels as (n_frames, rows, cols, 3) uint8, RGB (YBR converted by pydicom)."""
    if transfer_syntax(ds) in NATIVE_LITTLE_ENDIAN:
        raw = np.frombuffer(ds.PixelData, dtype=np.uint8, count=rows * cols * nf * 3)
        if int(ds.get("PlanarConfiguration", 0) or 0) == 1:
            return raw.reshape(nf, 3, rows, cols).transpose(0, 2, 3, 1)
        return raw.reshape(nf, rows, cols, 3)
    from pydicom.pixels import pixel_array

    try:
        arr = np.asarray(pixel_array(ds))
    except (MemoryError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        raise PixelDecodeError(f"cannot decode colour pixel data: {type(exc).__name__}: {exc}") from exc
    return arr.reshape(nf, rows, cols, 3)


def claimed_pixels_problem(ds) -> str | None:
    """Why the pixel array the header claims must not be allocated (too large, empty, or more frames than the
    encapsulated data can hold), or None. Sizes in pixels and bytes; nothing is decoded."""
    rows, cols, nf, spp = int(ds.Rows), int(ds.Columns), n_frames(ds), samples_per_pixel(ds)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    dims = (nf, rows, cols) if spp == 1 else (nf, rows, cols, spp)
    what = "pixels (frames x rows x columns)" if spp == 1 else "pixels (frames x rows x columns x samples)"
    problem = claimed_size_problem(dims, max(1, (bits + 7) // 8), what=what)
    if problem or transfer_syntax(ds) in NATIVE_LITTLE_ENDIAN:
        return problem
    items = len(ds.PixelData) // 8  # every compressed frame needs at least one 8-byte item header
    if nf > items:
        return f"header claims {nf} frames but the encapsulated pixel data can hold at most {items}"
    return None


def check_pixel_data(ds) -> None:
    """Cheap completeness check without decoding: raises PixelDecodeError for missing/truncated native data
    and for headers that claim an oversized or empty pixel array (see :mod:`imaging_pipelines.core.limits`)."""
    if "PixelData" not in ds:
        raise PixelDecodeError("no pixel data (file truncated or PixelData element missing)")
    problem = claimed_pixels_problem(ds)
    if problem:
        raise PixelDecodeError(problem)
    if transfer_syntax(ds) in NATIVE_LITTLE_ENDIAN:
        expected = _native_nbytes(ds)
        got = len(ds.PixelData)
        if expected is not None and got < expected:
            raise PixelDecodeError(f"truncated pixel data: {got} of {expected} bytes present")


def _native_nbytes(ds) -> int | None:
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if bits not in (8, 16, 32, 64):
        return None
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    return int(ds.Rows) * int(ds.Columns) * n_frames(ds) * spp * bits // 8


def decode_frames(ds) -> np.ndarray:
    """Stored pixel values as an array (n_frames, rows, cols); raises PixelDecodeError."""
    check_pixel_data(ds)
    if not is_supported_colour(ds):
        raise PixelDecodeError(f"unsupported colour image (SamplesPerPixel={ds.SamplesPerPixel})")
    rows, cols, nf = int(ds.Rows), int(ds.Columns), n_frames(ds)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    if samples_per_pixel(ds) == 3:
        return _decode_rgb(ds, rows, cols, nf)
    if transfer_syntax(ds) in NATIVE_LITTLE_ENDIAN and bits in (8, 16, 32):
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
        arr = np.frombuffer(ds.PixelData, dtype=dtype, count=rows * cols * nf).reshape(nf, rows, cols)
        stored = int(ds.get("BitsStored", bits) or bits)
        if signed and stored < bits:  # sign-extend values stored in fewer bits
            shift = bits - stored
            arr = (arr << shift) >> shift
        elif not signed and stored < bits:  # bits above BitsStored are not part of the value (e.g. 12-bit)
            mask = (1 << stored) - 1
            if arr.size and int(arr.max()) > mask:
                arr = arr & dtype.type(mask)
        return arr
    syntax = transfer_syntax(ds)
    if isinstance(ds, RawDataset):  # read by the raw scan: JPEG 2000 it admitted (dicom_raw.single_frame_greyscale_16)
        arr = _j2k_without_pydicom(ds)
        if arr is not None:
            return arr
        ds = ds.filename  # anything else: pydicom reads the file again and decodes it
    from pydicom.pixels import pixel_array

    try:
        arr = pixel_array(ds)  # not ds.pixel_array: that would also cache a decoded copy on the dataset
    except (MemoryError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # decoders raise many types; Rust plugins' PanicException is a BaseException
        raise PixelDecodeError(f"cannot decode pixel data ({syntax or 'unknown transfer syntax'}): "
                               f"{type(exc).__name__}: {exc}") from exc
    arr = np.asarray(arr)
    if arr.size != rows * cols * nf:
        raise PixelDecodeError(f"decoded {arr.size} pixels, expected {rows}x{cols}x{nf}")
    return arr.reshape(nf, rows, cols)


def _j2k_without_pydicom(ds: RawDataset) -> np.ndarray | None:
    """:func:`~imaging_pipelines.medical.io.dicom_j2k.decode_single_frame`, or None when it does not apply or fails
    (then pydicom decodes the file and reports any error in its words)."""
    if transfer_syntax(ds) not in JPEG2000_SYNTAXES:
        return None
    from .dicom_j2k import decode_single_frame

    try:
        return decode_single_frame(ds)
    except (MemoryError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # a corrupt codestream: pydicom's message is the one reported
        return None


def decode_all(sources: Sequence, workers: int | None = None) -> dict[int, Exception]:
    """Decode every source (``PixelSource``); compressed ones on all cores (forked processes where
    :func:`~imaging_pipelines.medical.io.dicom_parallel.can_fork`, else threads); returns {index: error}.
    Sources whose pixel bytes stay in the file (``pixels_at``) are only checked (file unchanged): they are decoded
    when their planes are stacked."""
    errors: dict[int, Exception] = {}

    def one(i: int) -> None:
        try:
            sources[i].frames()
        except Exception as exc:
            errors[i] = exc

    compressed = [i for i, s in enumerate(sources) if transfer_syntax(s.dataset) not in NATIVE_LITTLE_ENDIAN]
    native = [i for i, s in enumerate(sources) if transfer_syntax(s.dataset) in NATIVE_LITTLE_ENDIAN]
    for i in native:
        if sources[i].pixels_at is None:
            one(i)
        else:  # pixels left in the file: decoded one file at a time as the stack is filled; checked here
            try:
                sources[i].pixels_at.check()
            except Exception as exc:
                errors[i] = exc
    workers = workers or (os.cpu_count() or 1)
    if len(compressed) > 2 and workers > 1:
        from .dicom_parallel import can_fork, decode_in_processes

        if can_fork():
            errors.update(decode_in_processes(sources, compressed, workers, PixelDecodeError))
        else:  # the decoders hold the GIL: threads overlap little more than file reads
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(one, compressed))
    else:
        for i in compressed:
            one(i)
    for exc in errors.values():
        if isinstance(exc, MemoryError):  # an allocation failure is not a property of one file
            raise exc
    return errors
