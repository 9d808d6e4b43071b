"""Apply the PS3.15 Annex E Basic Application Level Confidentiality Profile (the table in ``basic_profile.csv``).

:func:`deidentify` walks a dataset, its file meta information and every nested sequence item, and applies to
each listed attribute the table's action under the :class:`~.table.DeidOptions` (a combined action resolved
by the IOD of the dataset's SOP class, :mod:`.iod`):

* ``X`` remove; ``Z`` zero length (a sequence: no items); ``D`` dummy value of the attribute's VR
  (:data:`DUMMY_BY_VR`; a sequence: its items are processed); ``K`` keep; ``U`` / ``U*`` replace UIDs;
* ``C`` clean: text is reduced to its safe imaging terms (:func:`.descriptors.clean_descriptor`; nothing
  safe left: the Basic action applies), dates under Retain Longitudinal with Modified Dates are shifted by a
  whole number of days (times are kept), a sequence is kept only if all text in its items is already clean
  (:func:`sequence_is_clean`), otherwise its Basic action applies.
* **UIDs**: a UID not in ``options.keep_uids`` becomes ``2.25.<128-bit keyed hash of it>`` (HMAC-SHA256 under
  the pseudonym key of :mod:`imaging_pipelines.core.privacy`): the same source UID always gives the same new
  UID, so references between de-identified objects stay consistent and nobody without the key can map back.
* **Private attributes**: removed, unless Retain Safe Private lists them (``options.safe_private``).
* **Identity**: PatientName and PatientID become the pseudonym (a dummy value in the PS3.15 sense).
* **Marking** (PS3.15 E.1.1): PatientIdentityRemoved = YES, DeidentificationMethod and
  DeidentificationMethodCodeSequence (CID 7050: the profile and each option in effect; Retain UIDs when
  ``keep_uids`` kept any), LongitudinalTemporalInformationModified (REMOVED / UNMODIFIED / MODIFIED).

Attributes the table does not list are kept (the profile lists what must change); their sequences are
still walked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from imaging_pipelines.core.privacy import pseudonym_key
from imaging_pipelines.medical.deid.descriptors import clean_descriptor
from imaging_pipelines.medical.deid.iod import single_action
from imaging_pipelines.medical.deid.table import DeidOptions, profile_table

IDENTITY_KEYWORDS = ("PatientName", "PatientID")
DUMMY_TEXT = "ANONYMIZED"
DUMMY_BY_VR: dict[str, object] = {
    "DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000Y", "IS": "0", "DS": "0",
    "US": 0, "SS": 0, "UL": 0, "SL": 0, "UV": 0, "SV": 0, "FL": 0.0, "FD": 0.0, "AT": 0,
    "OB": b"\x00\x00", "OW": b"\x00\x00", "OF": b"\x00\x00\x00\x00", "OD": b"\x00" * 8, "OL": b"\x00" * 4,
    "OV": b"\x00" * 8, "UN": b"\x00\x00", "UR": "urn:anonymized",
}
TEXT_VRS = {"LO", "SH", "LT", "ST", "UT", "UC", "PN", "AE", "CS"}
METHOD_CODES = {  # CID 7050 De-identification Method
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "clean_structured_content": ("113104", "Clean Structured Content Option"),
    "clean_graphics": ("113103", "Clean Graphics Option"),
    "retain_long_full_dates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "retain_long_modified_dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
}


def hashed_uid(uid: str) -> str:
    """``2.25.<decimal of the first 128 bits of HMAC-SHA256(key, uid)>``: at most 44 characters, a valid UID."""
    digest = hmac.new(pseudonym_key(), b"uid\x00" + str(uid).strip().encode(), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


REFERENCE_UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


def reference_uids(datasets: Iterable[Dataset]) -> frozenset[str]:
    """The study, series, instance and frame-of-reference UIDs of ``datasets``: what a derived object (SEG, SR)
    must keep to reference them (``DeidOptions.keep_uids``)."""
    return frozenset(str(ds.get(k)) for ds in datasets for k in REFERENCE_UID_KEYWORDS if ds.get(k))


def date_shift_days(pseudonym: str, options: DeidOptions) -> int:
    """Days every date moves back under Retain Longitudinal with Modified Dates: ``options.date_shift_days`` or
    1..3650 from the keyed hash of the pseudonym (stable per patient, unknown without the key)."""
    if options.date_shift_days is not None:
        return int(options.date_shift_days)
    digest = hmac.new(pseudonym_key(), b"dateshift\x00" + pseudonym.encode(), hashlib.sha256).digest()
    return 1 + int.from_bytes(digest[:4], "big") % 3650


@dataclass
class _Walk:
    options: DeidOptions
    sop_class: str
    shift_days: int
    kept_uids: set[str] = field(default_factory=set)


def _shift_date(value: str, days: int) -> str | None:
    """A DA (``YYYYMMDD``) or the date part of a DT moved back ``days`` days; ``None`` if unparsable."""
    text = str(value).strip()
    if len(text) < 8 or not text[:8].isdigit():
        return None
    try:
        day = dt.date(int(text[:4]), int(text[4:6]), int(text[6:8])) - dt.timedelta(days=days)
    except ValueError:
        return None
    return day.strftime("%Y%m%d") + text[8:]


def _replace_uid(value: str, walk: _Walk) -> str:
    if value in walk.options.keep_uids:
        walk.kept_uids.add(value)
        return value
    return hashed_uid(value)


def _uids(elem: DataElement, walk: _Walk) -> None:
    if elem.VR != "UI" or elem.value in (None, ""):
        return
    if walk.options.retain_uids:
        return
    if isinstance(elem.value, MultiValue | list):
        elem.value = [_replace_uid(str(v), walk) for v in elem.value]
    else:
        elem.value = _replace_uid(str(elem.value), walk)


def _dummy(elem: DataElement, walk: _Walk, path: tuple[str, ...]) -> None:
    if elem.VR == "UI":
        _uids(elem, walk)
    elif elem.VR in DUMMY_BY_VR:
        elem.value = DUMMY_BY_VR[elem.VR]
    else:
        elem.value = DUMMY_TEXT


def _clean(ds: Dataset, elem: DataElement, basic: str, walk: _Walk, path: tuple[str, ...]) -> None:
    """Action C: cleaned text / shifted date; anything else (binary values such as MakerNote, numbers, a text
    with no safe word, a date that cannot be shifted) takes the Basic action."""
    if elem.VR in ("DA", "DT"):
        shifted = None
        if walk.options.retain_longitudinal == "modified" and elem.value not in (None, ""):
            shifted = _shift_date(str(elem.value), walk.shift_days)
        if shifted is not None:
            elem.value = shifted
            return
    elif elem.VR == "TM" and walk.options.retain_longitudinal == "modified":
        return
    elif elem.VR in TEXT_VRS:
        values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
        cleaned = [clean_descriptor(str(v)) for v in values if v not in (None, "")]
        cleaned = [c for c in cleaned if c]
        if cleaned:
            elem.value = cleaned if len(cleaned) > 1 else cleaned[0]
            return
    _apply(ds, elem, basic, basic, walk, path)


def sequence_is_clean(elem: DataElement) -> bool:
    """Whether every text value anywhere in the sequence's items is already a clean descriptor: Clean
    Descriptors / Structured Content / Graphics keep a sequence only then (codes and their meanings included,
    so in practice most coded sequences take the Basic action instead)."""
    for item in elem.value:
        for inner in item.iterall():
            if inner.VR in TEXT_VRS and inner.value not in (None, ""):
                values = inner.value if isinstance(inner.value, MultiValue | list) else [inner.value]
                if any(clean_descriptor(str(v)) != str(v) for v in values):
                    return False
    return True


def _apply(ds: Dataset, elem: DataElement, action: str, basic: str, walk: _Walk, path: tuple[str, ...]) -> None:
    """One resolved action on ``elem``; ``basic``: the resolved Basic Profile action (C falls back to it)."""
    if action == "X":
        del ds[elem.tag]
    elif action == "Z":
        elem.value = DicomSequence([]) if elem.VR == "SQ" else None
    elif action == "C" and elem.VR == "SQ" and not sequence_is_clean(elem):
        _apply(ds, elem, basic, basic, walk, path)
    elif elem.VR == "SQ":  # D, K, C (clean items), U, U*: keep the sequence, process its items
        for item in elem.value:
            _walk(item, path + (elem.keyword,), walk)
    elif action == "D":
        _dummy(elem, walk, path)
    elif action in ("U", "U*"):
        _uids(elem, walk)
    elif action == "C":
        _clean(ds, elem, basic, walk, path)
    # K: kept


def safe_private_tags(ds: Dataset, options: DeidOptions) -> set[int]:
    """Private data elements of ``ds`` (this level) that Retain Safe Private keeps, with their blocks' creators."""
    safe: set[int] = set()
    if not (options.retain_safe_private and options.safe_private):
        return safe
    for elem in ds:
        tag = elem.tag
        if tag.is_private and tag.element >= 0x1000:
            creator = ds.get((tag.group, tag.element >> 8))
            if creator is not None and (str(creator.value), tag.element & 0xFF) in options.safe_private:
                safe.update({int(tag), (tag.group << 16) | (tag.element >> 8)})
    return safe


