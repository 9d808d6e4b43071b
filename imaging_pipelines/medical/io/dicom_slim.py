"""Slimmed single-frame DICOM headers: the few values the series builder still reads once slice records exist."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .dicom_multiframe import has_functional_groups
from .dicom_pixels import NATIVE_LITTLE_ENDIAN, n_frames, transfer_syntax
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

    def __init__(self, ds):
        super().__init__()
        for keyword in _KEPT_AFTER_RECORDS:
            value = ds.get(keyword)
            if value is not None:
                self[keyword] = _plain(value)
        self.file_meta = {"TransferSyntaxUID": transfer_syntax(ds)}

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


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


def slim_source(records: list[SliceRecord]) -> None:
    """Replace a parsed uncompressed single-frame dataset by a :class:`SlimHeader`.

    A few dozen parsed elements per file outweigh the pixels of small slices (e.g. 64x64 fMRI), so this
    keeps the reader's memory close to the pixel bytes for long series. Compressed and multi-frame
    files keep their full dataset (their decoders need it).
    """
    source = records[0].source
    ds = source.dataset
    if has_functional_groups(ds) or n_frames(ds) != 1 or transfer_syntax(ds) not in NATIVE_LITTLE_ENDIAN:
        return
    source.dataset = SlimHeader(ds)
