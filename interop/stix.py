"""Alerts as STIX 2.1 bundles, from an alert as released to one country and nothing else.

One alert becomes:

- a `sighting` (the rule fired on this evidence, here, then) of an `indicator` (the rule);
- one `observed-data` per piece of evidence, each over one `border-fusion-event` observable
  (a new SCO type, declared by the `extension-definition` the bundle carries) holding the
  event's fields exactly as released;
- a `location` (the alert's position, with its `precision` in metres when generalised);
- an `identity` per source agency (where the sighting was seen) and one for this pipeline;
- the TLP 2.0 `marking-definition` of the alert's `tlp` on every alert object, and a
  statement `marking-definition` per sharing-policy decision, applied as granular markings to
  the fields the alert's `redactions` say were pseudonymised or generalised.

Ids are uuid5: objects of one alert from the alert id, the recipient and the object's role, so
the same alert to the same country always gives the same bundle (and the two countries'
different versions of one alert never share an id); objects that stand for the same thing in
every bundle (an agency, a rule, the pipeline, a policy decision) from what they stand for,
with fixed timestamps, so partners merge them across bundles.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import Any

import stix2
from stix2.properties import DictionaryProperty, StringProperty, TimestampProperty

NAMESPACE = uuid.UUID("f6ca8643-cce9-4c61-aa64-ca083ef78776")
"""The uuid5 namespace of every id this module makes."""

STABLE_CREATED = "2026-01-01T00:00:00.000Z"
"""`created` (and `modified`) of the objects shared by every bundle: they never change, so
each bundle carries them identically."""

PRODUCER_NAME = "Border fusion (US-MX alert pipeline)"

# The TLP 2.0 marking definitions as OASIS publishes them (cti-stix-common-objects,
# extension-definition-specifications/tlp-2.0): fixed ids, created and extension.
TLP2_EXTENSION = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
TLP2_CREATED = "2022-10-01T00:00:00.000Z"
TLP2_IDS = {
    "TLP:CLEAR": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "TLP:GREEN": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "TLP:AMBER": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "TLP:AMBER+STRICT": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "TLP:RED": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}

EVENT_TYPE = "border-fusion-event"
RULE_PATTERN_TYPE = "border-fusion-rule"


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join(parts)))


EVENT_EXTENSION = f"extension-definition--{_uuid('extension', EVENT_TYPE, '1')}"
PRODUCER_ID = f"identity--{_uuid('identity', 'producer')}"

# The observable of one event, as released: registered with stix2 once, at import.
BorderFusionEvent: Any = stix2.v21.CustomObservable(
    EVENT_TYPE,
    [
        ("event_id", StringProperty(required=True)),
        ("event_type", StringProperty(required=True)),
        ("occurred_at", TimestampProperty(required=True)),
        ("source_agency", StringProperty(required=True)),
        ("source_country", StringProperty(required=True)),
        ("fields", DictionaryProperty(spec_version="2.1")),
    ],
    extension_name=EVENT_EXTENSION,
)(type("BorderFusionEvent", (), {}))

_EVIDENCE_FIELD = re.compile(r"^evidence\[(\d+)\]\.fields\.([A-Za-z0-9_]+)$")


@cache
def tlp_marking(tlp: str) -> stix2.v21.MarkingDefinition:
    """The official TLP 2.0 marking definition of a label (`TLP:AMBER+STRICT`, ...)."""
    if tlp not in TLP2_IDS:
        raise ValueError(f"unknown TLP 2.0 label {tlp!r}; valid labels are {sorted(TLP2_IDS)}")
    return stix2.v21.MarkingDefinition(
        id=TLP2_IDS[tlp],
        created=TLP2_CREATED,
        name=tlp,
        extensions={
            TLP2_EXTENSION: {
                "extension_type": "property-extension",
                "tlp_2_0": tlp.removeprefix("TLP:").lower(),
            }
        },
    )


@cache
def producer() -> stix2.v21.Identity:
    """This pipeline, the creator of every object it exports."""
    return stix2.v21.Identity(
        id=PRODUCER_ID,
        created=STABLE_CREATED,
        modified=STABLE_CREATED,
        name=PRODUCER_NAME,
        identity_class="system",
        description="Correlates border-security events of US and Mexican agencies into alerts, "
        "released to each country under a field-by-field sharing policy.",
    )


@cache
def event_extension() -> stix2.v21.ExtensionDefinition:
    """The definition of the `border-fusion-event` observable."""
    return stix2.v21.ExtensionDefinition(
        id=EVENT_EXTENSION,
        created_by_ref=PRODUCER_ID,
        created=STABLE_CREATED,
        modified=STABLE_CREATED,
        name=EVENT_TYPE,
        description="One event (detection, suspect, weapon, track, ...) reported by a border "
        "agency, with its fields as released to the bundle's recipient.",
        schema="event_id, event_type and occurred_at (RFC 3339) are the event's; source_agency "
        "and source_country say who reported it; fields holds every other field exactly as the "
        "recipient's alert carries it (border-fusion docs/contract.md, 'Alerts': a pseudonymised "
        "identifier is a list of 'pn:<kind>:<key id>:<hex>' pseudonyms, a generalised location "
        "carries precision_m; a withheld field is absent).",
        version="1.0.0",
        extension_types=["new-sco"],
    )


@lru_cache(maxsize=4096)
def agency(country: str, name: str) -> stix2.v21.Identity:
    """A source agency: the same id in every bundle."""
    return stix2.v21.Identity(
        id=f"identity--{_uuid('identity', 'agency', country, name)}",
        created_by_ref=PRODUCER_ID,
        created=STABLE_CREATED,
        modified=STABLE_CREATED,
        name=name,
        identity_class="organization",
        sectors=["government-national"],
        description=f"Reporting agency of {country}",
    )


@cache
def rule_indicator(rule_id: str, title: str) -> stix2.v21.Indicator:
    """The rule, as the indicator the alert's sighting is of (one per rule id and title)."""
    return stix2.v21.Indicator(
        id=f"indicator--{_uuid('indicator', rule_id, title)}",
        created_by_ref=PRODUCER_ID,
        created=STABLE_CREATED,
        modified=STABLE_CREATED,
        valid_from=STABLE_CREATED,
        name=title,
        indicator_types=["anomalous-activity"],
        pattern_type=RULE_PATTERN_TYPE,
        pattern=rule_id,
        description=f"Border-fusion correlation rule {rule_id}: {title}",
        external_references=[{"source_name": "border-fusion-rule", "external_id": rule_id}],
    )


