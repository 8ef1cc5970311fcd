"""The report's period: `--since`/`--until` as RFC 3339 times or durations back from now, and
its buckets (hours for up to two days, days beyond)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.durations import parse_duration
from streams.report.model import Bucket

HOURLY_UP_TO_S = 2 * 86400.0
BUCKET_SECONDS: dict[Bucket, float] = {"hour": 3600.0, "day": 86400.0}


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


def bucket_size(since: datetime, until: datetime) -> Bucket:
    """Hours for a span of up to two days, days beyond."""
    return "hour" if (until - since).total_seconds() <= HOURLY_UP_TO_S else "day"


def bucket_starts(since: datetime, until: datetime, bucket: Bucket) -> list[datetime]:
    """The start of every bucket overlapping [since, until), aligned to UTC hours or days."""
    size = BUCKET_SECONDS[bucket]
    start = since.timestamp() // size * size
    end = until.timestamp()
    out: list[datetime] = []
    while start < end or not out:
        out.append(datetime.fromtimestamp(start, tz=UTC))
        start += size
    return out
