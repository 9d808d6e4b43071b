"""Header edits that target what readers size their arrays from, per format (deterministic, like the byte mutators).

NIfTI-1/2 ``dim``/``datatype``/``bitpix``/``vox_offset``/scaling fields; DICOM elements written byte for byte
(``Rows``, ``Columns``, ``NumberOfFrames``, ``BitsAllocated``, geometry and scaling values, transfer syntax);
TIFF IFD entries (``ImageWidth``/``ImageLength``/``BitsPerSample``/tile and strip tags, GeoTIFF keys); lines of
NRRD and MetaImage text headers.
"""

from __future__ import annotations

import gzip
import io
import random
import struct
import zlib
from dataclasses import dataclass

from imaging_pipelines.tools.fuzz.byte_mutations import INTERESTING_FLOATS, INTERESTING_INTS, pack_int, flip_bits, write_int


# ------------------------------------------------------------------------------------------------ NIfTI
# name -> (offset, struct code, number of values) for NIfTI-1 (348-byte) and NIfTI-2 (540-byte) headers
NIFTI1_FIELDS = {
    "sizeof_hdr": (0, "i", 1), "dim_info": (39, "B", 1), "dim": (40, "h", 8), "intent_code": (68, "h", 1),
    "datatype": (70, "h", 1), "bitpix": (72, "h", 1), "slice_start": (74, "h", 1), "pixdim": (76, "f", 8),
    "vox_offset": (108, "f", 1), "scl_slope": (112, "f", 1), "scl_inter": (116, "f", 1),
    "slice_end": (120, "h", 1), "slice_code": (122, "B", 1), "xyzt_units": (123, "B", 1),
    "qform_code": (252, "h", 1), "sform_code": (254, "h", 1), "quatern_b": (256, "f", 3),
    "qoffset_x": (268, "f", 3), "srow_x": (280, "f", 12), "magic": (344, "4s", 1), "extension": (348, "B", 1),
}
NIFTI2_FIELDS = {
    "sizeof_hdr": (0, "i", 1), "magic": (4, "4s", 1), "datatype": (12, "h", 1), "bitpix": (14, "h", 1),
    "dim": (16, "q", 8), "pixdim": (104, "d", 8), "vox_offset": (168, "q", 1), "scl_slope": (176, "d", 1),
    "scl_inter": (184, "d", 1), "slice_start": (224, "q", 1), "slice_end": (232, "q", 1),
    "qform_code": (344, "i", 1), "sform_code": (348, "i", 1), "quatern_b": (352, "d", 3),
    "qoffset_x": (376, "d", 3), "srow_x": (400, "d", 12), "slice_code": (496, "i", 1),
    "xyzt_units": (500, "i", 1), "intent_code": (504, "i", 1), "dim_info": (524, "B", 1),
    "extension": (540, "B", 1),
}
NIFTI_DATATYPES = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 255, 3, -1)
NIFTI_DIM_VALUES = (0, 1, 2, 3, 4, 5, 7, 8, 9, 100, 32767, -1, -32768, 100000, 2**31 - 1, 2**40)


def nifti_layout(raw: bytes) -> tuple[dict, str] | None:
    """(field table, struct endianness '<' or '>') of an uncompressed NIfTI-1/2 header, or None."""
    if len(raw) < 4:
        return None
    for fields, size in ((NIFTI1_FIELDS, 348), (NIFTI2_FIELDS, 540)):
        for endian in ("<", ">"):
            if struct.unpack(endian + "i", raw[:4])[0] == size:
                return fields, endian
    return None


def nifti_set_field(raw: bytes, name: str, value, index: int = 0, layout: tuple[dict, str] | None = None) -> bytes:
    """``raw`` (uncompressed NIfTI) with value ``index`` of header field ``name`` set to ``value``.

    ``layout``: the header's (field table, byte order) from :func:`nifti_layout`, needed once ``sizeof_hdr``
    itself has been overwritten.
    """
    layout = layout or nifti_layout(raw)
    if layout is None:
        raise ValueError("not an uncompressed NIfTI-1/2 header")
    fields, endian = layout
    offset, code, count = fields[name]
    size = struct.calcsize(code)
    at = offset + size * min(index, count - 1)
    if code in "hiqB":
        packed = pack_int(int(value), size, endian == "<")
    else:
        try:
            packed = struct.pack(endian + code, value)
        except OverflowError:  # e.g. 1e308 into a float32 field: store infinity
            packed = struct.pack(endian + code, float("inf") if value > 0 else float("-inf"))
    buf = bytearray(raw.ljust(at + size, b"\0"))
    buf[at:at + size] = packed
    return bytes(buf)


