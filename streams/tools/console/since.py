"""How far back the console reads: a duration like `24h`, `90m`, `7d`, `1h30m`, or `all`."""

from __future__ import annotations

from engine.durations import parse_duration


def parse_since(text: str) -> float | None:
    """Seconds to read back, or None for everything on the topic (`all`)."""
    value = text.strip().lower()
    if value == "all":
        return None
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a duration such as 15m, 24h, 7d or 1h30m, or `all`"
        ) from None
    if seconds <= 0:
        raise ValueError(f"--since {text!r}: the duration must be more than zero (or `all`)")
    return seconds
