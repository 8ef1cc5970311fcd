from __future__ import annotations

import json
from typing import get_args

import pytest
from pydantic import ValidationError

from engine.ruletests import _DEFAULTS
from schemas import Detection, Suspect, Track, Weapon, normalize_plate
from schemas.events import EVENT_MODELS, EventType
from schemas.generate import expected
from streams.settings import CAUGHT_UP_LAG_S, Settings

BASE = {
    "event_id": "e-1",
    "occurred_at": "2026-11-28T10:00:00-07:00",
    "source": {"agency": "CBP", "country": "US"},
    "location": {"lat": 31.33, "lon": -110.94, "accuracy_m": 5},
}


def test_detection_defaults_and_frozen():
    d = Detection.model_validate(
        {
            **BASE,
            "event_type": "detection",
            "sensor_id": "S",
            "sensor_kind": "lpr",
            "subject_kind": "vehicle",
        }
    )
    assert d.count == 1 and d.confidence == 1.0 and d.plate is None
    assert d.occurred_at.utcoffset() is not None
    with pytest.raises(ValidationError):
        d.count = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        (Suspect, {"event_type": "suspect", "person_ref": "P", "watchlist": "w", "risk": "high"}),
        (Weapon, {"event_type": "weapon", "weapon_event": "trace", "serial": "X1"}),
        (
            Track,
            {"event_type": "track", "track_id": "T", "subject_kind": "vessel", "heading_deg": 360},
        ),
    ],
)
def test_each_type_validates(model, extra):
    assert model.model_validate({**BASE, **extra}).event_id == "e-1"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"occurred_at": "2026-11-28T10:00:00"}, "timezone"),
        ({"occurred_at": 1700000000}, "RFC 3339"),
        ({"location": {"lat": 95, "lon": 0}}, "less than or equal to 90"),
        ({"source": {"agency": "CBP", "country": "usa"}}, "should match pattern"),
        ({"event_id": ""}, "at least 1 character"),
        ({"event_id": "x" * 129}, "at most 128 characters"),
        ({"confidence": 1.5}, "less than or equal to 1"),
        ({"count": 0}, "greater than or equal to 1"),
        ({"sensor_kind": "sonar"}, "'lpr'"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_detection_refusals(patch, message):
    doc = {
        **BASE,
        "event_type": "detection",
        "sensor_id": "S",
        "sensor_kind": "lpr",
        "subject_kind": "vehicle",
        **patch,
    }
    with pytest.raises(ValidationError, match=message):
        Detection.model_validate(doc)


def test_plate_normalisation():
    assert normalize_plate("abc-123") == "ABC123"
    assert normalize_plate(" Ab c 1-2 ") == "ABC12"


def test_json_schema_files_are_current():
    stale = [
        p.name
        for p, text in expected().items()
        if not p.exists() or p.read_text(encoding="utf-8") != text
    ]
    assert not stale, f"run `python -m schemas.generate`: stale {stale}"


def test_json_schema_is_usable_json():
    for path in expected():
        doc = json.loads(path.read_text())
        assert doc["$schema"].startswith("https://json-schema.org/")
        assert doc.get("additionalProperties") is False


def test_one_table_of_event_types():
    """`EventType` and `EVENT_MODELS` name the same types, each model its own; every other
    table per event type is keyed by exactly those."""
    types = list(get_args(EventType))
    assert list(EVENT_MODELS) == types
    for event_type, model in EVENT_MODELS.items():
        assert get_args(model.model_fields["event_type"].annotation) == (event_type,)
    assert list(Settings().input_topics) == types
    assert set(CAUGHT_UP_LAG_S) == set(types)
    assert set(_DEFAULTS) == set(types)
