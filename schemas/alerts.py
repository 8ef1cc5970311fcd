"""Alerts as released to one destination country (CONTRACT.md, "Alerts")."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, Field

from schemas.base import WireModel
from schemas.events import EventType, Source

Severity = Literal["low", "medium", "high", "critical"]
Tlp = Literal["TLP:RED", "TLP:AMBER+STRICT", "TLP:AMBER", "TLP:GREEN", "TLP:CLEAR"]
Action = Literal["release", "pseudonymize", "generalize", "redact", "drop"]


class Point(WireModel):
    """A position as released to the destination."""

    lat: float = Field(ge=-90, le=90, description="Latitude, WGS-84 degrees.")
    lon: float = Field(ge=-180, le=180, description="Longitude, WGS-84 degrees.")


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


class Alert(WireModel):
    """One alert, released to one destination country."""

    alert_id: str = Field(
        description="Deterministic: the same rule firing on the same evidence gives the same id."
    )
    rule_id: str = Field(description="Which rule fired.")
    title: str = Field(description="The rule's title.")
    severity: Severity = Field(description="low, medium, high or critical.")
    score: int = Field(ge=0, le=100, description="0-100, from severity and the evidence.")
    raised_at: AwareDatetime = Field(description="When the pipeline raised the alert.")
    first_seen: AwareDatetime = Field(description="Earliest event time of the evidence.")
    last_seen: AwareDatetime = Field(description="Latest event time of the evidence.")
    location: Point = Field(description="Where, as released to this destination.")
    recipient: str = Field(description="The country of this topic.")
    recipients: list[str] = Field(description="Every country that received the alert.")
    tlp: Tlp = Field(description="TLP 2.0 label.")
    evidence: list[Evidence] = Field(description="The evidence, as released to this destination.")
    redactions: list[Redaction] = Field(description="Every field not released as is.")
    policy: PolicyRef = Field(description="The sharing policy applied.")
