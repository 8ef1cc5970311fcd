"""The per-destination release step: what of an alert leaves for one country, field by field.

The sharing policy decides; every field not released as is is listed in `redactions`, and
every field's action goes into the audit record.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from engine.areas import Areas, default_areas
from engine.border import default_border
from engine.explain import released
from engine.facts import Fact
from engine.hits import RawAlert
from schemas.alerts import Alert, PolicyRef
from schemas.audit import AuditRecord
from schemas.events import COMMON_FIELDS

AUTHORIZATION_PARTIES = "authorization-parties-only"
"""The `policy_rule` that drops an authorization for a destination other than its issuer and
its guest country: its details go only to the two countries it concerns."""

TLP_BY_SEVERITY = {
    "critical": "TLP:AMBER+STRICT",
    "high": "TLP:AMBER+STRICT",
    "medium": "TLP:AMBER",
    "low": "TLP:AMBER",
}


class ReleasePolicy(Protocol):
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
        rule_id: str | None = None,
    ) -> tuple[str, str]:
        """(action, policy rule name) for one field of one event going to `destination`.

        `at` is where the event is (for the alert's own location, asked with event type `*`:
        where the alert is), so zone-dependent rules can decide; None if unknown. A track of
        own forces (`patrol_unit`) is asked as event type `patrol`, with the alert's
        `rule_id`.
        """
        ...

    def transform(self, action: str, field: str, value: Any, destination: str) -> Any:
        """The released value of a field under `pseudonymize` or `generalize`."""
        ...

    def tlp(self, rule_id: str, severity: str) -> str: ...

    def zone_recipients(self, lat: float, lon: float, rule_id: str) -> set[str]: ...


@dataclass(frozen=True)
class InterimPolicy:
    """A policy with no file, for replay and tests: a country gets its own data as is;
    another country's `person_ref` and `plate` are withheld; everything else is released."""

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
        rule_id: str | None = None,
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


def recipients(alert: RawAlert, partners: frozenset[str], policy: ReleasePolicy) -> list[str]:
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
    policy: ReleasePolicy,
    *,
    now: float,
    topic: str,
    areas: Areas | None = None,
) -> tuple[Alert, AuditRecord] | None:
    """The alert as released to `destination` and its audit record; None if nothing may go."""
    out = release_json(
        alert, destination, all_recipients, policy, now=now, topic=topic, areas=areas
    )
    if out is None:
        return None
    body, audit = out
    return Alert.model_validate(body), AuditRecord.model_validate(audit)