@cache
def decision_marking(
    action: str, policy_rule: str, policy_id: str, version: str, sha256: str
) -> Any:
    """A statement marking for one sharing-policy decision (e.g. pseudonymised under a rule)."""
    key = (action, policy_rule, policy_id, version, sha256)
    verb = {"pseudonymize": "Pseudonymised", "generalize": "Generalised"}.get(action, action)
    return stix2.v21.MarkingDefinition(
        id=f"marking-definition--{_uuid('marking', *key)}",
        created_by_ref=PRODUCER_ID,
        created=STABLE_CREATED,
        name=f"{action}: {policy_rule}",
        definition_type="statement",
        definition={
            "statement": f"{verb} under sharing-policy rule {policy_rule} (policy {policy_id} "
            f"version {version}, sha256 {sha256})."
        },
    )


def alert_objects(alert: Mapping[str, Any], *, url: str | None = None) -> list[Any]:
    """The STIX objects of one alert as released to its `recipient` (the dict the worker writes
    to `alerts.<cc>`; nothing else is read). `url`, if given, links back to the alert."""
    alert_id: str = alert["alert_id"]
    recipient: str = alert["recipient"]
    # Not `raised_at` (the wall clock of each release): a repeat after a restart must give
    # objects equal to the first, as their ids are. Every version of an alert has the same
    # `created` (the start of the window its first match was found in) and a later `modified`:
    # one millisecond per version, so that the newest version wins and a repeat is equal.
    explanation = alert.get("explanation") or {}
    created = _aware(explanation.get("window_start") or alert["last_seen"])
    version = int(alert.get("version", 1))
    modified = created + timedelta(milliseconds=version - 1)
    withdrawn = alert.get("change") == "withdrawn"
    policy = alert["policy"]

    def oid(kind: str, role: str) -> str:
        return f"{kind}--{_uuid('alert', alert_id, recipient, kind, role)}"

    tlp = tlp_marking(alert["tlp"])
    marked = {"object_marking_refs": [tlp.id], "created_by_ref": PRODUCER_ID}
    common = {"created": created, "modified": modified, **marked}

    decisions: dict[tuple[str, str], Any] = {}
    by_evidence: dict[int, list[tuple[str, str]]] = {}
    location_marks: list[str] = []
    for red in alert["redactions"]:
        if red["action"] not in ("pseudonymize", "generalize"):
            continue  # a redacted or dropped field is absent: nothing to mark
        key = (red["action"], red["policy_rule"])
        if key not in decisions:
            decisions[key] = decision_marking(
                *key, policy["id"], policy["version"], policy["sha256"]
            )
        mark_id = decisions[key].id
        if red["path"] == "location":
            location_marks.append(mark_id)
            continue
        m = _EVIDENCE_FIELD.match(red["path"])
        if m is None:
            raise ValueError(f"alert {alert_id}: unexpected redaction path {red['path']!r}")
        by_evidence.setdefault(int(m.group(1)), []).append((f"fields.{m.group(2)}", mark_id))

    loc = alert["location"]
    loc_props: dict[str, Any] = {"latitude": loc["lat"], "longitude": loc["lon"]}
    place = alert.get("jurisdiction")
    if place is not None:  # decided on the precise location: the same in both copies
        loc_props["country"] = place["country"]
        if place.get("area_name"):
            loc_props["administrative_area"] = place["area_name"]
    if loc.get("precision_m") is not None:
        loc_props["precision"] = float(loc["precision_m"])
    generalized = sorted(k for k in loc_props if k in ("latitude", "longitude", "precision"))
    loc_granular = [{"marking_ref": mark, "selectors": generalized} for mark in location_marks]
    location = stix2.v21.Location(
        id=oid("location", "location"),
        name=f"Where alert {alert_id} was raised",
        **loc_props,
        **common,
        **({"granular_markings": loc_granular} if loc_granular else {}),
    )

    agencies: dict[tuple[str, str], stix2.v21.Identity] = {}
    observables: list[Any] = []
    observed: list[stix2.v21.ObservedData] = []
    for i, ev in enumerate(alert["evidence"]):
        src = ev["source"]
        who = (src["country"], src["agency"])
        if who not in agencies:
            agencies[who] = agency(*who)
        fields = ev["fields"]
        granular = [
            {"marking_ref": mark, "selectors": [sel]}
            for sel, mark in by_evidence.get(i, [])
            if sel.removeprefix("fields.") in fields
        ]
        sco = BorderFusionEvent(
            id=oid(EVENT_TYPE, f"evidence/{i}"),
            event_id=ev["event_id"],
            event_type=ev["event_type"],
            occurred_at=ev["occurred_at"],
            source_agency=src["agency"],
            source_country=src["country"],
            object_marking_refs=[tlp.id],
            **({"fields": fields} if fields else {}),
            **({"granular_markings": granular} if granular else {}),
        )
        observables.append(sco)
        observed.append(
            stix2.v21.ObservedData(
                id=oid("observed-data", f"evidence/{i}"),
                first_observed=ev["occurred_at"],
                last_observed=ev["occurred_at"],
                number_observed=1,
                object_refs=[sco.id],
                **common,
            )
        )

    indicator = rule_indicator(alert["rule_id"], alert["title"])
    refs = [
        {
            "source_name": "border-fusion-alert",
            "external_id": alert_id,
            **({"url": url} if url else {}),
        },
        {
            "source_name": "border-fusion-policy",
            "external_id": f"{policy['id']}@{policy['version']}",
            "hashes": {"SHA-256": policy["sha256"]},
        },
    ]
    if place is not None and place.get("area_id"):
        refs.append(
            {
                "source_name": "border-fusion-area",
                "external_id": f"{place['area_id']}@{place['areas_version']}",
                "description": f"{place['area_name']} ({place['country']})",
            }
        )
    sighting = stix2.v21.Sighting(
        id=oid("sighting", "sighting"),
        sighting_of_ref=indicator.id,
        observed_data_refs=[o.id for o in observed],
        where_sighted_refs=[a.id for a in agencies.values()] + [location.id],
        first_seen=alert["first_seen"],
        last_seen=alert["last_seen"],
        count=1,
        confidence=alert["score"],
        description=f"{alert['title']} ({alert['severity']}; released to {recipient}; "
        f"received by {', '.join(alert['recipients'])})",
        labels=[f"severity-{alert['severity']}", f"rule-{alert['rule_id']}"],
        external_references=refs,
        **({"revoked": True} if withdrawn else {}),
        **common,
    )
    return [
        tlp,
        *decisions.values(),
        producer(),
        event_extension(),
        *agencies.values(),
        indicator,
        location,
        *observables,
        *observed,
        sighting,
    ]


