"""Alerts as released to one destination country (docs/contract.md, "Alerts")."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, Field

from schemas.base import WireModel
from schemas.events import EventType, Source

ALERT_TOPIC_PREFIX = "alerts."


def alert_topic(country: str, prefix: str = ALERT_TOPIC_PREFIX) -> str:
    """The topic of the alerts released to a partner: `alerts.<iso2 lower>`."""
    return f"{prefix}{country.lower()}"


Severity = Literal["low", "medium", "high", "critical"]
Tlp = Literal["TLP:RED", "TLP:AMBER+STRICT", "TLP:AMBER", "TLP:GREEN", "TLP:CLEAR"]
Action = Literal["release", "pseudonymize", "generalize", "redact", "drop"]
Change = Literal["raised", "updated", "withdrawn"]


class Point(WireModel):
    """A position as released to the destination."""

    lat: float = Field(ge=-90, le=90, description="Latitude, WGS-84 degrees.")
    lon: float = Field(ge=-180, le=180, description="Longitude, WGS-84 degrees.")
    precision_m: int | None = Field(
        default=None,
        description="Set when the position was generalized: it is the centre of a grid cell "
        "this many metres wide.",
    )


class Evidence(WireModel):
    """One event that contributed to the alert, as released to this destination."""

    event_id: str = Field(description="The event's id.")
    event_type: EventType = Field(description="The event's type.")
    occurred_at: AwareDatetime = Field(description="The event's time.")
    source: Source = Field(description="Who reported it.")
    fields: dict[str, Any] = Field(
        description="The event's other fields, each as released to this destination."
    )


class Redaction(WireModel):
    """A field not released as is."""

    path: str = Field(description="Where the field was, e.g. `evidence[0].fields.plate`.")
    action: Action = Field(description="What was done to it.")
    policy_rule: str = Field(description="The sharing-policy rule that decided it.")


class PolicyRef(WireModel):
    """The sharing policy applied."""

    id: str = Field(description="Policy id.")
    version: str = Field(description="Policy version.")
    sha256: str = Field(description="SHA-256 of the policy as loaded.")


class EvidenceReason(WireModel):
    """Why one piece of evidence counts: the selector it matched and the conditions it met."""

    event_id: str = Field(description="The event's id (as in `evidence`).")
    role: str = Field(description="The rule's name for what the event is, e.g. `seizure`.")
    met: list[str] = Field(
        description="Each condition the event met, in words, with the measured value."
    )


class Explanation(WireModel):
    """Why the rule fired, from the engine's own record of the match. Matched values are not
    repeated here: `key_path` points at the field as released to this destination."""

    rule_type: str = Field(description="The rule's type, e.g. `proximity`.")
    summary: str = Field(description="The rule's conditions, in words.")
    window_start: AwareDatetime = Field(description="Start of the event-time window examined.")
    window_end: AwareDatetime = Field(description="End of the event-time window examined.")
    key: str | None = Field(description="The entity key the rule correlates by, if any.")
    key_path: str | None = Field(
        description="Where the matched key's value is in this alert, e.g. "
        "`evidence[0].fields.plate` (a pseudonym where the policy says so)."
    )
    conditions: list[str] = Field(description="Each condition of the rule, as it held.")
    absence_checked_until: AwareDatetime | None = Field(
        default=None,
        description="For a rule that fires on an absence: event time up to which it was checked.",
    )
    evidence: list[EvidenceReason] = Field(description="Per evidence event, why it counts.")


class Revision(WireModel):
    """What changed in this version of the alert, and why."""

    reason: str = Field(description="Why, in words, e.g. `an inspection refutes the absence`.")
    records: list[str] = Field(
        description="The event ids of the records that caused the change (for an update, the "
        "evidence it adds)."
    )
    superseded_by: str | None = Field(
        default=None,
        description="For a withdrawal because a late record changed which evidence first made "
        "the rule fire: the `alert_id` of the alert raised instead.",
    )


class Jurisdiction(WireModel):
    """The area of responsibility holding the alert's precise location (decided before
    release, so every destination's copy says the same)."""

    country: str = Field(
        description="ISO 3166-1 alpha-2 of the country whose area (or, outside every area, "
        "whose territory) holds the location."
    )
    area_id: str | None = Field(
        description="The area's id in the areas file, e.g. `usbp-tca`; null outside every area."
    )
    area_name: str | None = Field(
        description="The area's name, e.g. `Tucson Sector`; null outside every area."
    )
    areas_version: str = Field(description="The `version` of the areas file that decided it.")


class Alert(WireModel):
    """One alert, released to one destination country."""

    alert_id: str = Field(
        description="Deterministic: the same rule firing on the same evidence gives the same id."
    )
    version: int = Field(
        default=1, ge=1, description="1 when raised; each update or withdrawal adds one."
    )
    change: Change = Field(
        default="raised", description="What this version is: raised, updated or withdrawn."
    )
    revision: Revision | None = Field(
        default=None,
        description="For an update or a withdrawal: what changed and why; null when raised.",
    )
    rule_id: str = Field(description="Which rule fired.")
    title: str = Field(description="The rule's title.")
    severity: Severity = Field(description="low, medium, high or critical.")
    score: int = Field(ge=0, le=100, description="0-100, from severity and the evidence.")
    raised_at: AwareDatetime = Field(description="When the pipeline raised the alert.")
    first_seen: AwareDatetime = Field(description="Earliest event time of the evidence.")
    last_seen: AwareDatetime = Field(description="Latest event time of the evidence.")
    location: Point = Field(description="Where, as released to this destination.")
    jurisdiction: Jurisdiction | None = Field(
        default=None,
        description="The area of responsibility holding the precise location, the same in "
        "every destination's copy; null only in alerts from before 0.10.",
    )
    recipient: str = Field(description="The country of this topic.")
    recipients: list[str] = Field(description="Every country that received the alert.")
    tlp: Tlp = Field(description="TLP 2.0 label.")
    evidence: list[Evidence] = Field(description="The evidence, as released to this destination.")
    redactions: list[Redaction] = Field(description="Every field not released as is.")
    policy: PolicyRef = Field(description="The sharing policy applied.")
    explanation: Explanation | None = Field(
        default=None, description="Why the rule fired (`fusion explain` prints it)."
    )


def version_entry(doc: dict[str, Any]) -> dict[str, Any]:
    """What a consumer keeps of one version of an alert (its JSON as received) in the alert's
    history: version, change, when, the revision and how many events it held."""
    return {
        "version": doc.get("version", 1),
        "change": doc.get("change", "raised"),
        "at": doc.get("raised_at"),
        "revision": doc.get("revision"),
        "evidence": len(doc.get("evidence", [])),
    }
