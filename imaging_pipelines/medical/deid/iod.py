"""Which alternative of a combined PS3.15 action (``X/Z``, ``X/D``, ``Z/D``, ``X/Z/D``, ``X/Z/U*``) an IOD needs.

PS3.15 E.1.1: take ``X`` (remove) unless the IOD requires the attribute; a Type 2 attribute then becomes
``Z`` (zero length) and a Type 1 one ``D`` (dummy value; ``U*``: the UIDs in the sequence's items are
replaced). The attribute types come from the DICOM standard's module tables as shipped by highdicom
(``highdicom/_standard``), indexed by the SOP class's IOD and the attribute's path of parent sequences.
Conditional types (1C, 2C) count as required: the value is still replaced, never kept.
"""

from __future__ import annotations

import functools

from imaging_pipelines.medical.deid.table import DeidOptions

_STRICTNESS = {"1": 4, "1C": 3, "2": 2, "2C": 1, "3": 0}


@functools.cache
def attribute_types(sop_class_uid: str) -> dict[tuple[tuple[str, ...], str], str]:
    """``(parent sequence keywords, keyword) -> strictest type`` over the modules of the SOP class's IOD.

    Empty for a SOP class the standard tables do not know (then every combined action resolves to ``X``
    for attributes not listed, the most private choice).
    """
    from highdicom._standard_utils import (  # the standard's module tables; highdicom has no public accessor
        get_iod_module_map,
        get_module_attribute_map,
        get_sop_class_iod_map,
    )

    iod = get_sop_class_iod_map().get(str(sop_class_uid))
    if iod is None:
        return {}
    attributes = get_module_attribute_map()
    types: dict[tuple[tuple[str, ...], str], str] = {}
    for module in get_iod_module_map()[iod]:
        for entry in attributes[module["key"]]:
            key = (tuple(entry["path"]), entry["keyword"])
            if _STRICTNESS.get(entry["type"], 0) > _STRICTNESS.get(types.get(key, "3"), 0):
                types[key] = entry["type"]
    return types


def required_type(sop_class_uid: str, path: tuple[str, ...], keyword: str) -> str:
    """``"1"``, ``"1C"``, ``"2"``, ``"2C"`` or ``"3"`` (also for attributes the IOD does not have)."""
    if not keyword:
        return "3"
    return attribute_types(sop_class_uid).get((path, keyword), "3")


def resolve(action: str, sop_class_uid: str, path: tuple[str, ...], keyword: str, *,
            keep_references: bool = False) -> str:
    """A single action (``D``, ``Z``, ``X``, ``K``, ``C``, ``U``, or ``U*`` for a sequence) for ``action``.

    ``keep_references``: the object keeps references to its source (Retain UIDs for them), so ``X/Z/U*``
    reference sequences (Referenced Image, Source Image) stay, their UIDs processed by ``U``.
    """
    if "/" not in action:
        return action
    choices = action.split("/")
    if keep_references and "U*" in choices:
        return "U*"
    kind = required_type(sop_class_uid, path, keyword)
    if kind in ("3",):
        return "X" if "X" in choices else choices[0]
    if kind in ("2", "2C") and "Z" in choices:
        return "Z"
    for preferred in ("D", "U*", "Z"):
        if preferred in choices:
            return preferred
    return choices[-1]


def single_action(action: str, options: DeidOptions, sop_class_uid: str, path: tuple[str, ...], keyword: str) -> str:
    """:func:`resolve` under ``options`` (``keep_source_references``)."""
    return resolve(action, sop_class_uid, path, keyword, keep_references=options.keep_source_references)
