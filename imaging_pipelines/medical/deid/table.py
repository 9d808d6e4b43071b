"""The PS3.15 Table E.1-1 attribute actions (``basic_profile.csv``, data) and the options that change them.

One row per attribute: its Basic Application Level Confidentiality Profile action and, per option, the action
that replaces it when the option is in effect (``K`` keep, ``C`` clean; empty: the Basic action stays).
:func:`action_for` gives the action for a tag under :class:`DeidOptions`, before the IOD decides between the
alternatives of a combined action (``X/Z``, ``Z/D``...; see :mod:`.iod`). Regenerate the table with
``python -m imaging_pipelines.tools.deid_profile_table`` (sources and licences are in its header).
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

from pydicom.tag import BaseTag

TABLE_FILE = "basic_profile.csv"
ACTIONS = {"D", "Z", "X", "K", "C", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}
PRIVATE = "PRIVATE"
OPTION_COLUMNS = ("retain_safe_private", "retain_uids", "retain_device_identity", "retain_institution_identity",
                  "retain_patient_characteristics", "retain_long_full_dates", "retain_long_modified_dates",
                  "clean_descriptors", "clean_structured_content", "clean_graphics")


@dataclass(frozen=True)
class DeidOptions:
    """PS3.15 E.3 options (all off except Clean Descriptors, the project's default).

    * ``retain_longitudinal``: Retain Longitudinal Temporal Information, ``"off"`` (dates removed or made
      dummies), ``"full"`` (kept) or ``"modified"`` (dates shifted by ``date_shift_days``, or by a number of
      days in [1, 3650] derived from the pseudonym with the keyed hash when ``None``; times kept).
    * ``retain_safe_private``: keep the private attributes listed in ``safe_private`` as
      ``(private creator, element byte)``; the standard's list of safe private attributes is not bundled, so
      with an empty ``safe_private`` every private attribute is still removed.
    * ``clean_descriptors`` / ``clean_structured_content`` / ``clean_graphics``: free text is replaced by the
      tokens of it found in a whitelist of imaging terms (:func:`.descriptors.clean_descriptor`), structured
      content and graphics are processed item by item instead of being removed.
    * ``retain_uids``: keep every UID. Whatever this option says, the UIDs in ``keep_uids`` are kept: the
      project keeps the source's study, series, instance and frame-of-reference UIDs that a SEG/SR must
      reference, and the UIDs it made for the new object itself (a partial Retain UIDs, recorded as such).
    * ``keep_source_references`` (project default): the ``X/Z/U*`` reference sequences (Referenced Image,
      Source Image) stay, their items processed (UIDs by ``U``), so a SEG keeps its per-frame references.
    * ``retain_device_identity`` / ``retain_institution_identity`` / ``retain_patient_characteristics``.
    """

    retain_longitudinal: Literal["off", "full", "modified"] = "off"
    date_shift_days: int | None = None
    retain_safe_private: bool = False
    safe_private: frozenset[tuple[str, int]] = frozenset()
    clean_descriptors: bool = True
    clean_structured_content: bool = False
    clean_graphics: bool = False
    retain_uids: bool = False
    keep_uids: frozenset[str] = field(default_factory=frozenset)
    keep_source_references: bool = True
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_patient_characteristics: bool = False

    def enabled_columns(self) -> tuple[str, ...]:
        """The option columns of the table in effect."""
        on = {
            "retain_safe_private": self.retain_safe_private,
            "retain_uids": self.retain_uids,
            "retain_device_identity": self.retain_device_identity,
            "retain_institution_identity": self.retain_institution_identity,
            "retain_patient_characteristics": self.retain_patient_characteristics,
            "retain_long_full_dates": self.retain_longitudinal == "full",
            "retain_long_modified_dates": self.retain_longitudinal == "modified",
            "clean_descriptors": self.clean_descriptors,
            "clean_structured_content": self.clean_structured_content,
            "clean_graphics": self.clean_graphics,
        }
        return tuple(column for column in OPTION_COLUMNS if on[column])


@dataclass(frozen=True)
class ProfileRow:
    """One attribute of Table E.1-1: ``tag`` text (``GGGGEEEE``, ``x`` wildcards, or ``PRIVATE``)."""

    tag: str
    keyword: str
    name: str
    basic_profile: str
    options: dict[str, str]

    def action(self, options: DeidOptions) -> str:
        """The action under ``options``: an option's ``K`` wins over its ``C``, either over the Basic action."""
        chosen = {self.options.get(column, "") for column in options.enabled_columns()} - {""}
        if "K" in chosen:
            return "K"
        if "C" in chosen:
            return "C"
        return self.basic_profile


@dataclass(frozen=True)
class ProfileTable:
    exact: dict[int, ProfileRow]
    patterns: tuple[tuple[int, int, ProfileRow], ...]  # (mask, value, row)
    private: ProfileRow

    def row(self, tag: int) -> ProfileRow | None:
        """The row that governs ``tag``: exact, then a repeating group (50xx, 60xx), then PRIVATE (odd group)."""
        tag = int(tag)
        if tag in self.exact:
            return self.exact[tag]
        for mask, value, row in self.patterns:
            if tag & mask == value:
                return row
        if BaseTag(tag).is_private:
            return self.private
        return None

    def __len__(self) -> int:
        return len(self.exact) + len(self.patterns) + 1


def _pattern(tag: str) -> tuple[int, int]:
    mask = int("".join("0" if c == "x" else "F" for c in tag), 16)
    value = int(tag.replace("x", "0"), 16)
    return mask, value


@functools.cache
def profile_table() -> ProfileTable:
    """The table shipped in this package (parsed once)."""
    text = resources.files(__package__).joinpath(TABLE_FILE).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    exact, patterns, private = {}, [], None
    for record in csv.DictReader(lines):
        action = record["basic_profile"]
        if action not in ACTIONS:
            raise ValueError(f"{TABLE_FILE}: tag {record['tag']} has unknown action {action!r}")
        row = ProfileRow(tag=record["tag"], keyword=record["keyword"], name=record["name"], basic_profile=action,
                         options={c: record[c] for c in OPTION_COLUMNS if record[c]})
        if row.tag == PRIVATE:
            private = row
        elif "x" in row.tag:
            patterns.append((*_pattern(row.tag), row))
        else:
            exact[int(row.tag, 16)] = row
    if private is None:
        raise ValueError(f"{TABLE_FILE}: no {PRIVATE} row")
    return ProfileTable(exact=exact, patterns=tuple(patterns), private=private)


def action_for(tag: int, options: DeidOptions) -> str | None:
    """The table's action for ``tag`` under ``options``; ``None`` for an attribute the table does not list (kept)."""
    row = profile_table().row(tag)
    return None if row is None else row.action(options)
