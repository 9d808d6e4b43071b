"""Is a DICOM series whole, and sent once? Checked on the headers before any series is assembled.

A hospital inbox receives series file by file; a transfer can stop half way, and a series can be sent twice.
Read as they are, the first gives a volume with slices missing and the second a 4D series whose "time points"
are two versions of the same images. So, per SeriesInstanceUID:

- **Duplicates.** Files with the same SOPInstanceUID: identical pixel data -> one copy is kept (a note);
  different pixel data -> the series fails, naming both files.
- **Completeness.** A series is incomplete when
  - its InstanceNumbers have gaps and its slice positions have a gap too (or carry no positions);
  - the slice positions along the slice normal (mm, LPS) have a gap wider than 1.5 x the typical spacing,
    or a position holds fewer images than the others (a 4D series with a time point missing);
  - it has fewer images than its ImagesInAcquisition (0020,1002) says (single acquisition);
  - a multi-frame file holds fewer bytes of native pixel data than its NumberOfFrames needs.
  An incomplete series fails with a message saying what is missing (``allow_incomplete`` turns that into a
  note). Files still being copied are not read at all: the inbox listing waits until they are quiescent.

The same header read finds images whose pixels may show identifying text (:mod:`burned_in`): their series is
quarantined (not read; a note) unless ``allow_burned_in``.

Messages name files by their inbox path (``shown``) and never carry header values (no UIDs).
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pydicom

from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.medical.io.burned_in import TAGS as BURNED_IN_TAGS
from imaging_pipelines.medical.io.burned_in import burned_in_reason
from imaging_pipelines.medical.io.dicom_header import SizeCappedFile

GAP_FACTOR = 1.5  # a step this many times the typical slice spacing means slices are missing
_TAGS = ["SOPInstanceUID", "SeriesInstanceUID", "SeriesNumber", "InstanceNumber", "ImagePositionPatient",
         "ImageOrientationPatient", "NumberOfFrames", "ImagesInAcquisition", "AcquisitionNumber", "Rows",
         "Columns", "BitsAllocated", "SamplesPerPixel", *BURNED_IN_TAGS]


@dataclass
class _Header:
    path: str
    sop: str
    series: str
    number: str
    instance: int | None
    position: np.ndarray | None
    orientation: tuple | None
    frames: int
    in_acquisition: int | None
    acquisition: str
    burned_in: str | None = None


@dataclass
class IntegrityOutcome:
    """``keep``: the files to read (duplicates of identical content dropped); ``notes``: what was dropped or
    allowed."""

    keep: list[str]
    notes: list[str] = field(default_factory=list)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _header(path: str) -> _Header | None:
    """The file's header fields, or None when it is not DICOM or any of them is malformed (pydicom converts
    values when they are first read: that is inside this guard); the series reader then reports the file."""
    try:
        return _read_header(path)
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - not DICOM or unreadable: the series reader reports it
        return None


def _dcmread(path: str, **kwargs):
    """``pydicom.dcmread`` through a file whose reads stop at its end, so a corrupt length field cannot make
    pydicom allocate more than the file holds."""
    with SizeCappedFile(open(path, "rb")) as fp:
        return pydicom.dcmread(fp, **kwargs)


def _read_header(path: str) -> _Header | None:
    ds = _dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
    sop, series = str(ds.get("SOPInstanceUID", "") or ""), str(ds.get("SeriesInstanceUID", "") or "")
    if not sop or not series:
        return None
    position = orientation = None
    try:
        if ds.get("ImagePositionPatient") is not None and ds.get("ImageOrientationPatient") is not None:
            position = np.asarray([float(v) for v in ds.ImagePositionPatient], float)
            orientation = tuple(round(float(v), 3) for v in ds.ImageOrientationPatient)
            if position.shape != (3,) or len(orientation) != 6 or not np.isfinite([*position, *orientation]).all():
                position = orientation = None
    except (TypeError, ValueError):
        position = orientation = None
    return _Header(path, sop, series, str(ds.get("SeriesNumber", "") or "?"), _int(ds.get("InstanceNumber")),
                   position, orientation, _int(ds.get("NumberOfFrames")) or 1, _int(ds.get("ImagesInAcquisition")),
                   str(ds.get("AcquisitionNumber", "") or ""), burned_in_reason(ds))


def _looks_like_dicom(path: str) -> bool:
    """The DICM magic at byte 128 (a file cut before it, such as one still being copied, does not qualify)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _pixel_digest(path: str, shown: Callable[[str], str]) -> str:
    try:
        ds = _dcmread(path)
        data = ds.get("PixelData")
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged copy: name it
        raise ImagingInputError(shown(path), f"cannot read its pixel data ({type(exc).__name__})") from None
    return hashlib.sha256(bytes(data) if data is not None else b"").hexdigest()


