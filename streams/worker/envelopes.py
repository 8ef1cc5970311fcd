"""What travels on the pipeline's own topics: routed batches with their marks, and dead letters."""

from __future__ import annotations

import base64
import math
from typing import NamedTuple

import orjson

from engine.ingest import Rejection
from engine.routing import Origin, RoutedItem
from engine.rules import utc_from_ts
from engine.watermarks import InputPartition, Mark
from schemas.deadletter import DeadLetter, DeadLetterError


class RoutedBatch(NamedTuple):
    """One message of `fusion.routed`: routed copies, and the marks of the input partitions
    the ingest stage read them from (sent to every partition, with or without copies, so
    each partition's watermark follows every source)."""

    items: list[RoutedItem]
    marks: dict[InputPartition, Mark]


def encode_routed(items: list[RoutedItem], marks: dict[InputPartition, Mark]) -> bytes:
    return orjson.dumps(
        {
            "v": 2,
            "items": [
                [
                    it.route,
                    it.kind,
                    it.owner,
                    it.primary,
                    it.doc,
                    it.ts,
                    it.ingested_at,
                    list(it.origin),
                ]
                for it in items
            ],
            "marks": {str(source): [_num(m.watermark), m.idle] for source, m in marks.items()},
        }
    )


def decode_routed(raw: bytes | None) -> RoutedBatch:
    """What `encode_routed` wrote; ValueError for anything else."""
    if raw is None:
        raise ValueError("a routed message must be a v2 JSON object, not a tombstone")
    doc = orjson.loads(raw)
    if not isinstance(doc, dict) or doc.get("v") != 2:
        raise ValueError("a routed message must be a v2 JSON object")
    items = [
        RoutedItem(r, k, o, p, d, ts, t_in, Origin(*origin))
        for r, k, o, p, d, ts, t_in, origin in doc["items"]
    ]
    marks = {
        InputPartition.parse(name): Mark(-math.inf if w is None else float(w), bool(idle))
        for name, (w, idle) in doc["marks"].items()
    }
    return RoutedBatch(items, marks)


def _num(x: float) -> float | None:
    """JSON has no infinities: a source with no event yet has watermark null."""
    return None if math.isinf(x) else x


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
