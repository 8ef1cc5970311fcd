"""Property test through the broker: whatever both countries publish, no raw `person_ref` or
`plate` of one country reaches the other's alert topic, every field not released as is is
listed in `redactions`, and every delivered alert has its audit record."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import normalize_plate
from tests.integration.conftest import Lab
from tests.integration.test_pipeline import event

PORTS = [(32.5422, -117.0297), (31.3320, -110.9406), (31.7630, -106.4510), (25.9020, -97.4970)]
FAR = [(30.0, -111.5), (33.5, -112.0)]  # outside the border zone: locations generalised

identifier = st.text(alphabet="ABCDEFGHJKLMNPRSTUVWXYZ0123456789", min_size=5, max_size=8)


@st.composite
def scenario(draw: Any) -> list[tuple[str, dict[str, Any]]]:
    """Watchlist pairs with random identifiers, listed by one country and seen by the other."""
    out: list[tuple[str, dict[str, Any]]] = []
    for _ in range(draw(st.integers(2, 5))):
        lister = draw(st.sampled_from(["US", "MX"]))
        seer = draw(st.sampled_from(["US", "MX"]))
        where = draw(st.sampled_from(PORTS + FAR))
        plate = draw(identifier)
        person = "P-" + draw(identifier)
        out.append(
            (
                "suspect",
                event(
                    "suspect",
                    country=lister,
                    at=-draw(st.integers(60, 86400)),
                    where=where,
                    plate=plate,
                    person_ref=person,
                    risk=draw(st.sampled_from(["medium", "high"])),
                ),
            )
        )
        out.append(
            (
                "detection",
                event(
                    "detection",
                    country=seer,
                    at=-draw(st.integers(0, 50)),
                    where=where,
                    plate=plate.lower(),
                    sensor_kind="inspection",
                ),
            )
        )
    return out


def raw_identifiers(events: list[tuple[str, dict[str, Any]]], country: str) -> set[str]:
    out: set[str] = set()
    for _, e in events:
        if e["source"]["country"] == country:
            for f in ("plate", "person_ref"):
                if e.get(f):
                    out |= {e[f], normalize_plate(e[f])}
    return out


def check(lab: Lab, published: list[tuple[str, dict[str, Any]]]) -> None:
    # Repeated plates are suppressed (one alert per plate and 6 h), so no exact count here.
    alerts = {c: lab.read(c, 1, timeout=30, settled=True) for c in ("US", "MX")}
    assert alerts["US"] or alerts["MX"]
    audit = lab.read("audit", 1, timeout=10, settled=True)
    audited = {(a["alert_id"], a["destination"]) for a in audit}
    for dest, other in (("US", "MX"), ("MX", "US")):
        # the other country's identifiers, unless the destination reported the same itself
        foreign = raw_identifiers(published, other) - raw_identifiers(published, dest)
        for a in alerts[dest]:
            text = orjson.dumps(a).decode()
            leaked = [x for x in foreign if f'"{x}"' in text]
            assert not leaked, f"{other}'s raw identifiers {leaked} reached alerts.{dest.lower()}"
            assert (a["alert_id"], dest) in audited, "an alert was delivered without audit"
            redacted = {r["path"] for r in a["redactions"]}
            for i, ev in enumerate(a["evidence"]):
                if ev["source"]["country"] == dest:
                    continue
                for f in ("plate", "person_ref", "location"):
                    if f in ev["fields"]:
                        src = next(e for _, e in published if e["event_id"] == ev["event_id"])
                        if ev["fields"][f] != src.get(f):
                            assert f"evidence[{i}].fields.{f}" in redacted, (f, a["redactions"])


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(events=scenario())
def test_no_raw_identifier_crosses_the_border(
    lab: Lab, events: list[tuple[str, dict[str, Any]]]
) -> None:
    if not lab.workers:
        lab.worker().wait_ready()
    published = getattr(lab, "published", [])
    for etype, e in events:
        e["event_id"] = f"{e['event_id']}-{uuid.uuid4().hex[:4]}"
        lab.send(etype, e)
        published.append((etype, e))
    lab.flush()
    lab.published = published  # type: ignore[attr-defined]
    check(lab, published)
