"""Decode and validate one raw message: an accepted fact, or a rejection a person can act on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson
import shapely
from pydantic import ValidationError

from engine.border import default_border
from engine.facts import Fact
from engine.geo import haversine_km
from schemas.events import (
    EVENT_MODELS,
    MAX_AUTHORIZATION_RADIUS_M,
    Authorization,
    Event,
    EventType,
)

MAX_MESSAGE_BYTES = 64 * 1024
MAX_FUTURE_S = 300.0


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message was refused: the dead letter's `error`."""

    kind: str
    message: str


def _schema_message(e: ValidationError, etype: str) -> str:
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(event)"
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {str(got)[:60]!r})"
        if err["type"] == "extra_forbidden":
            parts.append(f"field '{loc}' is not part of a {etype} event")
        else:
            parts.append(f"field '{loc}': {err['msg']}{shown}")
    more = f"; and {e.error_count() - 5} more" if e.error_count() > 5 else ""
    return f"not a valid {etype} event: " + "; ".join(parts) + more


def validate(
    raw: bytes | None,
    expected_type: EventType,
    *,
    now: float,
    partners: frozenset[str],
    max_bytes: int = MAX_MESSAGE_BYTES,
    issuer: str | None = None,
) -> Fact | Rejection:
    """Check one message from the topic of `expected_type` events at wall-clock `now`;
    `issuer`, for a partner's own authorizations topic, is that partner."""
    if raw is None:
        return Rejection("json", "the message has no value (a tombstone); send one JSON object")
    if len(raw) > max_bytes:
        return Rejection(
            "too_large",
            f"the message is {len(raw)} bytes; events may be at most {max_bytes} bytes",
        )
    # The common case in one pass: pydantic parses the JSON itself. What it does not accept
    # goes the long way (decode, then the model), which says precisely what is wrong.
    event: Event | None = None
    parse = _FROM_JSON.get(expected_type)
    if parse is not None:
        try:
            event = parse(raw)
        except (ValidationError, RecursionError, ValueError):
            event = None
    if event is None:
        checked = _decode_and_validate(raw, expected_type)
        if isinstance(checked, Rejection):
            return checked
        event = checked
    if event.source.country not in partners:
        return Rejection(
            "unknown_partner",
            f"source.country {event.source.country!r} is not a partner of this pipeline "
            f"(partners: {', '.join(sorted(partners))})",
        )
    if isinstance(event, Authorization):
        refused = _issuer_refusal(event, partners, issuer)
        if refused is not None:
            return refused
    fact = Fact(event, raw)
    if fact.ts > now + MAX_FUTURE_S:
        return Rejection(
            "future",
            f"occurred_at {event.occurred_at.isoformat()} is {(fact.ts - now) / 60:.1f} minutes "
            "in the future; at most 5 minutes are allowed: check the sender's clock and offset",
        )
    return fact


def _issuer_refusal(
    event: Authorization, partners: frozenset[str], topic_owner: str | None = None
) -> Rejection | None:
    """Only the host country issues an authorization: it comes from that partner's own topic
    (`topic_owner`, which only it may write on the secure broker) with its `source.country`,
    the area's centre (`location`) is in its territory, and the guests are a partner."""
    if topic_owner is not None and event.source.country != topic_owner:
        return Rejection(
            "wrong_issuer",
            f"source.country is {event.source.country} on {topic_owner}'s authorizations "
            f"topic: each partner publishes only its own authorizations, on its own topic",
        )
    if event.guest_country not in partners:
        return Rejection(
            "unknown_partner",
            f"guest_country {event.guest_country!r} is not a partner of this pipeline "
            f"(partners: {', '.join(sorted(partners))})",
        )
    if event.action != "grant":
        return None
    issuer = event.source.country
    lat, lon = event.location.lat, event.location.lon
    host = default_border().country_at(lat, lon)
    if host != issuer:
        return Rejection(
            "wrong_issuer",
            f"the authorization's location ({lat}, {lon}) is in {host} territory; only {host} "
            f"may authorize operations there, and source.country is {issuer}: have {host}'s "
            "agency issue it",
        )
    area = event.area
    if area is not None and area.polygon is not None:
        ring = shapely.Polygon([(x, y) for y, x in area.polygon])
        if not ring.is_valid:
            return Rejection(
                "schema",
                f"area.polygon is not a valid polygon ({shapely.is_valid_reason(ring)}); "
                "give a simple ring",
            )
        if not shapely.contains_xy(ring, lon, lat):
            return Rejection(
                "schema", "location must be inside area.polygon (it is the area's centre)"
            )
        far = max(haversine_km(lat, lon, y, x) for y, x in area.polygon) * 1000
        if far > MAX_AUTHORIZATION_RADIUS_M:
            return Rejection(
                "schema",
                f"area.polygon reaches {far:.0f} m from location; at most "
                f"{MAX_AUTHORIZATION_RADIUS_M:.0f} m",
            )
    return None


def _decode_and_validate(raw: bytes, expected_type: EventType) -> Event | Rejection:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return Rejection("json", f"not valid UTF-8 JSON: {e}")
    if not isinstance(doc, dict):
        return Rejection("json", f"expected one JSON object, got a JSON {type(doc).__name__}")
    etype = doc.get("event_type")
    if etype != expected_type:
        if isinstance(etype, str) and etype in EVENT_MODELS:
            return Rejection(
                "type_mismatch",
                f"a {etype} event was published to the topic of {expected_type} events; "
                f"publish it to the {etype} topic",
            )
        shown = repr(etype) if isinstance(etype, str | None) else f"a JSON {type(etype).__name__}"
        return Rejection(
            "schema",
            f"event_type is {shown[:80]}; on this topic it must be {expected_type!r}",
        )
    try:
        return EVENT_MODELS[expected_type].model_validate(doc)
    except ValidationError as e:
        return Rejection("schema", _schema_message(e, expected_type))
    except (RecursionError, ValueError) as e:
        return Rejection("schema", f"not a valid {expected_type} event: {e}")


# Each event model's own JSON validator (what `model_validate_json` calls, without its
# Python-level wrapper): accepts exactly what decoding and then `model_validate` accept,
# with equal models (tests/unit/test_ingest.py compares the two).
_FROM_JSON: dict[EventType, Callable[[bytes], Event]] = {
    t: m.__pydantic_validator__.validate_json for t, m in EVENT_MODELS.items()
}
