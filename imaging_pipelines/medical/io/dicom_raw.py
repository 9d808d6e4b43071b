"""A raw DICOM header scan (no pydicom import) for the common case: uncompressed little-endian files.

:func:`parse` walks the data elements of a Part 10 file in explicit or implicit VR little endian, keeps only
the wanted tags and converts their values as pydicom 3 does (``DS`` -> float, ``IS`` -> int, several values ->
list, text stripped of padding, binary VRs -> bytes, empty text -> ``''``, other empty values -> None). The
result, :class:`RawDataset`, answers the parts of the pydicom ``Dataset`` interface the DICOM reader uses
(``get``, ``in``, attribute access, ``[tag]`` -> element with ``.value`` / ``.VR``, ``keys()``, ``file_meta``).

Whenever the file is outside what this scan reproduces exactly, :func:`parse` returns None and the caller
parses the file with pydicom instead: no DICM preamble, another transfer syntax (deflated, big endian,
compressed other than single-frame 16-bit greyscale JPEG 2000), a wanted element that is a sequence, ``UN``, ``PN`` or ``AT``, a wanted private element in implicit
VR (its VR would come from pydicom's private dictionary), a value pydicom would warn about or reject, a
character set other than the default / ISO_IR 100 / ISO_IR 192, or a length that runs past the end of the file.
Importing pydicom costs more than converting a 150-file series this way (see bench/README.md).
"""

from __future__ import annotations

from struct import Struct
from typing import Any

from .dicom_raw_tags import KEYWORD_TAGS, TAG_KEYWORDS

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
JPEG2000_SYNTAXES = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}  # lossless only, lossy or lossless
PIXEL_DATA = 0x7FE00010
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_SHORT_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH",
              b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
_STRING_VRS = {"AE", "AS", "CS", "DA", "DT", "TM"}  # default character repertoire, split at '\'
_TEXT_VRS = {"SH", "LO", "UC"}  # specific character set, split at '\', each value stripped
_SINGLE_TEXT_VRS = {"ST", "LT", "UT", "UR"}  # specific character set, one value
_BYTES_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "OB or OW"}
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
_EMPTY_TEXT = _STRING_VRS | _TEXT_VRS | _SINGLE_TEXT_VRS | {"UI"}
_ENCODINGS = {"": "latin_1", "ISO_IR 6": "latin_1", "ISO 2022 IR 6": "latin_1", "ISO_IR 100": "latin_1",
              "ISO_IR 192": "utf_8"}
_TAG_VR16 = Struct("<HH2sH")
_TAG_LEN32 = Struct("<HHI")
_U32 = Struct("<I")
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_CHARSET = 0x00080005


class Unsupported(Exception):
    """The file needs pydicom (see the module docstring)."""


class Tag(int):
    """A tag as an int, with pydicom's ``group`` / ``elem`` accessors."""

    @property
    def group(self) -> int:
        return self >> 16

    @property
    def elem(self) -> int:
        return self & 0xFFFF


class RawElement:
    """One data element: ``tag``, ``VR`` (str) and its converted ``value``."""

    __slots__ = ("tag", "VR", "value")

    def __init__(self, tag: int, vr: str, value: Any) -> None:
        self.tag, self.VR, self.value = Tag(tag), vr, value


class RawDataset:
    """The wanted elements of one file, indexed like a pydicom ``Dataset`` (keywords give values, tags give
    elements); ``file_meta`` holds the file meta information values by keyword."""

    def __init__(self, elements: dict[int, RawElement], file_meta: dict[str, Any]) -> None:
        self._elements = elements
        self.file_meta = file_meta
        self.filename: str | None = None  # set by the caller: where pydicom can read the file again
        self.pixel_offset: int | None = None  # byte offset of a native (defined-length) PixelData value in the file
        self.file_stamp: tuple[int, int] | None = None  # (size in bytes, mtime ns) of the file when it was read

    @staticmethod
    def _tag(key: Any) -> int | None:
        if isinstance(key, str):
            entry = KEYWORD_TAGS.get(key)
            return entry[0] if entry else None
        if isinstance(key, tuple):
            return (key[0] << 16) | key[1]
        return int(key)

    def get(self, key: Any, default: Any = None) -> Any:
        elem = self._elements.get(self._tag(key))  # type: ignore[arg-type]
        if elem is None:
            return default
        return elem.value if isinstance(key, str) else elem

    def __contains__(self, key: Any) -> bool:
        return self._tag(key) in self._elements

    def __getitem__(self, key: Any) -> RawElement:
        return self._elements[self._tag(key)]  # type: ignore[index]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in KEYWORD_TAGS:
            raise AttributeError(name)
        elem = self._elements.get(KEYWORD_TAGS[name][0])
        if elem is None:
            raise AttributeError(name)
        return elem.value

    def keys(self) -> list[int]:
        return list(self._elements)

    def group_dataset(self, group: int) -> list[RawElement]:
        """The elements of one group in tag order (what nibabel's CSA reader looks the private creator up in)."""
        return [self._elements[t] for t in sorted(self._elements) if t >> 16 == group]

    def __iter__(self):
        return iter(list(self._elements.values()))


