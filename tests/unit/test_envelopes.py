from __future__ import annotations

import base64

import orjson
import pytest

from engine.ingest import Rejection
from engine.routing import Origin, RoutedItem
from engine.watermarks import InputPartition, Mark
from streams.worker.envelopes import dead_letter, decode_routed, encode_routed

DOC = {"event_id": "e", "occurred_at": "2026-11-28T10:00:00+00:00"}
TS = 1795860000.0


def test_routed_batches_round_trip_typed():
    item = RoutedItem("plate:ABC1", "plate", True, True, DOC, TS, 5.0, Origin("t", 2, 7))
    t2, t3 = InputPartition("t", 2), InputPartition("t", 3)
    raw = encode_routed([item], {t2: Mark(TS - 1, False), t3: Mark(9, True)})
    assert set(orjson.loads(raw)["marks"]) == {"t:2", "t:3"}  # named where they travel
    batch = decode_routed(raw)
    assert batch.items == [item]
    assert batch.items[0].origin.source == t2
    assert batch.marks == {t2: Mark(TS - 1, False), t3: Mark(9.0, True)}


def test_only_what_encode_routed_writes_is_read():
    for raw in (orjson.dumps([["plate", True, DOC, 5.0]]), b'{"v": 1, "items": []}', None):
        with pytest.raises(ValueError, match="must be a v2 JSON object"):
            decode_routed(raw)


def test_dead_letter_keeps_the_payload_as_text_or_base64():
    dl = orjson.loads(
        dead_letter("events.tracking", 2, 7, b"\xff\x00", Rejection("json", "bad"), 0)
    )
    assert dl["payload_encoding"] == "base64"
    assert base64.b64decode(dl["payload"]) == b"\xff\x00"
    assert dl["error"] == {"kind": "json", "message": "bad"}
    assert (dl["topic"], dl["partition"], dl["offset"]) == ("events.tracking", 2, 7)
    text = orjson.loads(dead_letter("t", 0, 0, b'{"a":1', Rejection("json", "x"), 0))
    assert text["payload"] == '{"a":1' and text["payload_encoding"] == "utf-8"
