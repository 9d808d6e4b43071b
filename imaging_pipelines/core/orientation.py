"""Orientation codes: three letters naming the world direction (LPS/RAS letters) each index axis points toward."""

from __future__ import annotations

AXIS_LETTERS = ({"L", "R"}, {"P", "A"}, {"S", "I"})


def validate_orientation(orientation: str) -> str:
    """Upper-case 3-letter code with one letter of each pair L/R, P/A, S/I (any order); raises ValueError."""
    code = orientation.upper()
    axes = sorted(axis for letter in code for axis, pair in enumerate(AXIS_LETTERS) if letter in pair)
    if len(code) != 3 or axes != [0, 1, 2]:
        raise ValueError(f"orientation must use one letter of each pair L/R, P/A, S/I (e.g. 'LPS'); got {orientation!r}")
    return code
