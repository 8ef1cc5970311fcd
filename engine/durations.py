"""Durations written in rule files (`90s`, `10m`, `6h`, `30d`, `2w`, `1h30m`), and the times
given to the command-line tools (`parse_when`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_DURATION = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d|w)\s*)+$")


def parse_duration(value: object) -> float:
    """Seconds in a duration such as `10m`; a bare number is seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '10m' or '30d', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return float(value)
    if isinstance(value, str):
        if _DURATION.match(value):
            return sum(float(n) * _UNITS[u] for n, u in _PART.findall(value))
    raise ValueError(f"expected a duration like '90s', '10m', '6h', '30d' or '2w', got {value!r}")


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds}s"


def parse_when(text: str, now: datetime) -> datetime:
    """An RFC 3339 date-time (a date alone is midnight UTC; no offset means UTC), `now`, or a
    duration such as `7d` or `12h` back from `now`."""
    value = text.strip()
    if value == "now":
        return now
    try:
        return now - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"expected an RFC 3339 time like 2026-05-01T00:00:00Z, 'now' or a duration back "
            f"from now like 7d or 12h, got {text!r}"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