def parse(buf: bytes, wanted: frozenset[int]) -> RawDataset | None:
    """The ``wanted`` elements (int tags) of the Part 10 file held in ``buf``, or None when the file needs pydicom."""
    try:
        return _parse(buf, wanted)
    except MemoryError:
        raise
    except Exception:  # Unsupported, or any surprise of a malformed file: pydicom parses it and words the error
        return None


def _parse(buf: bytes, wanted: frozenset[int]) -> RawDataset:
    if len(buf) < 132 or buf[128:132] != b"DICM":
        raise Unsupported("no DICM preamble")
    meta_raw, pos = _scan(buf, 132, True, None, group_limit=0x0002)
    meta = {TAG_KEYWORDS.get(t, str(t)): _value(t, vr, raw, "latin_1") for t, (vr, raw) in meta_raw.items()
            if t in (0x00020002, 0x00020010)}
    syntax = meta.get("TransferSyntaxUID")
    encapsulated = syntax in JPEG2000_SYNTAXES
    if syntax not in (EXPLICIT_LE, IMPLICIT_LE) and not encapsulated:
        raise Unsupported("transfer syntax")
    explicit = syntax != IMPLICIT_LE
    offsets: dict[int, int] = {}
    raw, _ = _scan(buf, pos, explicit, wanted | {_CHARSET}, encapsulated=encapsulated, offsets=offsets)
    charset = raw.pop(_CHARSET, None)
    encoding = "latin_1"
    if charset is not None:
        name = _value(_CHARSET, "CS", charset[1], "latin_1")
        if not isinstance(name, str) or name not in _ENCODINGS:
            raise Unsupported("character set")
        encoding = _ENCODINGS[name]
    elements = {t: RawElement(t, vr, _value(t, vr, value, encoding)) for t, (vr, value) in raw.items()}
    if charset is not None:
        elements[_CHARSET] = RawElement(_CHARSET, "CS", _value(_CHARSET, "CS", charset[1], "latin_1"))
    ds = RawDataset(elements, meta)
    if not encapsulated:
        ds.pixel_offset = offsets.get(PIXEL_DATA)
    if encapsulated and PIXEL_DATA in elements and not single_frame_greyscale_16(ds):
        raise Unsupported("JPEG 2000 image other than single-frame 16-bit greyscale")
    return ds


def single_frame_greyscale_16(ds: RawDataset) -> bool:
    """The JPEG 2000 images :mod:`~imaging_pipelines.medical.io.dicom_j2k` decodes without pydicom."""
    return (ds.get("SamplesPerPixel") == 1 and ds.get("NumberOfFrames") in (None, "", 1)
            and ds.get("BitsAllocated") == 16 and ds.get("PhotometricInterpretation") in ("MONOCHROME1", "MONOCHROME2")
            and ds.get("PixelRepresentation") in (0, 1) and ds[PIXEL_DATA].VR == "OB")


def _scan(buf: bytes, pos: int, explicit: bool, wanted: frozenset[int] | None,
          group_limit: int | None = None, encapsulated: bool = False,
          offsets: dict[int, int] | None = None) -> tuple[dict[int, tuple[str, bytes]], int]:
    """Walk top-level elements from ``pos``; returns ({tag: (VR, value bytes)} of the wanted ones, end position).
    ``offsets``, when given, receives the position in ``buf`` of a defined-length PixelData value.
    ``wanted`` None keeps every element (file meta group); ``group_limit`` stops at the first tag of a later group;
    ``encapsulated``: PixelData of undefined length is kept as pydicom keeps it (items, without the delimiter).
    (The element header is decoded inline: this loop runs for every element of every file.)"""
    out: dict[int, tuple[str, bytes]] = {}
    n = len(buf)
    last = max(wanted) if wanted else 0xFFFFFFFF
    vr16, len32, u32 = _TAG_VR16.unpack_from, _TAG_LEN32.unpack_from, _U32.unpack_from
    short_vrs, long_vrs = _SHORT_VRS, _LONG_VRS
    while pos + 8 <= n:
        if explicit:
            group, elem, vr_bytes, length = vr16(buf, pos)
            if group_limit is not None and group != group_limit:
                break
            if vr_bytes in short_vrs:
                value_pos = pos + 8
            elif vr_bytes in long_vrs:
                length, value_pos = u32(buf, pos + 8)[0], pos + 12
            elif group == 0xFFFE:
                raise Unsupported("item outside a sequence")
            else:
                raise Unsupported("unknown VR")
        else:
            group, elem, length = len32(buf, pos)
            vr_bytes, value_pos = None, pos + 8
        if group_limit is not None and group != group_limit:
            break
        tag = (group << 16) | elem
        if tag > last:
            break
        if group == 0xFFFE:
            raise Unsupported("item outside a sequence")
        keep = wanted is None or tag in wanted
        if length == _UNDEFINED:
            if keep and not (encapsulated and tag == PIXEL_DATA):
                raise Unsupported("wanted element of undefined length (sequence or encapsulated data)")
            pos = _skip_undefined(buf, value_pos, explicit)
            if keep:
                out[tag] = (vr_bytes.decode() if vr_bytes else "OB", buf[value_pos:pos - 8])
            continue
        pos = value_pos + length
        if pos > n:
            raise Unsupported("element runs past the end of the file")
        if keep:
            out[tag] = (_implicit_vr(tag) if vr_bytes is None else vr_bytes.decode(), buf[value_pos:pos])
            if tag == PIXEL_DATA and offsets is not None:
                offsets[tag] = value_pos
    return out, pos