def nifti_header_edit(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Set one NIfTI header field (dims, datatype, bitpix, offsets, scaling, ...) to a hostile value."""
    layout = nifti_layout(raw)
    if layout is None:
        return write_int(raw, rng)
    fields, _ = layout
    name = rng.choice(("dim", "dim", "dim", "datatype", "bitpix", "vox_offset", "vox_offset", "scl_slope",
                       "scl_inter", "pixdim", "qform_code", "sform_code", "srow_x", "quatern_b", "magic",
                       "sizeof_hdr", "slice_start", "slice_end", "slice_code", "dim_info", "xyzt_units",
                       "intent_code", "extension", "qoffset_x"))
    offset, code, count = fields[name]
    index = rng.randrange(count)
    if name == "dim":
        value = rng.choice(NIFTI_DIM_VALUES)
    elif name == "datatype":
        value = rng.choice(NIFTI_DATATYPES)
    elif name == "magic":
        value = rng.choice((b"n+1\0", b"ni1\0", b"n+2\0", b"\0\0\0\0", b"xyz\0"))
    elif name == "vox_offset" and code == "f":
        value = rng.choice((0.0, 1.0, 347.0, 352.0, 1e9, -352.0, float("nan"), float("inf"), 3e38))
    elif code in "fd":
        value = rng.choice(INTERESTING_FLOATS)
    else:
        value = rng.choice(INTERESTING_INTS)
    if code in "hiqB":  # keep to the field's width so the edit means what it says
        bits = 8 * struct.calcsize(code)
        value = int(value) % (1 << bits)
        if code != "B" and value >= 1 << (bits - 1):
            value -= 1 << bits
    return nifti_set_field(raw, name, value, index), f"nifti {name}[{index}] = {value!r}"


def gunzip_or_none(data: bytes) -> bytes | None:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return None


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (mtime 0, fast level)."""
    return gzip.compress(data, compresslevel=1, mtime=0)


# ------------------------------------------------------------------------------------------------ DICOM
# keyword -> (VR, hostile raw values); values are written as the raw element bytes (any string, any number)
DICOM_FIELD_VALUES: dict[str, tuple[str, tuple]] = {
    "Rows": ("US", (0, 1, 2, 3, 255, 4096, 32767, 65535)),
    "Columns": ("US", (0, 1, 2, 3, 255, 4096, 32767, 65535)),
    "NumberOfFrames": ("IS", ("0", "-1", "1", "2", "3", "7", "1000", "100000", "2147483647", "99999999999",
                              "abc", "", "1.5")),
    "BitsAllocated": ("US", (0, 1, 7, 8, 12, 16, 24, 32, 64, 65535)),
    "BitsStored": ("US", (0, 1, 7, 8, 12, 15, 16, 17, 32, 65535)),
    "HighBit": ("US", (0, 7, 11, 15, 16, 31, 65535)),
    "PixelRepresentation": ("US", (0, 1, 2, 65535)),
    "SamplesPerPixel": ("US", (0, 1, 2, 3, 4, 65535)),
    "PlanarConfiguration": ("US", (0, 1, 2)),
    "PhotometricInterpretation": ("CS", ("MONOCHROME1", "RGB", "YBR_FULL", "PALETTE COLOR", "", "XYZ")),
    "PixelSpacing": ("DS", ("0\\0", "-1\\1", "nan\\nan", "inf\\1", "1", "1\\1\\1", "abc\\1", "1e308\\1e308",
                            "1e-300\\1e-300")),
    "ImagePositionPatient": ("DS", ("0\\0", "nan\\0\\0", "inf\\inf\\inf", "1e308\\0\\0", "a\\b\\c", "",
                                    "-1e308\\1e308\\0")),
    "ImageOrientationPatient": ("DS", ("0\\0\\0\\0\\0\\0", "1\\0\\0\\1\\0\\0", "nan\\0\\0\\0\\1\\0",
                                       "1\\0\\0\\0\\1", "1e308\\0\\0\\0\\1e308\\0", "inf\\0\\0\\0\\1\\0",
                                       "1e-300\\0\\0\\0\\1e-300\\0")),
    "RescaleSlope": ("DS", ("0", "-1", "nan", "inf", "1e308", "1e-308", "abc", "0.5", "1e20")),
    "RescaleIntercept": ("DS", ("nan", "inf", "-1e308", "1e20", "-1024", "0.5", "x")),
    "SliceThickness": ("DS", ("0", "-5", "nan", "inf", "1e308")),
    "SpacingBetweenSlices": ("DS", ("0", "-5", "nan", "inf", "1e308")),
    "InstanceNumber": ("IS", ("-1", "99999999999", "x", "")),
    "AcquisitionNumber": ("IS", ("-1", "99999999999", "x", "2")),
    "EchoNumbers": ("IS", ("2", "x", "-1")),
    "TemporalPositionIdentifier": ("IS", ("2", "x", "99999999999")),
    "AcquisitionTime": ("TM", ("99", "ab", "999999.999999", "", "25", "1:2")),
    "ImageType": ("CS", ("ORIGINAL\\PRIMARY\\MOSAIC", "DERIVED", "", "MOSAIC")),
    "SOPClassUID": ("UI", ("", "1.2.3", "not a uid", "1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.88.11")),
    "SeriesInstanceUID": ("UI", ("", "1.2")),
    "StudyInstanceUID": ("UI", ("", "1.2")),
    "SeriesNumber": ("IS", ("x", "-1", "99999999999")),
    "RepetitionTime": ("DS", ("nan", "-1", "0", "inf", "x")),
}
TRANSFER_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
                     "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
                     "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5", "1.2.3.4", "")
