"""The report's period: its buckets (hours for up to two days, days beyond); `--since` and
`--until` are read by `engine.durations.parse_when` (re-exported here)."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.durations import parse_when
from streams.tools.report.model import Bucket

__all__ = ["bucket_size", "bucket_starts", "parse_when"]

HOURLY_UP_TO_S = 2 * 86400.0
BUCKET_SECONDS: dict[Bucket, float] = {"hour": 3600.0, "day": 86400.0}


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
