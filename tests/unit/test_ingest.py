from __future__ import annotations

import gc
import json
import math
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.facts import Fact
from engine.ingest import Rejection, validate

PARTNERS = frozenset({"US", "MX"})
NOW = time.time()


def det(**kw):
    doc = {
        "event_id": "d-1",
        "event_type": "detection",
        "occurred_at": "2026-11-28T10:00:00Z",
        "source": {"agency": "GN", "country": "MX"},
        "location": {"lat": 31.3, "lon": -110.9},
        "sensor_id": "S",
        "sensor_kind": "camera",
        "subject_kind": "person",
    }
    doc.update(kw)
    return orjson.dumps(doc)


def check(raw, etype="detection", now=None):
    from datetime import UTC, datetime

    now = datetime(2026, 11, 28, 10, 1, tzinfo=UTC).timestamp() if now is None else now
    return validate(raw, etype, now=now, partners=PARTNERS)


def test_accepts_a_valid_event():
    res = check(det())
    assert isinstance(res, Fact) and res.event_id == "d-1" and res.country == "MX"


@pytest.mark.parametrize(
    ("raw", "etype", "kind", "message"),
    [
        (b"{not json", "detection", "json", "not valid UTF-8 JSON"),
        (b"\xff\xfe", "detection", "json", "not valid UTF-8 JSON"),
        (b"[1, 2]", "detection", "json", "expected one JSON object, got a JSON list"),
        (None, "detection", "json", "tombstone"),
        (det(), "suspect", "type_mismatch", "publish it to the detection topic"),
        (det(event_type="sighting"), "detection", "schema", "event_type is 'sighting'"),
        (
            det(location={"lat": 91, "lon": 0}),
            "detection",
            "schema",
            "field 'location.lat': Input should be less than or equal to 90",
        ),
        (det(plate=7), "detection", "schema", "field 'plate'"),
        (det(extra=1), "detection", "schema", "field 'extra' is not part of a detection event"),
        (
            det(source={"agency": "X", "country": "GT"}),
            "detection",
            "unknown_partner",
            "'GT' is not a partner",
        ),
        (det(occurred_at="2026-11-28T11:00:00Z"), "detection", "future", "59.0 minutes"),
        (b" " * 70_000, "detection", "too_large", "at most 65536 bytes"),
    ],
)
def test_refusals_say_what_is_wrong(raw, etype, kind, message):
    res = check(raw, etype)
    assert isinstance(res, Rejection)
    assert res.kind == kind
    assert message in res.message


def test_deep_json_is_refused_not_crashing():
    deep = b"[" * 100_000 + b"]" * 100_000
    res = validate(deep, "detection", now=NOW, partners=PARTNERS, max_bytes=1 << 20)
    assert isinstance(res, Rejection) and res.kind == "json"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_are_accepted_or_refused_never_raise(raw):
    res = check(raw)
    assert isinstance(res, Fact | Rejection)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=12),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
            max_leaves=10,
        ),
        max_size=8,
    )
)
def test_random_objects_are_accepted_or_refused(doc):
    raw = json.dumps(doc).encode()
    res = check(raw)
    assert isinstance(res, Fact | Rejection)


def test_a_held_fact_keeps_plain_values_and_builds_its_model_again():
    res = check(det(plate="abc-12", count=3))
    assert isinstance(res, Fact)
    model = res.event
    res.settle()  # as the engine's state does when it holds the fact
    assert res._event is None and not gc.is_tracked(res._fields)  # nothing for the GC to scan
    assert res.get("plate") == "ABC12" and res.get("count") == 3
    assert res.get("source.country") == "MX" and res.get("location.lat") == 31.3
    assert res.event == model and res.event is not res.event  # built on demand, not kept
    assert res.get("source") == {"agency": "GN", "country": "MX"}
    assert res.doc == model.model_dump(mode="json", exclude_none=True)


# -- the one-pass path accepts exactly what decoding and then the model accept ------------------

ODD_VALUES = [
    None, True, False, 0, 1, -1, 2**63, 2**64, 1.5, -0.0, 1e308, 1e-320, float("nan"),
    float("inf"), "", "x", "1", "1.5", "true", "2026-11-28T10:00:00Z", "2026-02-30T10:00:00Z",
    "2026-11-28T10:00:00", "2026-11-28", "\ud800", "é", [], {}, [1], {"a": 1},
    {"lat": 1, "lon": 2}, {"agency": "A", "country": "US"}, "person", "seizure", "high",
]  # fmt: skip


FIELDS = ["count", "plate", "confidence", "lat", "agency", "occurred_at", "extra", "event_id"]


def reference(raw: bytes, etype: str):
    """The definition of a valid event: decoded by orjson, then validated by its model."""
    from pydantic import ValidationError

    from schemas.events import EVENT_MODELS

    try:
        doc = orjson.loads(raw)
        if isinstance(doc, dict) and doc.get("event_type") == etype:
            return EVENT_MODELS[etype].model_validate(doc)
    except (orjson.JSONDecodeError, ValidationError, RecursionError, ValueError):
        pass
    return None


def agrees(raw: bytes, etype: str = "detection") -> None:
    # no clock limit: a damaged digit can move occurred_at centuries ahead (year 3026)
    res = validate(raw, etype, now=math.inf, partners=frozenset({"US", "MX", "GT"}))
    ref = reference(raw, etype)
    if isinstance(res, Fact):
        assert ref is not None and res.event == ref, raw
    else:
        assert ref is None or res.kind == "unknown_partner", raw


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["", "source", "location"]),
            st.sampled_from(
                [
                    "count",
                    "plate",
                    "confidence",
                    "lat",
                    "agency",
                    "occurred_at",
                    "extra",
                    "event_id",
                ]
            ),
            st.sampled_from(ODD_VALUES),
        ),
        min_size=1,
        max_size=3,
    ),
    st.booleans(),
)
def test_one_pass_agrees_on_odd_values(changes, ascii_only):
    doc = orjson.loads(det(plate="ABC-1", count=2, confidence=0.5))
    for where, key, value in changes:
        (doc[where] if where else doc)[key] = value
    agrees(json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_one_pass_agrees_on_damaged_bytes(data):
    raw = bytearray(det(plate="ABC-1", count=2, confidence=0.5))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(raw) - 1))
        what = data.draw(st.sampled_from(["set", "delete", "insert"]))
        byte = data.draw(st.sampled_from(b'0123456789.eE+-"\\{}[],:tfnulN \x00\x01\xff\xef'))
        if what == "set":
            raw[at] = byte
        elif what == "delete":
            del raw[at]
        else:
            raw.insert(at, byte)
    agrees(bytes(raw))


@pytest.mark.parametrize(
    "raw",
    [
        det(plate="X").replace(b'"X"', b'"\\ud800"'),
        det(count=2).replace(b'"count":2', b'"count":2,"count":3'),
        det(count=2).replace(b'"count":2', b'"count":02'),
        det(confidence=0.5).replace(b"0.5", b"NaN"),
        det().replace(b'"MX"', b'"M\\u0058"'),
        b"\xef\xbb\xbf" + det(),
        det() + b" x",
        det(plate="A\x01"),
    ],
)
def test_one_pass_agrees_on_edges_of_json(raw):
    agrees(raw)
