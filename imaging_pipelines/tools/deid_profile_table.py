"""Regenerate ``imaging_pipelines/medical/deid/basic_profile.csv``: DICOM PS3.15 Table E.1-1 as data.

Two published, machine-readable copies of the table are merged; neither is typed in by hand:

* **Basic Profile actions**: ``dicom-anonymizer`` 2.1.0 (PyPI, Kitware Europe, BSD-3-Clause), module
  ``dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py``: the tag lists ``D_TAGS``,
  ``Z_TAGS``, ``X_TAGS``, ``U_TAGS``, ``Z_D_TAGS``, ``X_Z_TAGS``, ``X_D_TAGS``, ``X_Z_D_TAGS``,
  ``X_Z_U_STAR_TAGS`` of the standard's 2026c edition (masked 4-tuples for the repeating groups 50xx/60xx).
* **Option columns** (Retain Safe Private, Retain UIDs, Retain Device Identity, Retain Institution Identity,
  Retain Patient Characteristics, Retain Longitudinal Temporal Information with Full / Modified Dates, Clean
  Descriptors, Clean Structured Content, Clean Graphics): ``dicom-standard`` 0.1.0 (PyPI, Innolitics LLC, MIT),
  ``standard/confidentiality_profile_attributes.json``, parsed from the standard's 2020 edition. It also
  gives the row for private attributes (odd groups) and the few rows the newer list lacks.

Attributes added to the standard after 2020 therefore have a Basic Profile action but empty option columns:
options do not retain them (the stricter choice). The four attributes whose Basic Profile action changed
between the editions take the newer action; both are written in the ``note`` column.

Usage (downloads the two wheels from PyPI with pip unless paths are given)::

    python -m imaging_pipelines.tools.deid_profile_table [--anonymizer-wheel W1] [--standard-wheel W2] [-o CSV]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ANONYMIZER = ("dicom-anonymizer", "2.1.0", "dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py")
STANDARD = ("dicom-standard", "0.1.0", "standard/confidentiality_profile_attributes.json")
OUT = Path(__file__).resolve().parents[1] / "medical" / "deid" / "basic_profile.csv"

# dicom-anonymizer list name -> PS3.15 action code
LIST_ACTIONS = {"D": "D", "Z": "Z", "X": "X", "U": "U", "Z_D": "Z/D", "X_Z": "X/Z", "X_D": "X/D",
                "X_Z_D": "X/Z/D", "X_Z_U_STAR": "X/Z/U*"}
# innolitics JSON key -> our CSV column
OPTION_COLUMNS = {
    "rtnSafePrivOpt": "retain_safe_private",
    "rtnUIDsOpt": "retain_uids",
    "rtnDevIdOpt": "retain_device_identity",
    "rtnInstIdOpt": "retain_institution_identity",
    "rtnPatCharsOpt": "retain_patient_characteristics",
    "rtnLongFullDatesOpt": "retain_long_full_dates",
    "rtnLongModifDatesOpt": "retain_long_modified_dates",
    "cleanDescOpt": "clean_descriptors",
    "cleanStructContOpt": "clean_structured_content",
    "cleanGraphOpt": "clean_graphics",
}
COLUMNS = ["tag", "keyword", "name", "basic_profile", *OPTION_COLUMNS.values(), "note"]
_ENTRY = re.compile(r"\s*\((0x[0-9A-Fa-f]{4}),\s*(0x[0-9A-Fa-f]{4})(?:,\s*(0x[0-9A-Fa-f]{4}),\s*(0x[0-9A-Fa-f]{4}))?\),"
                    r"\s*#\s*(.*)")


def _wheel_member(wheel: Path, suffix: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.endswith(suffix)]
        if len(names) != 1:
            raise SystemExit(f"{wheel.name}: expected one member ending {suffix}, found {names}")
        return archive.read(names[0]).decode("utf-8")


def _download(package: str, version: str, folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", f"{package}=={version}", "-d", str(folder)],
                   check=True, capture_output=True)
    wheels = sorted(folder.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download of {package}=={version} gave no wheel in {folder}")
    return wheels[0]


def _tag_text(group: str, element: str, group_mask: str | None, element_mask: str | None) -> str:
    """``GGGGEEEE`` upper-case hex; masked-out nibbles become ``x`` (``60xx4000``)."""
    text = ""
    for value, mask in ((group, group_mask), (element, element_mask)):
        v, m = int(value, 16), int(mask, 16) if mask else 0xFFFF
        text += "".join(f"{(v >> s) & 0xF:X}" if (m >> s) & 0xF else "x" for s in (12, 8, 4, 0))
    return text


def anonymizer_actions(source: str) -> dict[str, tuple[str, str]]:
    """tag -> (action, attribute name) from the dicomfields module text (its lists, not its code, are read)."""
    actions: dict[str, tuple[str, str]] = {}
    current = None
    for line in source.splitlines():
        start = re.match(r"^([A-Z_]+)_TAGS\s*=\s*\[", line)
        if start:
            current = start.group(1) if start.group(1) in LIST_ACTIONS else None
            continue
        if line.startswith("]"):
            current = None
            continue
        entry = _ENTRY.match(line)
        if entry and current:
            tag = _tag_text(entry.group(1)[2:], entry.group(2)[2:], entry.group(3), entry.group(4))
            if tag in actions and actions[tag][0] != LIST_ACTIONS[current]:
                raise SystemExit(f"tag {tag} is in two lists: {actions[tag][0]} and {LIST_ACTIONS[current]}")
            actions[tag] = (LIST_ACTIONS[current], entry.group(5).strip())
    return actions


def standard_rows(source: str) -> dict[str, dict]:
    """tag -> innolitics row; the private-attributes row keyed ``PRIVATE``, repeating groups with ``x``."""
    rows = {}
    for row in json.loads(source):
        ident = row["id"].upper()
        tag = "PRIVATE" if "ODD" in ident else ident.replace("X", "x")
        rows[tag] = row
    return rows


def merge(actions: dict[str, tuple[str, str]], standard: dict[str, dict]) -> list[dict[str, str]]:
    from pydicom.datadict import keyword_for_tag

    out = []
    for tag in sorted(set(actions) | set(standard)):
        std = standard.get(tag, {})
        action, name = actions.get(tag, (std.get("basicProfile", ""), std.get("name", "")))
        note = []
        if tag in actions and std and std["basicProfile"] != action:
            note.append(f"2020 edition: {std['basicProfile']}")
        if tag not in actions:
            note.append("only in the 2020 list")
        if not std:
            note.append("no option columns (not in the 2020 list)")
        keyword = ""
        if re.fullmatch(r"[0-9A-F]{8}", tag):
            keyword = keyword_for_tag(int(tag, 16)) or ""
        row = {"tag": tag, "keyword": keyword, "name": name or std.get("name", ""), "basic_profile": action,
               "note": "; ".join(note)}
        row.update({column: std.get(key, "") for key, column in OPTION_COLUMNS.items()})
        out.append(row)
    return out


HEADER = """\
# DICOM PS3.15 Annex E, Table E.1-1: Application Level Confidentiality Profile Attributes, as data.
# Generated by imaging_pipelines/tools/deid_profile_table.py; do not edit by hand, regenerate instead.
# Basic Profile actions: dicom-anonymizer 2.1.0 (PyPI; Copyright 2020 Kitware Europe; BSD-3-Clause licence),
#   dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py (PS3.15 2026c).
# Option columns: dicom-standard 0.1.0 (PyPI; Copyright Innolitics LLC; MIT licence),
#   standard/confidentiality_profile_attributes.json (PS3.15, 2020 edition). Empty: the option keeps the Basic action.
# Actions (PS3.15 E.1.1): D dummy value, Z zero length, X remove, K keep, C clean, U replace UID;
#   X/Z, X/D, Z/D, X/Z/D: the first one the IOD allows; X/Z/U*: X or Z, or U for the UIDs in its items.
# tag: GGGGEEEE hex (x = any nibble in repeating groups), PRIVATE = every attribute of an odd group.
"""


def render(rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return HEADER + buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anonymizer-wheel", type=Path)
    parser.add_argument("--standard-wheel", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        anonymizer = args.anonymizer_wheel or _download(ANONYMIZER[0], ANONYMIZER[1], Path(tmp))
        standard = args.standard_wheel or _download(STANDARD[0], STANDARD[1], Path(tmp))
        rows = merge(anonymizer_actions(_wheel_member(anonymizer, ANONYMIZER[2])),
                     standard_rows(_wheel_member(standard, STANDARD[2])))
    from imaging_pipelines.core.storage import write_text_atomic

    write_text_atomic(args.output, render(rows))
    print(f"{len(rows)} attributes -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
