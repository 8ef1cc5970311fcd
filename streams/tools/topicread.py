"""Reading a span of a topic to its end, for the command-line tools (explain, stix, report).

The span is what the topics hold when the call starts, optionally cut by record timestamp;
a read that cannot reach its end in time fails, naming the partitions, rather than giving a
partial answer that looks whole.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from engine.errors import FusionError
from streams.clients import kafka_python_config
from streams.settings import Settings


class TopicReadError(FusionError):
    """A topic could not be read to the end of the span in time."""


def read_span(
    settings: Settings,
    topics: Sequence[str],
    *,
    since: float | None = None,
    until: float | None = None,
    timeout: float = 60.0,
    client: str = "reader",
) -> Iterator[Any]:
    """The records of `topics` from `since` until before `until` (epoch seconds, by record
    timestamp; None: from the beginning, to the end as of the call), in offset order per
    partition. Raises `TopicReadError` if the end is not reached within `timeout`."""
    consumer = KafkaConsumer(
        group_id=None,
        enable_auto_commit=False,
        client_id=f"{settings.app_id}-{client}",
        **kafka_python_config(settings),
    )
    try:
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        if not tps:
            return
        ends = consumer.end_offsets(tps)
        starts = consumer.beginning_offsets(tps)
        if since is not None:
            found = consumer.offsets_for_times({tp: int(since * 1000) for tp in tps})
            starts = {tp: found[tp].offset if found.get(tp) else ends[tp] for tp in tps}
        if until is not None:
            found = consumer.offsets_for_times({tp: int(until * 1000) for tp in tps})
            ends = {tp: found[tp].offset if found.get(tp) else ends[tp] for tp in tps}
        pending = {tp: ends[tp] for tp in tps if ends[tp] > starts[tp]}
        if not pending:
            return
        consumer.assign(list(pending))
        for tp in pending:
            consumer.seek(tp, starts[tp])
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                left = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in pending)
                raise TopicReadError(f"could not read {left} to the end within {timeout:.0f} s")
            for tp, msgs in consumer.poll(timeout_ms=500, max_records=5000).items():
                end = ends[tp]
                for msg in msgs:
                    if msg.offset >= end:
                        break
                    yield msg
            for tp in list(pending):
                if consumer.position(tp) >= pending[tp]:
                    consumer.pause(tp)
                    del pending[tp]
    finally:
        consumer.close()
