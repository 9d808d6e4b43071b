"""Slimmed single-frame DICOM headers: the few values the series builder still reads once slice records exist.

Uncompressed files scanned without pydicom (:mod:`~imaging_pipelines.medical.io.dicom_raw`) also leave their pixel
bytes in the file: only where they are is kept (:class:`PixelLocation`), and they are read again, one file at a time,
when the stack is assembled. The pixel bytes of a whole series and the stacked volume are then never in memory
together (the 150-file GE series: 1.2 MiB less at the peak; reading them again costs ~10 us per file).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .dicom_multiframe import has_functional_groups
from .dicom_pixels import NATIVE_LITTLE_ENDIAN, PixelDecodeError, n_frames, transfer_syntax
from .dicom_raw import RawDataset
from .dicom_slices import SliceRecord

# What the series builder still reads from a single-frame file once its slice records exist.
_KEPT_AFTER_RECORDS = (
    "Modality", "SeriesDescription", "SeriesNumber", "Manufacturer", "ManufacturerModelName", "MagneticFieldStrength",
    "RepetitionTime", "EchoTime", "FlipAngle", "SliceThickness", "ImageType", "BodyPartExamined", "Rows", "Columns",
    "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "NumberOfFrames", "PixelData", "InstanceNumber",
)


class SlimHeader(dict):
    """The few header values of a file the series builder still reads, as plain Python values.

    Behaves like the parts of a pydicom Dataset that are used later (``get``, ``in``, attribute access,
    ``file_meta``), at a fraction of the memory of parsed data elements.
    """

    __slots__ = ("file_meta",)

    def __init__(self, ds, pixel_data: bool = True, shared: dict | None = None):
        super().__init__()
        for keyword in _KEPT_AFTER_RECORDS:
            value = ds.get(keyword)
            if value is not None and (pixel_data or keyword != "PixelData"):
                value = _plain(value)
                if shared is not None and keyword != "PixelData":  # one object per distinct value in a read
                    value = shared.setdefault((keyword, type(value), _hashable(value)), value)
                self[keyword] = value
        syntax = transfer_syntax(ds)
        self.file_meta = {"TransferSyntaxUID": syntax} if shared is None else \
            shared.setdefault(("file_meta", syntax), {"TransferSyntaxUID": syntax})

    def with_pixel_data(self, data: bytes) -> SlimHeader:
        """A copy of this header holding ``data`` as its PixelData."""
        copy = SlimHeader({})
        copy.update(self)
        copy.file_meta = self.file_meta
        copy["PixelData"] = data
        return copy

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


def share_equal_values(records: list[SliceRecord], shared: dict) -> None:
    """Make the records of one file use the objects of earlier records (``shared``: kept by the caller for one
    read) where the values are equal: stack keys and labels, direction cosines, pixel spacing. Hundreds of files
    of one series then hold one copy of what they have in common. Records treat these values as read-only."""
    for r in records:
        r.split_key = shared.setdefault(("key", r.split_key), r.split_key)
        r.split_labels = shared.setdefault(("labels", tuple(r.split_labels.items())), r.split_labels)
        r.pixel_spacing = shared.setdefault(("spacing", r.pixel_spacing), r.pixel_spacing)
        cosines = (r.row_cos, r.col_cos, r.normal)
        r.row_cos, r.col_cos, r.normal = shared.setdefault(("cosines", *(v.tobytes() for v in cosines)), cosines)


def _plain(value: Any) -> Any:
    """A pydicom value (DSfloat, IS, MultiValue, ...) as a plain bytes / str / float / int / list."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, Sequence):
        return [_plain(v) for v in value]
    return str(value)


@dataclass(frozen=True, slots=True)
class PixelLocation:
    """Where a file's native PixelData value lies: byte ``offset`` and ``length`` in ``path``; ``stamp`` = (size in
    bytes, mtime in ns) of the file when its header was read (a file changed since is refused, not misread)."""

    path: str
    offset: int
    length: int
    stamp: tuple[int, int]

    def check(self, fd: int | None = None) -> None:
        """Raise PixelDecodeError when the file is gone or changed since its header was read."""
        try:
            st = os.fstat(fd) if fd is not None else os.stat(self.path)
        except OSError as exc:
            raise PixelDecodeError(f"cannot read the pixel data again: {exc.strerror or exc}") from None
        if (st.st_size, st.st_mtime_ns) != self.stamp:
            raise PixelDecodeError("file changed while the series was being read")

    def read(self) -> bytes:
        """The PixelData bytes, read again from the file; raises PixelDecodeError."""
        try:
            with open(self.path, "rb", buffering=0) as fh:  # unbuffered: one read call, no 8 KiB buffer
                self.check(fh.fileno())
                fh.seek(self.offset)
                data = fh.read(self.length)
        except OSError as exc:
            raise PixelDecodeError(f"cannot read the pixel data again: {exc.strerror or exc}") from None
        if data is None or len(data) != self.length:
            raise PixelDecodeError("file changed while the series was being read")
        return data

    def dataset(self, header: SlimHeader) -> SlimHeader:
        """``header`` with its PixelData read again from the file (what the pixel decoder reads)."""
        return header.with_pixel_data(self.read())


def slim_source(records: list[SliceRecord], shared: dict | None = None) -> None:
    """Replace a parsed uncompressed single-frame dataset by a :class:`SlimHeader`.

    A few dozen parsed elements per file outweigh the pixels of small slices (e.g. 64x64 fMRI), so this
    keeps the reader's memory close to the pixel bytes for long series. Compressed and multi-frame
    files keep their full dataset (their decoders need it). Files the raw scan read leave their pixel bytes in
    the file (:class:`PixelLocation`, see the module docstring). ``shared``: see :func:`share_equal_values`
    (equal header values are stored once too).
    """
    if shared is not None:
        share_equal_values(records, shared)
    source = records[0].source
    ds = source.dataset
    if has_functional_groups(ds) or n_frames(ds) != 1 or transfer_syntax(ds) not in NATIVE_LITTLE_ENDIAN:
        return
    offset = ds.pixel_offset if isinstance(ds, RawDataset) else None
    if offset is None or ds.file_stamp is None or ds.filename is None:
        source.dataset = SlimHeader(ds, shared=shared)
        return
    source.pixels_at = PixelLocation(ds.filename, offset, len(ds.PixelData), ds.file_stamp)
    source.dataset = SlimHeader(ds, pixel_data=False, shared=shared)
