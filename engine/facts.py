"""A validated event with the few derived values the rules read, computed once."""

from __future__ import annotations

from typing import Any

from engine.border import default_border
from schemas.events import EVENT_MODELS, Event, normalize_plate

_MISSING = object()


class Fact:
    """One accepted event as the engine sees it: the model plus event time in epoch seconds."""

    __slots__ = (
        "_derived",
        "_doc",
        "country",
        "event",
        "event_id",
        "event_type",
        "lat",
        "lon",
        "ts",
    )

    def __init__(self, event: Event, doc: dict[str, Any] | None = None) -> None:
        self.event = event
        self._doc = doc
        self.event_id = event.event_id
        self.event_type = event.event_type
        self.ts = event.occurred_at.timestamp()
        self.lat = event.location.lat
        self.lon = event.location.lon
        self.country = event.source.country
        self._derived: dict[str, Any] | None = None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Fact:
        """A fact from an event's JSON object (validated again: it may come from a topic)."""
        return cls(EVENT_MODELS[doc["event_type"]].model_validate(doc), doc)

    @property
    def doc(self) -> dict[str, Any]:
        """The event as a JSON-able object."""
        if self._doc is None:
            self._doc = self.event.model_dump(mode="json", exclude_none=True)
        return self._doc

    def get(self, name: str) -> Any:
        """A field by name: event fields, `source.agency`, `source.country`, or a derived one.

        Derived: `plate` (normalised), `border_km` (distance to the border), `territory`
        (the country whose territory holds the location).
        """
        d = self._derived
        if d is None:
            d = self._derived = {}
        value = d.get(name, _MISSING)
        if value is _MISSING:
            value = d[name] = self._compute(name)
        return value

    def _compute(self, name: str) -> Any:
        ev = self.event
        if name == "plate":
            raw = getattr(ev, "plate", None)
            return normalize_plate(raw) if raw else None
        if name == "border_km":
            return default_border().distance_km(self.lat, self.lon)
        if name == "territory":
            return default_border().country_at(self.lat, self.lon)
        if name in ("person_ref", "serial", "track_id"):
            raw = getattr(ev, name, None)
            return raw.strip().upper() if isinstance(raw, str) and raw.strip() else None
        if name.startswith("source."):
            return getattr(ev.source, name[7:], None)
        if name.startswith("location."):
            return getattr(ev.location, name[9:], None)
        return getattr(ev, name, None)

    def __repr__(self) -> str:
        return f"Fact({self.event_type} {self.event_id} @ {self.ts})"
