"""What travels on the pipeline's own topics: batches of events, and dead letters."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import orjson

from engine.ingest import Rejection
from engine.rules import utc_from_ts
from schemas.deadletter import DeadLetter, DeadLetterError

# A validated item: [event JSON object, event time, ingest wall-clock time,
#                    [topic, partition, offset]].
# A routed item: [route kind, owner, event JSON object, event time, ingest wall-clock time].
# Items of the first release lack the event time; they are still read.
ValidatedItem = list[Any]
RoutedItem = list[Any]


def encode_batch(items: list[list[Any]]) -> bytes:
    return orjson.dumps(items)


def decode_batch(raw: bytes) -> list[list[Any]]:
    items = orjson.loads(raw)
    if not isinstance(items, list):
        raise ValueError("an internal batch must be a JSON list")
    return items


def _event_time(doc: dict[str, Any]) -> float:
    return datetime.fromisoformat(doc["occurred_at"]).timestamp()


def validated_items(items: list[list[Any]]) -> list[list[Any]]:
    """Validated items in the current shape."""
    return [it if len(it) == 4 else [it[0], _event_time(it[0]), it[1], it[2]] for it in items]


def routed_items(items: list[list[Any]]) -> list[list[Any]]:
    """Routed items in the current shape."""
    return [
        it if len(it) == 5 else [it[0], it[1], it[2], _event_time(it[2]), it[3]] for it in items
    ]


def dead_letter(
    topic: str, partition: int, offset: int, raw: bytes | None, why: Rejection, now: float
) -> bytes:
    """The dead-letter record of one refused message, holding the original payload."""
    payload = raw or b""
    try:
        text, encoding = payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(payload).decode("ascii"), "base64"
    dl = DeadLetter(
        received_at=utc_from_ts(now),
        topic=topic,
        partition=partition,
        offset=offset,
        error=DeadLetterError(kind=why.kind, message=why.message),
        payload=text,
        payload_encoding=encoding,
    )
    return orjson.dumps(dl.model_dump(mode="json"))
