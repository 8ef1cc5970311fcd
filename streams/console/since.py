"""How far back the console reads: durations like `24h`, `90m`, `7d`, `1h30m`, or `all`."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_since(text: str) -> float | None:
    """Seconds to read back, or None for everything on the topic (`all`)."""
    value = text.strip().lower()
    if value == "all":
        return None
    if not value or _PART.sub("", value):
        raise ValueError(
            f"--since {text!r}: give a duration such as 15m, 24h, 7d or 1h30m, or `all`"
        )
    seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value))
    if seconds <= 0:
        raise ValueError(f"--since {text!r}: the duration must be more than zero (or `all`)")
    return seconds