_US_TAGS = {"Rows": b"\x28\x00\x10\x00", "Columns": b"\x28\x00\x11\x00", "BitsAllocated": b"\x28\x00\x00\x01",
            "BitsStored": b"\x28\x00\x01\x01", "SamplesPerPixel": b"\x28\x00\x02\x00",
            "PixelRepresentation": b"\x28\x00\x03\x01"}


def _raw_value(vr: str, value) -> bytes:
    if isinstance(value, int):
        return pack_int(value, 2 if vr == "US" else 4, True)
    raw = str(value).encode("latin-1")
    return raw + (b"\0" if vr == "UI" else b" ") * (len(raw) % 2)


def dicom_set_elements(data: bytes, edits: dict[str, object]) -> bytes:
    """Re-encode a DICOM file with the given top-level elements set to raw values (``None`` deletes one).

    Values are written byte for byte (not validated), so hostile values such as ``Rows=65535`` or
    ``PixelSpacing='nan\\\\0'`` reach the reader as they would from a broken file.
    """
    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    implicit, little = getattr(ds, "original_encoding", (False, True))
    implicit = bool(implicit) if implicit is not None else False
    little = bool(little) if little is not None else True
    for keyword, value in edits.items():
        if isinstance(keyword, tuple):
            tag, vr = Tag(keyword), "US"
        else:
            tag = Tag(keyword)
            vr = DICOM_FIELD_VALUES.get(keyword, (pydicom.datadict.dictionary_VR(tag), ()))[0]
        if value is None:
            if tag in ds:
                del ds[tag]
            continue
        raw = _raw_value(vr, value)
        if isinstance(value, int) and not little:
            raw = raw[::-1]
        ds[tag] = RawDataElement(tag, vr, len(raw), raw, 0, implicit, little)
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=False, implicit_vr=implicit, little_endian=little)
    return out.getvalue()


