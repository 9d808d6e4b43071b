"""The check after every write: which attributes of a dataset the PS3.15 profile table does not allow.

:func:`profile_violations` walks the dataset (file meta and nested items included) with the same table,
options and IOD resolution as :func:`.apply.deidentify`, and reports, one line each:

* an attribute whose action is ``X`` (remove) that is present, and any private attribute not retained by
  Retain Safe Private;
* an attribute whose action is ``Z`` that holds a value (a sequence with items);
* a descriptor under Clean Descriptors that is not already clean (``clean_descriptor(v) != v``);
* a date or time whose action is ``D`` or ``Z`` (Retain Longitudinal off) holding anything but the dummy;
* PatientName / PatientID that differ from ``pseudonym`` (when given), and a missing
  PatientIdentityRemoved = YES.

``D``, ``K``, ``U`` attributes are allowed (a dummy value and a replaced UID cannot be told from the source's
without the source). An empty list means the dataset passes.
"""

from __future__ import annotations

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from imaging_pipelines.medical.deid.apply import (
    DUMMY_BY_VR,
    IDENTITY_KEYWORDS,
    TEXT_VRS,
    safe_private_tags,
    sequence_is_clean,
)
from imaging_pipelines.medical.deid.descriptors import clean_descriptor
from imaging_pipelines.medical.deid.iod import single_action
from imaging_pipelines.medical.deid.table import DeidOptions, profile_table


def _where(path: tuple[str, ...], elem: DataElement) -> str:
    name = elem.keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})"
    return ">".join((*path, name))


def _empty(elem: DataElement) -> bool:
    value = elem.value
    if elem.VR == "SQ":
        return len(value) == 0
    return value is None or value == "" or value == b"" or (isinstance(value, MultiValue | list) and not value)


def _values(elem: DataElement) -> list:
    return list(elem.value) if isinstance(elem.value, MultiValue | list) else [elem.value]


def _check(elem: DataElement, action: str, options: DeidOptions, path: tuple[str, ...]) -> str | None:
    where = _where(path, elem)
    if action == "X":
        return f"{where}: present; the profile removes it (X)"
    if action == "Z" and not _empty(elem) and not (not path and elem.keyword in IDENTITY_KEYWORDS):
        return f"{where}: holds a value; the profile empties it (Z)"
    if action == "C" and elem.VR == "SQ" and not sequence_is_clean(elem):
        return f"{where}: sequence holds text that is not clean (C)"
    if action == "C" and elem.VR not in TEXT_VRS | {"SQ", "DA", "DT", "TM"}:
        return f"{where}: a {elem.VR} value cannot be cleaned; the profile removes it"
    if action == "C" and elem.VR in TEXT_VRS and not _empty(elem):
        dirty = [v for v in _values(elem) if str(v) and clean_descriptor(str(v)) != str(v)]
        if dirty:
            return f"{where}: descriptor not cleaned (C)"
    if (action == "D" and elem.VR in ("DA", "TM", "DT") and options.retain_longitudinal == "off"
            and not _empty(elem) and str(elem.value) != DUMMY_BY_VR[elem.VR]):
        return f"{where}: holds a date/time; the profile replaces it with the dummy (D)"
    return None


def _walk(ds: Dataset, path: tuple[str, ...], options: DeidOptions, sop_class: str, found: list[str]) -> None:
    table = profile_table()
    safe = safe_private_tags(ds, options)
    for elem in ds:
        tag = elem.tag
        if tag.is_private:
            if int(tag) not in safe:
                found.append(f"{_where(path, elem)}: private attribute (X)")
            continue
        row = table.row(tag)
        if row is not None:
            action = single_action(row.action(options), options, sop_class, path, elem.keyword)
            problem = _check(elem, action, options, path)
            if problem:
                found.append(problem)
                continue
        if elem.VR == "SQ":
            for item in elem.value:
                _walk(item, path + (elem.keyword,), options, sop_class, found)


class ProfileViolationError(RuntimeError):
    """A DICOM object the project wrote holds attributes the PS3.15 profile table does not allow."""


def profile_violations(ds: Dataset, options: DeidOptions | None = None, *, pseudonym: str | None = None) -> list[str]:
    """Every attribute of ``ds`` the profile table does not allow under ``options`` (module docstring)."""
    options = options or DeidOptions()
    sop_class = str(ds.get("SOPClassUID", ""))
    found: list[str] = []
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        _walk(meta, (), options, sop_class, found)
    _walk(ds, (), options, sop_class, found)
    if pseudonym is not None:
        for keyword in IDENTITY_KEYWORDS:
            if str(ds.get(keyword, "")) != pseudonym:
                found.append(f"{keyword}: not the pseudonym")
    if str(ds.get("PatientIdentityRemoved", "")).upper() != "YES":
        found.append("PatientIdentityRemoved: not YES")
    return found
