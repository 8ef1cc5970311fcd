"""The per-destination release step: what of an alert leaves for one country, field by field.

The sharing policy decides; every field not released as is is listed in `redactions`, and
every field's action goes into the audit record.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from engine.border import default_border
from engine.hits import RawAlert
from engine.rules import utc_from_ts
from schemas.alerts import Alert, Evidence, Point, PolicyRef, Redaction
from schemas.audit import AuditRecord, FieldAction
from schemas.events import COMMON_FIELDS

TLP_BY_SEVERITY = {
    "critical": "TLP:AMBER+STRICT",
    "high": "TLP:AMBER+STRICT",
    "medium": "TLP:AMBER",
    "low": "TLP:AMBER",
}


class SharingPolicy(Protocol):
    """What the release step asks of a sharing policy."""

    @property
    def ref(self) -> PolicyRef: ...

    def action(
        self,
        origin: str,
        destination: str,
        event_type: str,
        field: str,
        at: tuple[float, float] | None = None,
    ) -> tuple[str, str]:
        """(action, policy rule name) for one field of one event going to `destination`.

        `at` is where the event is (for the alert's own location, asked with event type `*`:
        where the alert is), so zone-dependent rules can decide; None if unknown.
        """
        ...

    def transform(self, action: str, field: str, value: Any, destination: str) -> Any:
        """The released value of a field under `pseudonymize` or `generalize`."""
        ...

    def tlp(self, rule_id: str, severity: str) -> str: ...

    def zone_recipients(self, lat: float, lon: float, rule_id: str) -> set[str]: ...


@dataclass(frozen=True)
class InterimPolicy:
    """Until the sharing-policy file lands: a country gets its own data as is; another
    country's `person_ref` and `plate` are withheld; everything else is released."""

    withheld: tuple[str, ...] = ("person_ref", "plate")

    @property
    def ref(self) -> PolicyRef:
        body = orjson.dumps({"id": "interim-withhold-identifiers", "withheld": self.withheld})
        return PolicyRef(
            id="interim-withhold-identifiers",
            version="0",
            sha256=hashlib.sha256(body).hexdigest(),
        )

    def action(
        self,
        origin: str,
        destination: str,
        event_type: str,
        field: str,
        at: tuple[float, float] | None = None,
    ) -> tuple[str, str]:
        if origin == destination:
            return "release", "own-data"
        if field in self.withheld:
            return "redact", "withhold-foreign-identifiers"
        return "release", "release-other-fields"

    def transform(self, action: str, field: str, value: Any, destination: str) -> Any:
        return value

    def tlp(self, rule_id: str, severity: str) -> str:
        return TLP_BY_SEVERITY[severity]

    def zone_recipients(self, lat: float, lon: float, rule_id: str) -> set[str]:
        return set()


def recipients(alert: RawAlert, partners: frozenset[str], policy: SharingPolicy) -> list[str]:
    """Every partner whose agency contributed, whose territory holds the location, or whom the
    policy or rule names."""
    who = {f.country for f in alert.evidence}
    who.add(default_border().country_at(alert.lat, alert.lon))
    who |= set(alert.extra_recipients)
    who |= policy.zone_recipients(alert.lat, alert.lon, alert.rule_id)
    return sorted(who & partners)


def release(
    alert: RawAlert,
    destination: str,
    all_recipients: list[str],
    policy: SharingPolicy,
    *,
    now: float,
    topic: str,
) -> tuple[Alert, AuditRecord] | None:
    """The alert as released to `destination` and its audit record; None if nothing may go."""
    evidence: list[Evidence] = []
    redactions: list[Redaction] = []
    actions: list[FieldAction] = []
    for fact in alert.evidence:
        origin = fact.country
        at = (fact.lat, fact.lon)
        drop_action, drop_rule = policy.action(origin, destination, fact.event_type, "*", at=at)
        idx = len(evidence)
        if drop_action == "drop":
            redactions.append(
                Redaction(path=f"evidence[{fact.event_id}]", action="drop", policy_rule=drop_rule)
            )
            actions.append(
                FieldAction(
                    path=f"evidence[{fact.event_id}]",
                    action="drop",
                    policy_rule=drop_rule,
                    origin=origin,
                )
            )
            continue
        raw = fact.doc  # canonical JSON: no model round trip per fact and destination
        fields: dict[str, Any] = {}
        for name, value in raw.items():
            if name in COMMON_FIELDS:
                continue
            act, prule = policy.action(origin, destination, fact.event_type, name, at=at)
            path = f"evidence[{idx}].fields.{name}"
            actions.append(FieldAction(path=path, action=act, policy_rule=prule, origin=origin))
            if act == "release":
                fields[name] = value
                continue
            redactions.append(Redaction(path=path, action=act, policy_rule=prule))
            if act in ("pseudonymize", "generalize"):
                fields[name] = policy.transform(act, name, value, destination)
        evidence.append(
            Evidence.model_validate(
                {
                    "event_id": fact.event_id,
                    "event_type": fact.event_type,
                    "occurred_at": raw["occurred_at"],
                    "source": raw["source"],
                    "fields": fields,
                }
            )
        )
    if not evidence:
        return None
    lat, lon = alert.lat, alert.lon
    loc_origins = sorted({f.country for f in alert.evidence})
    loc_actions = {
        o: policy.action(o, destination, "*", "location", at=(alert.lat, alert.lon))
        for o in loc_origins
    }
    # An alert always has a location: any action but release coarsens it.
    held = [rule for act, rule in loc_actions.values() if act != "release"]
    if held:
        g = policy.transform("generalize", "location", {"lat": lat, "lon": lon}, destination)
        lat, lon = g["lat"], g["lon"]
        redactions.append(Redaction(path="location", action="generalize", policy_rule=held[0]))
    for o, (_, rule) in loc_actions.items():
        actions.append(
            FieldAction(
                path="location",
                action="generalize" if held else "release",
                policy_rule=held[0] if held else rule,
                origin=o,
            )
        )
    ref = policy.ref
    out = Alert(
        alert_id=alert.alert_id,
        rule_id=alert.rule_id,
        title=alert.title,
        severity=alert.severity,
        score=alert.score,
        raised_at=utc_from_ts(alert.raised_at),
        first_seen=utc_from_ts(alert.first_seen),
        last_seen=utc_from_ts(alert.last_seen),
        location=Point(lat=round(lat, 6), lon=round(lon, 6)),
        recipient=destination,
        recipients=all_recipients,
        tlp=policy.tlp(alert.rule_id, alert.severity),
        evidence=evidence,
        redactions=redactions,
        policy=ref,
    )
    audit = AuditRecord(
        alert_id=alert.alert_id,
        rule_id=alert.rule_id,
        destination=destination,
        topic=topic,
        released_at=utc_from_ts(now),
        policy=ref,
        actions=actions,
    )
    return out, audit
