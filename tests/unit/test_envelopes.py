from __future__ import annotations

import base64

import orjson

from engine.ingest import Rejection
from streams.envelopes import dead_letter, routed_items, validated_items

DOC = {"event_id": "e", "occurred_at": "2026-11-28T10:00:00+00:00"}
TS = 1795860000.0


def test_items_of_the_first_release_are_still_read():
    assert validated_items([[DOC, 5.0, ["t", 0, 1]]]) == [[DOC, TS, 5.0, ["t", 0, 1]]]
    assert validated_items([[DOC, 1.0, 5.0, ["t", 0, 1]]])[0][1] == 1.0
    assert routed_items([["plate", True, DOC, 5.0]]) == [["plate", True, DOC, TS, 5.0]]


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
