"""Cron expressions as Dagster schedules accept them: five fields (minute hour day-of-month month
day-of-week) or an alias (``@hourly``, ``@daily``...). Checked here so the catalog needs no dagster import."""

from __future__ import annotations

import re

ALIASES = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()
_DAYS = "sun mon tue wed thu fri sat".split()
# field -> (lowest, highest, names for lowest.. values)
FIELDS = [(0, 59, None), (0, 23, None), (1, 31, None), (1, 12, _MONTHS), (0, 7, _DAYS)]
_ITEM = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")


def _value(token: str, low: int, high: int, names: list[str] | None) -> int | None:
    if token.isdigit():
        number = int(token)
    elif names and token in names:
        number = names.index(token) + low
    else:
        return None
    return number if low <= number <= high else None


def _field_values(text: str, low: int, high: int, names: list[str] | None) -> set[int] | None:
    values: set[int] = set()
    for item in text.lower().split(","):
        match = _ITEM.match(item)
        if not match:
            return None
        span, step = match.group(1), int(match.group(2) or 1)
        if step < 1:
            return None
        if span == "*":
            first, last = low, high
        else:
            ends = [_value(t, low, high, names) for t in span.split("-")]
            if any(e is None for e in ends) or ends[0] > ends[-1]:
                return None
            first, last = ends[0], ends[-1] if len(ends) == 2 or match.group(2) is None else high
        values.update(range(first, last + 1, step))
    return values


def is_valid_cron(expression: str) -> bool:
    """True for an alias or five valid fields; False for anything else, including 30/31 February."""
    text = expression.strip().lower()
    if text in ALIASES:
        return True
    parts = text.split()
    if len(parts) != 5:
        return False
    expanded = [_field_values(p, *spec) for p, spec in zip(parts, FIELDS)]
    if any(v is None for v in expanded):
        return False
    days, months = expanded[2], expanded[3]
    return not (months == {2} and len(days) == 1 and days <= {30, 31})