def dicom_header_edit(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Set one to three header elements to hostile values, or delete one (via pydicom, byte-exact values)."""
    edits: dict[str, object] = {}
    for _ in range(rng.choice((1, 1, 2, 3))):
        keyword = rng.choice(list(DICOM_FIELD_VALUES))
        edits[keyword] = rng.choice(DICOM_FIELD_VALUES[keyword][1])
    if rng.random() < 0.1:
        edits[rng.choice(("PixelData", "Rows", "Columns", "BitsAllocated", "ImageOrientationPatient",
                          "ImagePositionPatient", "PixelSpacing", "SOPClassUID"))] = None
    if rng.random() < 0.1:  # a Siemens mosaic header with a hostile tile count
        edits["ImageType"] = "ORIGINAL\\PRIMARY\\MOSAIC"
        edits[(0x0019, 0x100A)] = rng.choice((0, 1, 4, 9, 100, 4096, 65535))
    try:
        return dicom_set_elements(data, edits), f"dicom set {edits}"
    except Exception:  # not parseable enough to re-encode: damage the bytes instead
        return write_int(data, rng)


def dicom_raw_us_edit(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Overwrite the 2-byte value of a US element (Rows, Columns, BitsAllocated, ...) found by its tag bytes."""
    keyword = rng.choice(list(_US_TAGS))
    at = data.find(_US_TAGS[keyword])
    if at < 0:
        return flip_bits(data, rng)
    value_at = at + 8  # explicit VR: tag, VR, 2-byte length; implicit VR: tag, 4-byte length
    value = rng.choice((0, 1, 65535, 32768, rng.randrange(65536)))
    return data[:value_at] + pack_int(value, 2, True) + data[value_at + 2:], f"dicom raw {keyword} = {value}"


def dicom_transfer_syntax_edit(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Declare another transfer syntax than the one the data set is encoded in."""
    at = data.find(b"\x02\x00\x10\x00UI")
    if at < 0:
        return flip_bits(data, rng)
    length = int.from_bytes(data[at + 6:at + 8], "little")
    uid = rng.choice(TRANSFER_SYNTAXES).encode()
    uid += b"\0" * (len(uid) % 2)
    new = data[:at + 6] + len(uid).to_bytes(2, "little") + uid + data[at + 8 + length:]
    return new, f"dicom transfer syntax = {uid.rstrip(bytes(1)).decode() or 'empty'}"


# ------------------------------------------------------------------------------------------------ TIFF
TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8, 17: 8, 18: 8}
TIFF_SIZE_TAGS = (256, 257, 258, 259, 273, 277, 278, 279, 284, 317, 322, 323, 324, 325, 338, 339)
TIFF_GEO_TAGS = (33550, 33922, 34264, 34735, 34736, 34737, 42112, 42113)


@dataclass(frozen=True)
class TiffEntry:
    """One IFD entry: where it is, and where its first value is (inline or at an offset)."""

    entry_at: int
    tag: int
    type: int
    count: int
    value_at: int
    big: bool


def tiff_entries(data: bytes, max_ifds: int = 4) -> tuple[list[TiffEntry], str]:
    """Entries of the first IFDs of a classic or BigTIFF file and its byte order ('<' or '>')."""
    if data[:2] not in (b"II", b"MM") or len(data) < 16:
        return [], "<"
    e = "<" if data[:2] == b"II" else ">"
    magic = struct.unpack(e + "H", data[2:4])[0]
    big = magic == 43
    ifd = struct.unpack(e + ("Q" if big else "I"), data[8:16] if big else data[4:8])[0]
    entries: list[TiffEntry] = []
    seen = set()
    for _ in range(max_ifds):
        if not ifd or ifd in seen or ifd + 8 > len(data):
            break
        seen.add(ifd)
        n = struct.unpack(e + ("Q" if big else "H"), data[ifd:ifd + (8 if big else 2)])[0]
        start, size = ifd + (8 if big else 2), (20 if big else 12)
        n = min(n, max(0, (len(data) - start) // size))
        for i in range(n):
            at = start + i * size
            if big:
                tag, typ, count = struct.unpack(e + "HHQ", data[at:at + 12])
                field, inline = at + 12, 8
            else:
                tag, typ, count = struct.unpack(e + "HHI", data[at:at + 8])
                field, inline = at + 8, 4
            nbytes = TIFF_TYPE_SIZES.get(typ, 1) * count
            if nbytes <= inline:
                value_at = field
            else:
                value_at = struct.unpack(e + ("Q" if big else "I"), data[field:field + inline])[0]
            entries.append(TiffEntry(at, tag, typ, count, value_at, big))
        next_at = start + n * size
        fmt = "Q" if big else "I"
        if next_at + struct.calcsize(fmt) > len(data):
            break
        ifd = struct.unpack(e + fmt, data[next_at:next_at + struct.calcsize(fmt)])[0]
    return entries, e


def tiff_set_value(data: bytes, entry: TiffEntry, value: int, endian: str, index: int = 0) -> bytes:
    """Set value ``index`` of an integer-typed entry (others: its first bytes) to ``value``."""
    size = TIFF_TYPE_SIZES.get(entry.type, 4) if entry.type in (1, 3, 4, 6, 8, 9, 16, 17) else 4
    at = entry.value_at + size * index
    if at < 0 or at + size > len(data):
        return data
    return data[:at] + pack_int(value, size, endian == "<") + data[at + size:]


def tiff_set_tag(data: bytes, tag: int, value: int, index: int = 0) -> bytes:
    """``data`` with value ``index`` of every IFD entry ``tag`` set to ``value`` (e.g. 256 = ImageWidth).

    A single inline SHORT too small for ``value`` becomes a LONG, so e.g. a width of 1,000,000 can be claimed.
    """
    entries, endian = tiff_entries(data)
    for entry in entries:
        if entry.tag != tag:
            continue
        if entry.type == 3 and entry.count == 1 and value > 0xFFFF and entry.value_at == entry.entry_at + 8:
            data = data[:entry.entry_at + 2] + struct.pack(endian + "H", 4) + data[entry.entry_at + 4:]
            entry = TiffEntry(entry.entry_at, tag, 4, 1, entry.value_at, entry.big)
        data = tiff_set_value(data, entry, value, endian, index)
    return data


def tiff_tag_edit(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Edit one IFD entry: its value (size, layout, offsets, geokeys), count, type or tag number."""
    entries, endian = tiff_entries(data)
    if not entries:
        return write_int(data, rng)
    preferred = [x for x in entries if x.tag in TIFF_SIZE_TAGS + TIFF_GEO_TAGS]
    entry = rng.choice(preferred if preferred and rng.random() < 0.85 else entries)
    action = rng.choices(("value", "count", "type", "tag"), weights=(8, 1, 1, 1))[0]
    cfmt = "Q" if entry.big else "I"
    if action == "value":
        value = rng.choice(INTERESTING_INTS + (rng.randrange(1 << 16),))
        index = rng.randrange(max(1, min(entry.count, 8)))
        return tiff_set_value(data, entry, value, endian, index), f"tiff tag {entry.tag}[{index}] = {value}"
    if action == "count":
        value = rng.choice((0, 1, 2, 255, 65535, 2**31 - 1, 2**32 - 1))
        at = entry.entry_at + 4
        return data[:at] + struct.pack(endian + cfmt, value) + data[at + struct.calcsize(cfmt):], \
            f"tiff tag {entry.tag} count = {value}"
    if action == "type":
        value = rng.choice((0, 1, 2, 3, 4, 5, 7, 11, 12, 13, 16, 19, 255))
        at = entry.entry_at + 2
        return data[:at] + struct.pack(endian + "H", value) + data[at + 2:], f"tiff tag {entry.tag} type = {value}"
    value = rng.choice(TIFF_SIZE_TAGS + TIFF_GEO_TAGS + (0, 65535))
    at = entry.entry_at
    return data[:at] + struct.pack(endian + "H", value) + data[at + 2:], f"tiff tag {entry.tag} renamed {value}"


# ------------------------------------------------------------------------------------------------ NRRD / MetaImage
HOSTILE_TOKENS = (b"0", b"-1", b"1", b"2", b"17", b"100000", b"4294967297", b"99999999999999999999", b"nan", b"inf",
                  b"1e309", b"-0", b"", b"x", b"LIST", b"LOCAL", b"(nan,0,0)", b"none", b"%d")


def _header_end(data: bytes) -> int:
    """Where the text header of a NRRD (blank line) or MetaImage (after ElementDataFile) ends."""
    if data.startswith(b"NRRD"):
        end = data.find(b"\n\n")
        return len(data) if end < 0 else end + 1
    at = data.find(b"ElementDataFile")
    if at < 0:
        return min(len(data), 4096)
    end = data.find(b"\n", at)
    return len(data) if end < 0 else end + 1


def text_header_edit(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Change one ``key: value`` / ``Key = value`` line of a NRRD or MetaImage header (value tokens, or the line)."""
    end = _header_end(data)
    lines = data[:end].split(b"\n")
    fields = [i for i, line in enumerate(lines) if b":" in line or b"=" in line]
    if not fields:
        return write_int(data, rng)
    i = rng.choice(fields)
    sep = b"=" if b"=" in lines[i] and not data.startswith(b"NRRD") else b":"
    key, _, value = lines[i].partition(sep)
    tokens = value.split()
    action = rng.choice(("token", "token", "token", "drop", "add", "value", "delete", "duplicate"))
    if action == "token" and tokens:
        tokens[rng.randrange(len(tokens))] = rng.choice(HOSTILE_TOKENS)
    elif action == "drop" and tokens:
        tokens.pop(rng.randrange(len(tokens)))
    elif action == "add":
        tokens.insert(rng.randrange(len(tokens) + 1), rng.choice(HOSTILE_TOKENS))
    elif action == "value":
        tokens = [rng.choice(HOSTILE_TOKENS)]
    if action == "delete":
        del lines[i]
    elif action == "duplicate":
        lines.insert(i, lines[i])
    else:
        lines[i] = key + sep + b" " + b" ".join(tokens)
    what = f"header line {key.strip().decode('latin-1')!r}: {action}"
    return b"\n".join(lines) + data[end:], what
