"""MetaImage (``.mha``/``.mhd``) header checks that keep ITK's MetaIO from crashing, hanging or over-allocating.

What MetaIO does with hostile headers (found by fuzzing, SimpleITK 2.x):

* an ``NDims`` outside 1..10, or one written with NUL bytes (``NDims\\0=-5``, MetaIO reads C strings), crashes
  the interpreter (segfault) -> the header must be plain text and every ``NDims`` 1..:data:`MAX_DIMS`,
  every ``DimSize`` that many positive numbers;
* an ``ElementDataFile`` holding ``%`` is passed to ``sprintf`` as a format (``%s``, ``%n`` crash) -> only a
  single ``%d``-style file-number pattern is accepted;
* ``CompressedDataSize`` bytes are allocated as told -> it must fit in the file;
* a zlib stream that asks for a preset dictionary makes it loop forever, other corrupt streams silently give
  garbage voxels -> a compressed ``LOCAL`` or single-file stream is decompressed here first (streaming,
  output counted not kept, at most the image byte limit).

Keys are found anywhere in the header, not only at line starts, because MetaIO reads a value and then
continues with whatever follows on the same line.
"""

from __future__ import annotations

import re
import zlib
from os import PathLike
from pathlib import Path

from imaging_pipelines.core.limits import max_image_bytes

MAX_DIMS = 8  # SimpleITK reads at most 5-D images; MetaIO itself breaks beyond 10
MAX_CHANNELS = 1024  # components per pixel
_KEY = re.compile(rb"(NDims|DimSize|ElementNumberOfChannels|ElementDataFile|CompressedDataSize|CompressedData)"
                  rb"[ \t]*=[ \t]*([^\r\n]*)", re.IGNORECASE)
_DATA_FILE_LINE = re.compile(rb"(?im)^[ \t]*ElementDataFile[ \t]*=[^\n]*(\n|$)")
_TEXT = re.compile(rb"^[\t\r\n\x20-\x7e]*$")
_DATA_FILE_PATTERN = re.compile(r"^[^%\s]*%0?\d*d[^%\s]*(\s+-?\d+){2,3}$")  # name%03d.raw min max step


def _header(raw: bytes) -> tuple[bytes, int] | str:
    """(header bytes, offset where LOCAL voxel data start) or the problem."""
    end = _DATA_FILE_LINE.search(raw)
    if end is None:
        return "header has no ElementDataFile line (or it is not within the first bytes read)"
    header = raw[:end.end()]
    if not _TEXT.match(header):
        return "header holds bytes that are not plain text (NUL or control characters)"
    return header, end.end()


def _values(header: bytes) -> dict[str, list[str]]:
    """Every value of the keys MetaIO sizes things from, by lower-case key, in order of appearance."""
    found: dict[str, list[str]] = {}
    for key, value in _KEY.findall(header):
        found.setdefault(key.decode().lower(), []).append(value.decode().strip())
    return found


def _structure_problem(values: dict[str, list[str]]) -> str | None:
    ndims_values = values.get("ndims") or []
    if not ndims_values:
        return "header has no NDims"
    ndims = None
    for text in ndims_values:
        token = text.split()[0] if text.split() else ""
        if not token.isdigit() or not 1 <= int(token) <= MAX_DIMS:
            return f"header NDims must be a whole number from 1 to {MAX_DIMS}"
        ndims = int(token) if ndims is None else ndims
    for text in values.get("dimsize") or []:
        sizes = text.split()[:ndims]
        if len(sizes) != ndims or not all(s.isdigit() and int(s) >= 1 for s in sizes):
            return f"header DimSize must be {ndims} positive whole numbers"
    for text in values.get("elementnumberofchannels") or []:
        token = text.split()[0] if text.split() else ""
        if not (token.isdigit() and 1 <= int(token) <= MAX_CHANNELS):
            return f"header ElementNumberOfChannels must be 1 to {MAX_CHANNELS}"
    for text in values.get("elementdatafile") or []:
        if not text:
            return "header ElementDataFile is empty"
        if "%" in text and not _DATA_FILE_PATTERN.match(text):
            return "header ElementDataFile holds a '%' that is not a single %d file-number pattern"
    return None


def _zlib_problem(fh, nbytes: int | None) -> str | None:
    """Why the zlib/gzip stream in the next ``nbytes`` of ``fh`` (None: to the end) is unusable, or None."""
    stream = zlib.decompressobj(wbits=47)  # zlib or gzip header, as MetaIO accepts
    limit, produced, left = max_image_bytes(), 0, nbytes
    try:
        while not stream.eof and (left is None or left > 0):
            chunk = fh.read(1 << 20 if left is None else min(1 << 20, left))
            if not chunk:
                break
            if left is not None:
                left -= len(chunk)
            while chunk and not stream.eof:
                produced += len(stream.decompress(chunk, 1 << 24))
                chunk = stream.unconsumed_tail
                if produced > limit:
                    return f"compressed voxel data expands to more than the {limit} bytes allowed"
    except zlib.error:
        return "compressed voxel data is corrupt (zlib)"
    return None if stream.eof else "compressed voxel data is truncated"


def _data_problem(path: str | PathLike, values: dict[str, list[str]], local_offset: int) -> str | None:
    """CompressedDataSize and the compressed stream (LOCAL data or a single data file)."""
    ref = values["elementdatafile"][0]
    if ref.upper() == "LOCAL":
        data_path, offset = Path(path), local_offset
    elif ref.upper().startswith("LIST") or "%" in ref or len(ref.split()) > 1:
        return None  # several data files: left to MetaIO
    else:
        data_path, offset = Path(path).resolve().parent / ref, 0
    if not data_path.is_file():
        return None  # MetaIO reports the missing file
    available = data_path.stat().st_size - offset
    size = None
    for text in values.get("compresseddatasize") or []:
        if not text.isdigit():
            return "header CompressedDataSize is not a whole number"
        size = int(text) if size is None else size
        if int(text) > available:
            return f"header claims CompressedDataSize = {int(text)} bytes but the file holds {max(0, available)}"
    if not any(v.split()[:1] and v.split()[0].lower() in ("true", "1") for v in values.get("compresseddata", [])):
        return None
    with open(data_path, "rb") as fh:
        fh.seek(offset)
        return _zlib_problem(fh, size)


def metaimage_problem(path: str | PathLike, raw: bytes) -> str | None:
    """Why the MetaImage whose first bytes are ``raw`` must not reach MetaIO, or None (see the module docstring)."""
    header = _header(raw)
    if isinstance(header, str):
        return header
    text, local_offset = header
    values = _values(text)
    return _structure_problem(values) or _data_problem(path, values, local_offset)
