"""Durations written in rule files: `90s`, `10m`, `6h`, `30d`, `2w`, `1h30m`."""

from __future__ import annotations

import re

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