def _deduplicate(headers: list[_Header], shown: Callable[[str], str], notes: list[str]) -> list[_Header]:
    by_sop: dict[str, list[_Header]] = defaultdict(list)
    for h in headers:
        by_sop[h.sop].append(h)
    kept = []
    for copies in by_sop.values():
        first = copies[0]
        for other in copies[1:]:
            if _pixel_digest(other.path, shown) != _pixel_digest(first.path, shown):
                raise ImagingInputError(shown(first.path), (
                    f"series {first.number}: the same image (SOPInstanceUID) was received twice with different "
                    f"pixel data: {shown(first.path)} and {shown(other.path)}; remove the wrong copy"))
            notes.append(f"{shown(other.path)}: identical copy of {shown(first.path)} (same SOPInstanceUID); ignored")
        kept.append(first)
    return kept


def _position_problems(headers: list[_Header], shown: Callable[[str], str]) -> tuple[list[str], bool]:
    """(problems, whether positions were usable) for single-frame images, per orientation."""
    with_pos = [h for h in headers if h.position is not None and h.frames == 1]
    if len(with_pos) < 3 or len(with_pos) < len(headers):
        return [], False
    problems = []
    groups: dict[tuple, list[_Header]] = defaultdict(list)
    for h in with_pos:
        groups[h.orientation].append(h)
    for orientation, members in groups.items():
        normal = np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))
        at: dict[float, list[_Header]] = defaultdict(list)
        for h in members:
            at[round(float(h.position @ normal), 3)].append(h)
        counts = {len(v) for v in at.values()}
        if len(counts) > 1:
            most = max(counts)
            short = sorted(p for p, v in at.items() if len(v) < most)
            problems.append(f"{len(short)} slice position(s) hold fewer images than the others ({most}), e.g. "
                            f"{short[0]:.3f} mm")
        positions = sorted(at)
        if len(positions) < 3:
            continue
        steps = np.diff(positions)
        typical = float(np.median(steps))
        for n in np.flatnonzero(steps > GAP_FACTOR * typical)[:3]:
            before, after = at[positions[n]][0], at[positions[n + 1]][0]
            missing = int(round(steps[n] / typical)) - 1 if typical > 0 else 0
            problems.append(f"gap of {steps[n]:.3f} mm between {shown(before.path)} and {shown(after.path)} "
                            f"(spacing {typical:.3f} mm): about {max(missing, 1)} slice(s) missing")
    return problems, True


