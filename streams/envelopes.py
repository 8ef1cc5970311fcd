"""What travels on the pipeline's own topics: batches of events, and dead letters."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from engine.ingest import Rejection
from engine.rules import utc_from_ts
from schemas.deadletter import DeadLetter, DeadLetterError

# A validated item: [event JSON object, ingest wall-clock time, [topic, partition, offset]].
# A routed item: [route kind, owner, event JSON object, ingest wall-clock time].
ValidatedItem = list[Any]
RoutedItem = list[Any]


def encode_batch(items: list[list[Any]]) -> bytes:
    return orjson.dumps(items)


def decode_batch(raw: bytes) -> list[list[Any]]:
    items = orjson.loads(raw)
    if not isinstance(items, list):
        raise ValueError("an internal batch must be a JSON list")
    return items


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