def _private(ds: Dataset, walk: _Walk) -> None:
    """Remove private attributes, except those Retain Safe Private lists (and the creators of their blocks)."""
    keep = safe_private_tags(ds, walk.options)
    for tag in [e.tag for e in ds if e.tag.is_private and int(e.tag) not in keep]:
        del ds[tag]


def _walk(ds: Dataset, path: tuple[str, ...], walk: _Walk) -> None:
    _private(ds, walk)
    table = profile_table()
    for tag in list(ds.keys()):
        elem = ds[tag]
        row = None if tag.is_private else table.row(tag)  # private ones left are retained: only walked
        if row is None:
            if elem.VR == "SQ":
                for item in elem.value:
                    _walk(item, path + (elem.keyword,), walk)
            continue
        action = single_action(row.action(walk.options), walk.options, walk.sop_class, path, elem.keyword)
        basic = single_action(row.basic_profile, walk.options, walk.sop_class, path, elem.keyword)
        _apply(ds, elem, action, basic, walk, path)


def _method_items(options: DeidOptions, kept_uids: bool) -> list[Dataset]:
    keys = ["basic", *options.enabled_columns()]
    if kept_uids and "retain_uids" not in keys:
        keys.append("retain_uids")
    if options.retain_safe_private and not options.safe_private:
        keys.remove("retain_safe_private")  # nothing was retained
    items = []
    for key in keys:
        item = Dataset()
        item.CodeValue, item.CodeMeaning = METHOD_CODES[key]
        item.CodingSchemeDesignator = "DCM"
        items.append(item)
    return items


def deidentify(ds: Dataset, pseudonym: str, options: DeidOptions | None = None) -> None:
    """De-identify ``ds`` in place by PS3.15 Annex E (module docstring); PatientName/PatientID := ``pseudonym``."""
    options = options or DeidOptions()
    if not str(pseudonym).strip():
        raise ValueError("deidentify needs a non-empty pseudonym")
    walk = _Walk(options=options, sop_class=str(ds.get("SOPClassUID", "")),
                 shift_days=date_shift_days(str(pseudonym), options))
    _walk(ds, (), walk)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        _walk(meta, (), walk)
    for keyword in IDENTITY_KEYWORDS:
        setattr(ds, keyword, str(pseudonym))
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "PS3.15 Basic Profile (imaging_pipelines)"
    ds.DeidentificationMethodCodeSequence = _method_items(options, bool(walk.kept_uids))
    ds.LongitudinalTemporalInformationModified = {"off": "REMOVED", "full": "UNMODIFIED",
                                                  "modified": "MODIFIED"}[options.retain_longitudinal]