def _completeness(headers: list[_Header], shown: Callable[[str], str]) -> list[str]:
    problems, positioned = _position_problems(headers, shown)
    numbers = [h.instance for h in headers if h.frames == 1]
    if len(numbers) >= 3 and None not in numbers and len(set(numbers)) == len(numbers):
        low, high = min(numbers), max(numbers)
        n_missing = high - low + 1 - len(numbers)
        if n_missing and (problems or not positioned):
            if n_missing <= 10:
                shown_missing = ", ".join(map(str, sorted(set(range(low, high + 1)) - set(numbers))))
            else:  # never enumerate a range a corrupt header may make huge
                shown_missing = f"{n_missing} numbers"
            problems.append(f"InstanceNumber(s) {shown_missing} missing of {low}..{high}")
    acquisitions = {h.acquisition for h in headers}
    expected = {h.in_acquisition for h in headers} - {None, 0}
    if len(acquisitions) == 1 and len(expected) == 1 and len(headers) < next(iter(expected)):
        problems.append(f"{len(headers)} of the {next(iter(expected))} images its ImagesInAcquisition announces")
    for h in headers:
        if h.frames > 1:
            problem = _frames_problem(h)
            if problem:
                problems.append(f"{shown(h.path)}: {problem}")
    return problems


def _frames_problem(h: _Header) -> str | None:
    """A multi-frame file with less native pixel data than NumberOfFrames needs (encapsulated data: None)."""
    try:
        ds = _dcmread(h.path, stop_before_pixels=False, defer_size=1024)
        if ds.file_meta.TransferSyntaxUID.is_encapsulated:
            return None
        raw = ds.get_item(0x7FE00010)
        bits, rows, cols = int(ds.BitsAllocated), int(ds.Rows), int(ds.Columns)
        per_frame = rows * cols * int(ds.get("SamplesPerPixel", 1) or 1) * bits // 8
    except Exception:  # noqa: BLE001 - the series reader reports unreadable files
        return None
    length = getattr(raw, "length", None) if raw is not None else 0
    if bits < 8 or not per_frame or length is None or length == 0xFFFFFFFF:
        return None
    if length < per_frame * h.frames:
        return f"{length // per_frame} of the {h.frames} frames its NumberOfFrames announces"
    return None


def check_series_integrity(paths: list[str | os.PathLike], shown: Callable[[str], str] = os.path.basename,
                           allow_incomplete: bool = False, allow_burned_in: bool = False) -> IntegrityOutcome:
    """Check the DICOM files ``paths`` series by series (module docstring). Returns the files to read (without
    quarantined series unless ``allow_burned_in``); raises :class:`ImagingInputError` naming the files for a
    duplicate with different pixels, and for an incomplete series unless ``allow_incomplete`` (then a note).
    Files that are not DICOM are passed on untouched."""
    paths = [os.fspath(p) for p in paths]
    headers = {p: _header(p) for p in paths}
    by_series: dict[str, list[_Header]] = defaultdict(list)
    for h in headers.values():
        if h is not None:
            by_series[h.series].append(h)
    notes: list[str] = []
    keep = {p for p, h in headers.items() if h is None}
    # a DICOM file whose header cannot be read (truncated, damaged) fails in the series reader with its own
    # message; its series' completeness cannot be judged without it
    damaged = any(_looks_like_dicom(p) for p in keep)
    for members in by_series.values():
        reasons = sorted({h.burned_in for h in members if h.burned_in})
        if reasons and not allow_burned_in:
            notes.append(f"series {members[0].number} ({len(members)} file(s), e.g. {shown(members[0].path)}) "
                         f"quarantined: {'; '.join(reasons)}, so its pixels may show identifying text; not ingested "
                         "(inbox_checks.allow_burned_in_annotation lets it through)")
            continue
        members = _deduplicate(members, shown, notes)
        keep.update(h.path for h in members)
        problems = [] if damaged else _completeness(members, shown)
        if not problems:
            continue
        message = f"incomplete DICOM series {members[0].number} ({len(members)} file(s)): " + "; ".join(problems)
        if not allow_incomplete:
            raise ImagingInputError(shown(members[0].path), message + " (it is read once complete; "
                                    "inbox_checks.allow_incomplete_series ingests it as it is)")
        notes.append(message + " (ingested: inbox_checks.allow_incomplete_series)")
    return IntegrityOutcome([p for p in paths if p in keep], notes)
