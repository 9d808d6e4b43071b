"""Siemens CSA headers (private (0029,xx10) image / (0029,xx20) series elements): the format nibabel's
``nibabel.nicom.csareader`` reads, read the same way here (same dictionary, same quirks) so that Siemens series
convert without importing nibabel (and pydicom with it). tests/test_siemens_csa.py compares the two on real files.

A header is ``{"type": 1 | 2, "n_tags", "check", ["unused0"], "tags": {name: {"n_items", "vm", "vr", "syngodt",
"last3", "tag_no", "items"}}}``; numeric items are converted to float / int by their CSA VR.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

MAX_CSA_ITEMS = 1000
_CONVERTERS = {"FL": float, "FD": float, "DS": float, "SS": int, "US": int, "SL": int, "UL": int, "IS": int}
_TAG = struct.Struct("<64si4s3i")
_ITEM = struct.Struct("<4i")
_TWO = struct.Struct("<2I")


class CSAReadError(ValueError):
    """A CSA header that cannot be read."""


def _nt_str(s: bytes) -> Any:
    """``s`` up to its first NUL, decoded as latin-1; ``s`` unchanged (bytes) when it holds no NUL (as nibabel)."""
    zero = s.find(b"\x00")
    return s if zero == -1 else s[:zero].decode("latin-1")


def read_csa(csa: bytes) -> dict[str, Any]:
    """Parse one CSA header (CSA1, or CSA2 starting with ``SV10``)."""
    csa_len = len(csa)
    out: dict[str, Any] = {"tags": {}}
    ptr = 0
    if csa[:4] == b"SV10":
        hdr_type, out["unused0"], ptr = 2, csa[4:8], 8
    else:
        hdr_type = 1
    out["type"] = hdr_type
    out["n_tags"], out["check"] = _TWO.unpack_from(csa, ptr)
    ptr += _TWO.size
    if not 0 < out["n_tags"] <= MAX_CSA_ITEMS:
        raise CSAReadError(f"Number of tags `t` should be 0 < t <= {MAX_CSA_ITEMS}. Instead found {out['n_tags']} tags.")
    tag0_n_items = 0
    for tag_no in range(out["n_tags"]):
        name, vm, vr, syngodt, n_items, last3 = _TAG.unpack_from(csa, ptr)
        ptr += _TAG.size
        vr, name = _nt_str(vr), _nt_str(name)
        tag = {"n_items": n_items, "vm": vm, "vr": vr, "syngodt": syngodt, "last3": last3, "tag_no": tag_no}
        n_values = n_items if vm == 0 else vm
        converter = _CONVERTERS.get(vr)
        if tag_no == 1:
            tag0_n_items = n_items
        if n_items > MAX_CSA_ITEMS:
            raise CSAReadError(f"Expected <= {MAX_CSA_ITEMS} tags, got {n_items}")
        items: list[Any] = []
        for item_no in range(n_items):
            x0, x1, _, _ = _ITEM.unpack_from(csa, ptr)
            ptr += _ITEM.size
            if hdr_type == 1:  # CSA1: odd length calculation
                item_len = x0 - tag0_n_items
                if item_len < 0 or ptr + item_len > csa_len:
                    if item_no < vm:
                        items.append("")
                    break
            else:
                item_len = x1
                if ptr + item_len > csa_len:
                    raise CSAReadError("Item is too long, aborting read")
            if item_no >= n_values:
                if item_len != 0:
                    raise CSAReadError("unexpected item beyond the value multiplicity")
                continue
            item = _nt_str(csa[ptr:ptr + item_len])
            ptr += item_len
            if converter:
                if item_len == 0:  # fewer real items than n_items: the end is the first empty one
                    n_values = item_no
                    continue
                item = converter(item)
            items.append(item)
            if item_len % 4:
                ptr += 4 - item_len % 4
        tag["items"] = items
        out["tags"][name] = tag
    return out


def csa_image_header(ds: Any) -> dict[str, Any] | None:
    """The CSA image header of a dataset (pydicom ``Dataset`` or raw scan), or None when it has none or it
    cannot be read: its private block is the one whose creator (0029,00xx) is ``SIEMENS CSA HEADER``."""
    if (0x29, 0x10) not in ds:
        return None
    start = None
    for elem in ds.group_dataset(0x29):
        number = elem.tag & 0xFFFF
        if number > 0xFF:
            break
        if elem.VR not in ("LO", "OB"):
            continue
        value = elem.value.decode("latin-1") if isinstance(elem.value, bytes) else elem.value
        if value == "SIEMENS CSA HEADER":
            start = number * 0x100
            break
    if start is None or (0x29, start + 0x10) not in ds:
        return None
    try:
        return read_csa(ds[(0x29, start + 0x10)].value)
    except Exception:  # any unreadable header (nibabel's reader raises several types): no CSA values
        return None


def csa_scalar(csa: dict[str, Any], name: str) -> Any:
    """The first item of a CSA tag, or None."""
    items = csa.get("tags", {}).get(name, {}).get("items") or []
    return items[0] if items else None


def csa_vector(csa: dict[str, Any], name: str, n: int) -> np.ndarray | None:
    """The items of a CSA tag as an array of ``n`` values, or None; ValueError for another count."""
    items = csa.get("tags", {}).get(name, {}).get("items") or []
    if not items:
        return None
    if len(items) != n:
        raise ValueError(f"Expecting {n} vector")
    return np.array(items)
