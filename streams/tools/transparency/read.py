"""The log's topics read whole, as `Read` messages for `engine/auditlog.py`."""

from __future__ import annotations

from engine.auditlog import Read, Where
from streams.settings import Settings
from streams.tools.topicread import read_span


def read_topic(settings: Settings, topic: str, *, timeout: float = 60.0) -> list[Read]:
    """Every message of the topic, in offset order per partition, partitions in order."""
    out = [
        Read(Where(m.topic, m.partition, m.offset), m.value or b"")
        for m in read_span(settings, [topic], timeout=timeout, client="log-reader")
    ]
    out.sort(key=lambda r: (r.where.partition, r.where.offset))
    return out