def bundle_of(
    alerts: Sequence[Mapping[str, Any]], *, urls: Iterable[str | None] | None = None
) -> stix2.v21.Bundle:
    """One bundle holding the objects of every alert (each shared object once); its id is
    made from the alerts' ids and recipients, so the same alerts give the same bundle."""
    bundle_id, objects = _bundle_parts(alerts, urls)
    return stix2.v21.Bundle(id=bundle_id, objects=objects)


def bundle_json(
    alerts: Sequence[Mapping[str, Any]], *, urls: Iterable[str | None] | None = None
) -> bytes:
    """`bundle_of(...)` serialised, without building the Bundle (the worker's path: the
    Bundle parses its observables again, half the cost; tests hold the two equal)."""
    bundle_id, objects = _bundle_parts(alerts, urls)
    body = b",".join(obj.serialize().encode() for obj in objects)
    return b'{"type": "bundle", "id": "%s", "objects": [%s]}' % (bundle_id.encode(), body)


def _bundle_parts(
    alerts: Sequence[Mapping[str, Any]], urls: Iterable[str | None] | None
) -> tuple[str, list[Any]]:
    if not alerts:
        raise ValueError("a bundle needs at least one alert")
    links = list(urls) if urls is not None else [None] * len(alerts)
    objects: dict[str, Any] = {}
    for alert, url in zip(alerts, links, strict=True):
        for obj in alert_objects(alert, url=url):
            objects.setdefault(obj.id, obj)
    names = sorted(f"{a['alert_id']}/{a['recipient']}" for a in alerts)
    return f"bundle--{_uuid('bundle', *names)}", list(objects.values())


def _aware(value: Any) -> datetime:
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return at if at.tzinfo else at.replace(tzinfo=UTC)
