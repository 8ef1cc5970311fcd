"""Input events, exactly as the wire contract (docs/contract.md, "Events") defines them."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, field_validator, model_validator

from schemas.base import WireModel

EventType = Literal["detection", "suspect", "weapon", "track", "tip", "authorization"]
"""Every event type; `EVENT_MODELS` gives each its model, and every other table per event type
(the settings' input topics, the pipeline's per-type defaults) is keyed by it."""
SubjectKind = Literal["person", "vehicle", "vessel", "aircraft", "drone", "unknown"]
SensorKind = Literal["lpr", "camera", "radar", "seismic", "thermal", "inspection", "other"]
Risk = Literal["low", "medium", "high"]
WeaponEventKind = Literal["seizure", "trace", "theft", "sighting"]
TipCategory = Literal["drugs", "weapons", "people", "money"]
TipChannel = Literal["hotline", "app", "officer"]
Reliability = Literal["A", "B", "C", "D", "E", "F"]
"""Admiralty code, source reliability: A completely reliable, B usually reliable, C fairly
reliable, D not usually reliable, E unreliable, F reliability cannot be judged."""
Credibility = Annotated[int, Field(strict=True, ge=1, le=6)]
"""Admiralty code, information credibility: 1 confirmed by other sources, 2 probably true,
3 possibly true, 4 doubtful, 5 improbable, 6 truth cannot be judged."""

_NOT_ALNUM = re.compile(r"[^A-Z0-9]")


def normalize_plate(plate: str) -> str:
    """Upper case, letters and digits only: the form plates are matched in."""
    return _NOT_ALNUM.sub("", plate.upper())


Text = Annotated[str, Field(min_length=1, max_length=256)]


class Source(WireModel):
    """Who reported the event."""

    agency: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        description="Reporting agency, e.g. CBP, USBP, ATF, SEDENA, GN, FGR."
    )
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = Field(
        description="ISO 3166-1 alpha-2 code of the reporting agency's country, "
        "one of the configured partners: the data's home."
    )


class Location(WireModel):
    """Where the event happened (WGS-84)."""

    lat: float = Field(ge=-90, le=90, description="Latitude in WGS-84 degrees.")
    lon: float = Field(ge=-180, le=180, description="Longitude in WGS-84 degrees.")
    accuracy_m: float | None = Field(
        default=None, ge=0, le=1e7, description="One-sigma horizontal error in metres."
    )


class EventBase(WireModel):
    """Fields common to every event."""

    event_id: Annotated[str, Field(min_length=1, max_length=128)] = Field(
        description="Unique per event; a repeated id is never correlated twice."
    )
    occurred_at: AwareDatetime = Field(
        description="Event time, RFC 3339 date-time with offset; at most 5 minutes in the future."
    )
    source: Source = Field(description="Who reported the event.")
    location: Location = Field(description="Where it happened.")

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _rfc3339_text(cls, value: Any) -> Any:
        if not isinstance(value, str | datetime):
            raise ValueError("must be an RFC 3339 date-time string with an offset")
        return value


class Detection(EventBase):
    """A sensor or officer detected something at the border."""

    event_type: Literal["detection"] = Field(description="Always `detection`.")
    sensor_id: Text = Field(description="The detecting sensor's identifier.")
    sensor_kind: SensorKind = Field(description="What kind of sensor detected it.")
    subject_kind: SubjectKind = Field(description="What was detected.")
    count: int = Field(default=1, ge=1, le=100_000, description="How many subjects.")
    plate: Text | None = Field(default=None, description="Vehicle plate read, if any.")
    confidence: float = Field(default=1.0, ge=0, le=1, description="Detection confidence, 0-1.")


class Suspect(EventBase):
    """A person of interest reported by an agency (watchlist)."""

    event_type: Literal["suspect"] = Field(description="Always `suspect`.")
    person_ref: Text = Field(description="The agency's own identifier of the person.")
    watchlist: Text = Field(description="Watchlist category.")
    risk: Risk = Field(description="Assessed risk.")
    plate: Text | None = Field(default=None, description="A vehicle plate tied to the person.")
    confidence: float = Field(default=1.0, ge=0, le=1, description="Confidence, 0-1.")


class Weapon(EventBase):
    """A weapon seizure, trace, theft or sighting."""

    event_type: Literal["weapon"] = Field(description="Always `weapon`.")
    weapon_event: WeaponEventKind = Field(description="What happened to the weapon.")
    serial: Text | None = Field(default=None, description="Serial number.")
    make: Text | None = Field(default=None, description="Manufacturer.")
    model: Text | None = Field(default=None, description="Model.")
    caliber: Text | None = Field(default=None, description="Caliber.")
    quantity: int = Field(default=1, ge=1, le=1_000_000, description="How many weapons.")
    plate: Text | None = Field(default=None, description="A linked vehicle plate.")
    person_ref: Text | None = Field(default=None, description="A linked person.")


class Track(EventBase):
    """A track update of a vehicle, vessel, aircraft or person."""

    event_type: Literal["track"] = Field(description="Always `track`.")
    track_id: Text = Field(description="The tracker's identifier of the track.")
    subject_kind: SubjectKind = Field(description="What is tracked.")
    speed_mps: float | None = Field(default=None, ge=0, le=10_000, description="Speed, m/s.")
    heading_deg: float | None = Field(default=None, ge=0, le=360, description="Heading, degrees.")
    plate: Text | None = Field(default=None, description="Vehicle plate, if known.")
    patrol_unit: Text | None = Field(
        default=None,
        description="Set when the tracked subject is a patrol of the reporting agency (own "
        "forces): the unit's id. The sharing policy treats these tracks apart "
        "(docs/sharing-policy.md).",
    )


class Tip(EventBase):
    """A community tip (hotline, app, or an officer's report of one), graded with the
    Admiralty code."""

    event_type: Literal["tip"] = Field(description="Always `tip`.")
    uncertainty_m: float = Field(
        ge=0,
        le=1e7,
        description="Radius, in metres, within which the reported place lies: how precisely "
        "the tipster could say where.",
    )
    category: TipCategory = Field(description="What the tip is about.")
    text: Annotated[str, Field(min_length=1, max_length=2000)] = Field(
        description="The tipster's own words (personal data: it does not cross the border "
        "under the default sharing policy)."
    )
    channel: TipChannel = Field(description="How the tip came in.")
    reliability: Reliability = Field(
        description="Admiralty source reliability: A completely reliable, B usually reliable, "
        "C fairly reliable, D not usually reliable, E unreliable, F cannot be judged."
    )
    credibility: Credibility = Field(
        description="Admiralty information credibility: 1 confirmed, 2 probably true, "
        "3 possibly true, 4 doubtful, 5 improbable, 6 cannot be judged."
    )
    plate: Text | None = Field(default=None, description="A vehicle plate the tip names.")
    person_ref: Text | None = Field(default=None, description="A person the tip names.")


MAX_AUTHORIZATION_RADIUS_M = 25_000.0
MAX_AUTHORIZATION_DAYS = 31


class AuthorizationArea(WireModel):
    """Where an authorization holds: a circle round the event's `location`, or a polygon."""

    radius_m: float | None = Field(
        default=None,
        gt=0,
        le=MAX_AUTHORIZATION_RADIUS_M,
        description="A circle of this radius, in metres, round the event's `location`.",
    )
    polygon: list[tuple[float, float]] | None = Field(
        default=None,
        min_length=4,
        max_length=500,
        description="A closed ring of [lat, lon] WGS-84 points (first equal to last) holding "
        "the event's `location`, at most 25 km from it.",
    )

    @model_validator(mode="after")
    def _one_shape(self) -> AuthorizationArea:
        if (self.radius_m is None) == (self.polygon is None):
            raise ValueError("give exactly one of radius_m (a circle round location) or polygon")
        if self.polygon is not None:
            if self.polygon[0] != self.polygon[-1]:
                raise ValueError("polygon: the ring must be closed (first point equal to last)")
            for lat, lon in self.polygon:
                if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                    raise ValueError(f"polygon: [{lat}, {lon}] is not a [lat, lon] point")
        return self


class Authorization(EventBase):
    """A host country's permit for a joint operation: named units of the other country may be
    in an area of its territory for a time. `source` is the issuing agency (of the host
    country), `occurred_at` the time of issue; `action: revoke` withdraws the permit named by
    `reference` from its `occurred_at` on."""

    event_type: Literal["authorization"] = Field(description="Always `authorization`.")
    action: Literal["grant", "revoke"] = Field(
        description="`grant` issues the permit; `revoke` withdraws the permit `reference` names."
    )
    reference: Text = Field(description="The issuing agency's reference of the permit.")
    guest_country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = Field(
        description="ISO 3166-1 alpha-2 of the country whose units are authorized (not the host)."
    )
    units: list[Text] = Field(
        default_factory=list,
        max_length=100,
        description="The authorized units' ids (`patrol_unit` of their tracks); for a grant, at "
        "least one.",
    )
    area: AuthorizationArea | None = Field(
        default=None, description="Where it holds; required for a grant."
    )
    valid_from: AwareDatetime | None = Field(
        default=None, description="Start of validity; required for a grant."
    )
    valid_until: AwareDatetime | None = Field(
        default=None,
        description=f"End of validity, after valid_from, at most {MAX_AUTHORIZATION_DAYS} days "
        "later; required for a grant.",
    )

    @model_validator(mode="after")
    def _grant_is_complete(self) -> Authorization:
        if self.guest_country == self.source.country:
            raise ValueError(
                "guest_country is the issuer's own country: an authorization admits the other "
                "country's units"
            )
        if self.action == "revoke":
            return self
        missing = [n for n in ("area", "valid_from", "valid_until") if getattr(self, n) is None] + (
            ["units"] if not self.units else []
        )
        if missing:
            raise ValueError(f"a grant needs {', '.join(missing)}")
        assert self.valid_from is not None and self.valid_until is not None
        span = (self.valid_until - self.valid_from).total_seconds()
        if span <= 0:
            raise ValueError("valid_until must be after valid_from")
        if span > MAX_AUTHORIZATION_DAYS * 86400:
            raise ValueError(f"the validity window is longer than {MAX_AUTHORIZATION_DAYS} days")
        return self


Event = Detection | Suspect | Weapon | Track | Tip | Authorization

EVENT_MODELS: dict[
    EventType,
    type[Detection] | type[Suspect] | type[Weapon] | type[Track] | type[Tip] | type[Authorization],
] = {
    "detection": Detection,
    "suspect": Suspect,
    "weapon": Weapon,
    "track": Track,
    "tip": Tip,
    "authorization": Authorization,
}

COMMON_FIELDS = frozenset({"event_id", "event_type", "occurred_at", "source"})