def _implicit_vr(tag: int) -> str:
    """The VR of a wanted element in implicit VR: from the data dictionary (public elements only)."""
    if tag & 0x00010000:
        raise Unsupported("private element in implicit VR")
    keyword = TAG_KEYWORDS.get(tag)
    if keyword is None:
        raise Unsupported("VR unknown")
    vr = KEYWORD_TAGS[keyword][1]
    return "OW" if vr == "OB or OW" else vr  # implicit VR pixel data is OW (PS3.5 A.1), as pydicom sets it


def _header(buf: bytes, pos: int, explicit: bool) -> tuple[int, str | None, int, int]:
    """(tag, VR or None in implicit VR, value length, position of the value) of the element at ``pos``."""
    if explicit:
        group, elem, vr_bytes, short = _TAG_VR16.unpack_from(buf, pos)
        tag = (group << 16) | elem
        if group == 0xFFFE:
            return tag, None, _U32.unpack_from(buf, pos + 4)[0], pos + 8
        if vr_bytes in _LONG_VRS:
            return tag, vr_bytes.decode(), _U32.unpack_from(buf, pos + 8)[0], pos + 12
        if vr_bytes in _SHORT_VRS:
            return tag, vr_bytes.decode(), short, pos + 8
        raise Unsupported("unknown VR")
    group, elem, length = _TAG_LEN32.unpack_from(buf, pos)
    return (group << 16) | elem, None, length, pos + 8


def _skip_undefined(buf: bytes, pos: int, explicit: bool) -> int:
    """Position after an undefined-length value (a sequence's items, or encapsulated fragments) starting at ``pos``."""
    n = len(buf)
    while pos + 8 <= n:
        group, elem, length = _TAG_LEN32.unpack_from(buf, pos)
        tag = (group << 16) | elem
        pos += 8
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            raise Unsupported("unexpected element in a sequence")
        if length != _UNDEFINED:
            pos += length
            continue
        while True:  # an item of undefined length: its elements up to the item delimiter
            if pos + 8 > n:
                raise Unsupported("truncated sequence item")
            tag, _, length, value_pos = _header(buf, pos, explicit)
            if tag == _ITEM_END:
                pos = value_pos
                break
            pos = _skip_undefined(buf, value_pos, explicit) if length == _UNDEFINED else value_pos + length
    raise Unsupported("sequence runs past the end of the file")


def _value(tag: int, vr: str, raw: bytes, encoding: str) -> Any:
    """The element value as pydicom 3 converts it (default configuration)."""
    if not raw:
        return "" if vr in _EMPTY_TEXT else None
    if vr in _BYTES_VRS:
        return raw
    if vr in _NUMBER_FORMATS:
        fmt = _NUMBER_FORMATS[vr]
        size = Struct("<" + fmt).size
        if len(raw) % size:
            raise Unsupported("length not a multiple of the value size")
        values = Struct(f"<{len(raw) // size}{fmt}").unpack(raw)
        return values[0] if len(values) == 1 else list(values)
    if vr in _STRING_VRS or vr == "UI":
        text = raw.decode("latin_1")
        text = text.rstrip("\0 ") if vr == "UI" else text
        return _split(text.rstrip(" \x00"), str)
    if vr == "DS":
        return _split(raw.decode("latin_1").rstrip(" \x00"), _ds)
    if vr == "IS":
        return _split(raw.decode("latin_1").rstrip(" \x00"), _is)
    if vr in _TEXT_VRS:
        values = [v.rstrip("\0 ") for v in raw.decode(encoding).split("\\")]
        return values[0] if len(values) == 1 else values
    if vr in _SINGLE_TEXT_VRS:
        return raw.decode(encoding).rstrip("\0 ")
    raise Unsupported(f"VR {vr}")


def _split(text: str, kind: Any) -> Any:
    items = text.split("\\")
    return kind(items[0]) if len(items) == 1 else [kind(v) for v in items]


def _ds(text: str) -> float:
    """A DS value (pydicom: ``float``); empty values, NaN, infinities and other characters need pydicom."""
    s = text.strip(" ")
    if not s or any(c not in "0123456789+-eE." for c in s):
        raise Unsupported("DS value outside the standard")
    return float(s)


def _is(text: str) -> int:
    """An IS value (pydicom: ``int``); empty, decimal or other values need pydicom."""
    s = text.strip(" ")
    if not s or any(c not in "0123456789+-" for c in s):
        raise Unsupported("IS value outside the standard")
    return int(s)
