"""A validated event with the few derived values the rules read, computed once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from engine.border import default_border
from schemas.events import EVENT_MODELS, Event, normalize_plate

_MISSING = object()
_NESTED = ("source", "location")


class Fact:
    """One accepted event as the engine sees it: event time in epoch seconds, position, and
    the event itself, as a model (validated at ingest) or as its canonical JSON object (read
    back from the pipeline's own topics, where it is trusted and not validated again).

    Once held in state (`settle`), a validated fact keeps its field values as plain dicts
    and its message bytes, not the model: thousands of held models make every pass of
    Python's garbage collector slow. The model is built again if asked for."""

    __slots__ = (
        "_derived",
        "_doc",
        "_event",
        "_fields",
        "_flat",
        "_raw",
        "_taken",
        "country",
        "event_id",
        "event_type",
        "lat",
        "lon",
        "ts",
    )

    def __init__(self, event: Event, raw: bytes | None = None) -> None:
        """A fact from a validated event; `raw`, the JSON it was validated from, lets a held
        fact drop the model."""
        self._event: Event | None = event
        self._raw = raw
        self._fields: dict[str, Any] | None = None
        self._flat = False
        self._doc: dict[str, Any] | None = None
        self.event_id = event.event_id
        self.event_type = event.event_type
        self.ts = event.occurred_at.timestamp()
        self.lat = event.location.lat
        self.lon = event.location.lon
        self.country = event.source.country
        self._derived: dict[str, Any] = {}
        self._taken: tuple[object, list[Any]] | None = None

    @classmethod
    def from_doc(cls, doc: dict[str, Any], ts: float | None = None) -> Fact:
        """A fact from an event's canonical JSON object (`Fact.doc`), without validation."""
        f = cls.__new__(cls)
        f._event = None
        f._raw = None
        f._fields = doc
        f._flat = False
        f._doc = doc
        f.event_id = doc["event_id"]
        f.event_type = doc["event_type"]
        f.ts = ts if ts is not None else datetime.fromisoformat(doc["occurred_at"]).timestamp()
        loc = doc["location"]
        f.lat = loc["lat"]
        f.lon = loc["lon"]
        f.country = doc["source"]["country"]
        f._derived = {}
        f._taken = None
        return f

    @property
    def event(self) -> Event:
        """The event model. A fact holding plain values builds it on each call and does not
        keep it (it is needed rarely: for the score of an alert)."""
        if self._event is not None:
            return self._event
        model = EVENT_MODELS[self.event_type]
        if self._raw is not None:  # validated at ingest from these bytes: validate them again
            try:  # as ingest does: the JSON validator, then decode-and-validate
                return model.__pydantic_validator__.validate_json(self._raw)  # type: ignore[no-any-return]
            except ValueError:
                return model.model_validate(orjson.loads(self._raw))
        assert self._doc is not None
        return model.model_validate(self._doc)

    @property
    def doc(self) -> dict[str, Any]:
        """The event as its canonical JSON object (defaults filled, nulls left out)."""
        if self._doc is None:
            self._doc = self.event.model_dump(mode="json", exclude_none=True)
        return self._doc

    def settle(self) -> None:
        """The fact is being held in state: keep plain values, drop the model (if it can be
        built again) and the per-event caches."""
        self._taken = None
        ev = self._event
        if ev is None or self._raw is None:
            return
        # Flat, with atomic values only: such a dict is not tracked by the garbage collector.
        fields = {k: v for k, v in ev.__dict__.items() if k not in _NESTED}
        for part in _NESTED:
            for k, v in getattr(ev, part).__dict__.items():
                fields[f"{part}.{k}"] = v
        self._fields = fields
        self._flat = True
        self._event = None

    def get(self, name: str) -> Any:
        """A field by name: event fields, `source.agency`, `source.country`, or a derived one.

        Derived: `plate` (normalised), `border_km` (distance to the border), `territory`
        (the country whose territory holds the location), `own_forces` (`own-forces` for a
        patrol's track or an authorization: the key the incursion rule routes them by).
        """
        d = self._derived
        value = d.get(name, _MISSING)
        if value is _MISSING:
            value = d[name] = self._compute(name)
        return value

    def _field(self, name: str) -> Any:
        ev = self._event
        if ev is not None:
            return getattr(ev, name, None)
        fields = self._fields
        assert fields is not None
        if self._flat and name in _NESTED:
            head = name + "."
            return {k[len(head) :]: v for k, v in fields.items() if k.startswith(head)}
        return fields.get(name)

    def _compute(self, name: str) -> Any:
        if name == "plate":
            raw = self._field("plate")
            return normalize_plate(raw) if raw else None
        if name == "border_km":
            return default_border().distance_km(self.lat, self.lon)
        if name == "territory":
            return default_border().country_at(self.lat, self.lon)
        if name == "own_forces":  # one routing key for every patrol position and permit
            if self.event_type == "authorization" or self._field("patrol_unit"):
                return "own-forces"
            return None
        if name in ("person_ref", "serial", "track_id", "patrol_unit"):
            raw = self._field(name)
            return raw.strip().upper() if isinstance(raw, str) and raw.strip() else None
        head, dot, tail = name.partition(".")
        if dot and head in _NESTED:
            if self._flat:
                assert self._fields is not None
                return self._fields.get(name)
            part = self._field(head)
            return part.get(tail) if isinstance(part, dict) else getattr(part, tail, None)
        return self._field(name)

    def __repr__(self) -> str:
        return f"Fact({self.event_type} {self.event_id} @ {self.ts})"