def release_json(
    alert: RawAlert,
    destination: str,
    all_recipients: list[str],
    policy: ReleasePolicy,
    *,
    now: float,
    topic: str,
    areas: Areas | None = None,
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """`release` as the JSON objects the models dump to, without building the models (the
    worker's path; `release` validates the same objects, and tests hold the two equal).

    `areas` (default: the shipped ones) decide `jurisdiction` on the alert's precise location,
    before any generalisation, so every destination's copy carries the same."""
    evidence: list[dict[str, Any]] = []
    redactions: list[dict[str, Any]] = []
    actions: list[dict[str, Any]] = []
    key_fields: list[dict[str, Any]] = []
    as_is: set[tuple[str, str]] = set()
    times: dict[str, float] = {}
    key = alert.key
    action = policy.action
    for fact in alert.evidence:
        origin = fact.country
        etype = fact.event_type
        at = (fact.lat, fact.lon)
        if etype == "track" and fact.get("patrol_unit") is not None:
            policy_type, asked = "patrol", {"rule_id": alert.rule_id}
        else:
            policy_type, asked = etype, {}
        drop_action, drop_rule = action(origin, destination, policy_type, "*", at=at, **asked)
        if etype == "authorization" and destination not in (origin, fact.get("guest_country")):
            drop_action, drop_rule = "drop", AUTHORIZATION_PARTIES
        idx = len(evidence)
        if drop_action == "drop":
            path = f"evidence[{fact.event_id}]"
            redactions.append({"path": path, "action": "drop", "policy_rule": drop_rule})
            actions.append(
                {"path": path, "action": "drop", "policy_rule": drop_rule, "origin": origin}
            )
            if key is not None:
                for name, value in fact.doc.items():
                    if name not in COMMON_FIELDS and _holds_key(fact, name, value, key):
                        key_fields.append(
                            {"path": f"{path}.fields.{name}", "origin": origin, "action": "drop"}
                        )
            continue
        raw = fact.doc  # canonical JSON: no model round trip per fact and destination
        fields: dict[str, Any] = {}
        for name, value in raw.items():
            if name in COMMON_FIELDS:
                continue
            act, prule = action(origin, destination, policy_type, name, at=at, **asked)
            path = f"evidence[{idx}].fields.{name}"
            actions.append({"path": path, "action": act, "policy_rule": prule, "origin": origin})
            if key is not None and _holds_key(fact, name, value, key):
                key_fields.append({"path": path, "origin": origin, "action": act})
            if act == "release":
                fields[name] = value
                as_is.add((fact.event_id, name))
                continue
            redactions.append({"path": path, "action": act, "policy_rule": prule})
            if act in ("pseudonymize", "generalize"):
                fields[name] = policy.transform(act, name, value, destination)
        src = raw["source"]
        times[fact.event_id] = fact.ts
        evidence.append(
            {
                "event_id": fact.event_id,
                "event_type": etype,
                "occurred_at": raw["occurred_at"],
                "source": {"agency": src["agency"], "country": src["country"]},
                "fields": fields,
            }
        )
    if not evidence:
        return None
    lat, lon = alert.lat, alert.lon
    precision_m = None
    loc_origins = sorted({f.country for f in alert.evidence})
    loc_actions = {
        o: action(o, destination, "*", "location", at=(alert.lat, alert.lon)) for o in loc_origins
    }
    # An alert always has a location: any action but release coarsens it.
    held = [rule for act, rule in loc_actions.values() if act != "release"]
    if held:
        g = policy.transform("generalize", "location", {"lat": lat, "lon": lon}, destination)
        lat, lon, precision_m = g["lat"], g["lon"], g["precision_m"]
        redactions.append({"path": "location", "action": "generalize", "policy_rule": held[0]})
    for o, (_, rule) in loc_actions.items():
        actions.append(
            {
                "path": "location",
                "action": "generalize" if held else "release",
                "policy_rule": held[0] if held else rule,
                "origin": o,
            }
        )
    ref = policy.ref
    ref_doc = {"id": ref.id, "version": ref.version, "sha256": ref.sha256}
    revision = alert.revision
    body = {
        "alert_id": alert.alert_id,
        "version": alert.version,
        "change": alert.change,
        "revision": None
        if revision is None
        else {
            "reason": revision["reason"],
            "records": list(revision["records"]),
            "superseded_by": revision.get("superseded_by"),
        },
        "rule_id": alert.rule_id,
        "title": alert.title,
        "severity": alert.severity,
        "score": alert.score,
        "raised_at": iso_z(alert.raised_at),
        "first_seen": iso_z(alert.first_seen),
        "last_seen": iso_z(alert.last_seen),
        "location": {"lat": round(lat, 6), "lon": round(lon, 6), "precision_m": precision_m},
        "jurisdiction": (areas or default_areas()).jurisdiction(alert.lat, alert.lon),
        "recipient": destination,
        "recipients": list(all_recipients),
        "tlp": policy.tlp(alert.rule_id, alert.severity),
        "evidence": evidence,
        "redactions": redactions,
        "policy": ref_doc,
        "explanation": released_explanation(alert.explanation, evidence, as_is, times),
    }
    audit = {
        "alert_id": alert.alert_id,
        "version": alert.version,
        "change": alert.change,
        "rule_id": alert.rule_id,
        "destination": destination,
        "topic": topic,
        "released_at": iso_z(now),
        "policy": dict(ref_doc),
        "actions": actions,
        "match": None if key is None else {"fields": key_fields},
        "rule_file": None,
        "alert_sha256": None,
        "salt": None,
        "log": None,
    }
    return body, audit


def released_explanation(
    raw: dict[str, Any] | None,
    evidence: list[dict[str, Any]],
    as_is: set[tuple[str, str]],
    times: dict[str, float],
) -> dict[str, Any] | None:
    """`engine.explain.released`, with its times as the models dump them."""
    out = released(raw, evidence, as_is, times)
    if out is None:
        return None
    until = out["absence_checked_until"]
    out["window_start"] = iso_z(out["window_start"])
    out["window_end"] = iso_z(out["window_end"])
    out["absence_checked_until"] = None if until is None else iso_z(until)
    return out


def _holds_key(fact: Fact, name: str, value: Any, key: str) -> bool:
    """Whether a field of the fact holds the correlation key (compared as the rules read it:
    plates and identifiers normalised). Only text fields hold keys."""
    if not isinstance(value, str):
        return False
    held = fact.get(name)
    return held is not None and str(held) == key


def iso_z(ts: float) -> str:
    """Epoch seconds as the models dump an aware UTC datetime (`...Z`)."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")
