"""The `incursion` rule type (engine/correlators/incursion.py) at the correlator level, and
the ingest checks of authorizations (only the host issues; malformed ones say what to fix)."""

from __future__ import annotations

import orjson
import pytest

from engine.correlators.incursion import IncursionCorrelator, IncursionRule
from engine.facts import Fact
from engine.ingest import Rejection, validate
from engine.rulefiles import load_rules
from engine.ruletests import DEFAULT_START, build_event
from tests.unit.test_border import PARALLEL_31_47

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
PARTNERS = frozenset({"US", "MX"})
LINE_AT_107_5 = 31.78363  # the border line at 107°30' W (tests/unit/test_border.py)
INSIDE_MX = LINE_AT_107_5 - 0.0027  # ~300 m south of the line: Chihuahua


def rule() -> IncursionRule:
    (r,) = [r for r in load_rules([ROOT / "rules"]).rules if r.id == "unauthorized-incursion"]
    assert isinstance(r, IncursionRule)
    return r


def patrol(event_id: str, minutes: float, lat: float = INSIDE_MX) -> Fact:
    spec = {"id": event_id, "type": "track", "at": f"{minutes}m", "track_id": "T-7"}
    spec |= {"patrol_unit": "USBP-7", "agency": "USBP", "lat": lat, "lon": -107.5}
    return build_event(spec, DEFAULT_START)


def permit(event_id: str, at: str, **fields: object) -> Fact:
    spec = {"id": event_id, "type": "authorization", "at": at, "country": "MX"}
    spec |= {"agency": "SEDENA", "reference": "OP-1", "guest_country": "US", "units": ["usbp-7"]}
    spec |= {"area": {"radius_m": 3000}, "lat": 31.775, "lon": -107.5, "valid_from": "-1h"}
    return build_event(spec | fields, DEFAULT_START)


def test_the_line_used_here_is_the_treaty_parallel():
    assert abs(LINE_AT_107_5 - PARALLEL_31_47) < 0.0005


def test_an_incursion_fires_once_and_a_late_permit_withdraws_it():
    c = IncursionCorrelator(rule())
    p1, p2, p3 = patrol("p1", 0), patrol("p2", 3), patrol("p3", 6)
    assert c.on_fact(p1, "own-forces", True, p1.ts) == []
    assert c.on_fact(p2, "own-forces", True, p2.ts) == []
    (hit,) = c.on_fact(p3, "own-forces", True, p3.ts)
    assert [f.event_id for f in hit.evidence] == ["p1", "p3"] and hit.refuted_by == ()
    assert c.on_fact(patrol("p4", 8), "own-forces", True, p3.ts) == []  # same stay: once
    late = permit("a1", "2h")  # issued 2 h after the fact, valid from 1 h before the start
    (withdrawal,) = c.on_fact(late, "own-forces", True, late.ts)
    assert withdrawal.evidence == hit.evidence
    assert withdrawal.refuted_by == (late,)
    assert withdrawal.reason.startswith("authorization OP-1 of SEDENA (MX), issued ")
    assert "covers unit USBP-7 there" in withdrawal.reason
    assert c.on_fact(permit("a2", "3h", reference="OP-2"), "own-forces", True, late.ts) == []


def test_a_permit_issued_too_long_after_the_fact_does_not_withdraw():
    c = IncursionCorrelator(rule())
    for f in (patrol("p1", 0), patrol("p3", 6)):
        hits = c.on_fact(f, "own-forces", True, f.ts)
    assert len(hits) == 1
    too_late = permit("a1", "13h", valid_until="14h")
    assert c.on_fact(too_late, "own-forces", True, too_late.ts) == []


def test_a_permit_elsewhere_or_for_a_past_window_does_not_cover():
    c = IncursionCorrelator(rule())
    far = permit("a1", "-2h", lat=31.70)  # 3 km circle ~9 km south: not where the unit is
    past = permit("a2", "-2h", reference="OP-2", valid_from="-5h", valid_until="-1h")
    for f in (far, past):
        assert c.on_fact(f, "own-forces", True, f.ts) == []
    hits = [
        h
        for f in (patrol("p1", 0), patrol("p3", 6))
        for h in c.on_fact(f, "own-forces", True, f.ts)
    ]
    assert len(hits) == 1


def test_state_survives_a_snapshot():
    c = IncursionCorrelator(rule())
    for f in (patrol("p1", 0), patrol("p3", 6)):
        c.on_fact(f, "own-forces", True, f.ts)
    again = IncursionCorrelator(rule())
    again.restore(orjson.loads(orjson.dumps(c.snapshot())), {f.event_id: f for f in c.facts()})
    late = permit("a1", "1h")
    (withdrawal,) = again.on_fact(late, "own-forces", True, late.ts)
    assert withdrawal.refuted_by == (late,)


# -- ingest: authorizations ------------------------------------------------------------------


def raw_permit(**over: object) -> bytes:
    doc = {
        "event_id": "a1",
        "event_type": "authorization",
        "occurred_at": "2026-01-05T12:00:00Z",
        "source": {"agency": "SEDENA", "country": "MX"},
        "location": {"lat": 31.775, "lon": -107.5},
        "action": "grant",
        "reference": "OP-1",
        "guest_country": "US",
        "units": ["USBP-7"],
        "area": {"radius_m": 3000},
        "valid_from": "2026-01-05T11:00:00Z",
        "valid_until": "2026-01-05T23:00:00Z",
    }
    doc.update(over)
    return orjson.dumps(doc)


def check(raw: bytes) -> Fact | Rejection:
    return validate(raw, "authorization", now=DEFAULT_START.timestamp(), partners=PARTNERS)


def test_a_sound_permit_is_accepted():
    assert isinstance(check(raw_permit()), Fact)


def test_a_permit_for_the_other_countrys_territory_is_refused():
    got = check(raw_permit(source={"agency": "USBP", "country": "US"}, guest_country="MX"))
    assert got == Rejection(
        "wrong_issuer",
        "the authorization's location (31.775, -107.5) is in MX territory; only MX may "
        "authorize operations there, and source.country is US: have MX's agency issue it",
    )


@pytest.mark.parametrize(
    ("over", "kind", "says"),
    [
        (
            {"area": {"radius_m": 3000, "polygon": [[31.7, -107.5]] * 4}},
            "schema",
            "give exactly one of radius_m",
        ),
        (
            {"area": {"radius_m": 90_000}},
            "schema",
            "field 'area.radius_m': Input should be less than or equal to 25000",
        ),
        ({"units": []}, "schema", "a grant needs units"),
        ({"valid_until": "2026-01-05T10:00:00Z"}, "schema", "valid_until must be after valid_from"),
        ({"valid_until": "2026-03-05T10:00:00Z"}, "schema", "longer than 31 days"),
        ({"guest_country": "MX"}, "schema", "guest_country is the issuer's own country"),
        ({"guest_country": "CA"}, "unknown_partner", "guest_country 'CA' is not a partner"),
        (
            {
                "area": {
                    "polygon": [[31.8, -107.6], [31.8, -107.55], [31.85, -107.55], [31.8, -107.6]]
                }
            },
            "schema",
            "location must be inside area.polygon",
        ),
        ({"action": "renew"}, "schema", "field 'action': Input should be 'grant' or 'revoke'"),
    ],
)
def test_malformed_permits_say_what_to_fix(over, kind, says):
    got = check(raw_permit(**over))
    assert isinstance(got, Rejection) and got.kind == kind
    assert says in got.message


# -- sovereignty: what of a patrol and a permit leaves ------------------------------------------


def _released(raw_alert, dest):
    from engine.release import release_json
    from tests.unit.test_policy import DEFAULT

    out = release_json(raw_alert, dest, ["MX", "US"], DEFAULT, now=0.0, topic=f"alerts.{dest}")
    return out


def _raw(rule_id: str, *evidence: Fact):
    from engine.hits import RawAlert

    return RawAlert(
        alert_id="a1", rule_id=rule_id, title="t", severity="critical", score=90,
        raised_at=evidence[-1].ts, first_seen=evidence[0].ts, last_seen=evidence[-1].ts,
        lat=evidence[-1].lat, lon=evidence[-1].lon, evidence=evidence, key=None,
        extra_recipients=(),
    )  # fmt: skip


def test_a_patrols_positions_cross_only_as_incursion_evidence():
    p1, p3 = patrol("p1", 0), patrol("p3", 6)
    incursion = _released(_raw("unauthorized-incursion", p1, p3), "MX")
    assert incursion is not None
    body, audit = incursion
    assert [e["event_id"] for e in body["evidence"]] == ["p1", "p3"]
    assert body["evidence"][0]["fields"]["patrol_unit"] == "USBP-7"
    assert body["evidence"][0]["fields"]["location"] == {"lat": INSIDE_MX, "lon": -107.5}
    rules = {a["policy_rule"] for a in audit["actions"] if a["path"].startswith("evidence[0]")}
    assert rules == {"cross-border-patrol-incursion-evidence (MLAT art. 7)"}
    # The same positions as evidence of any other rule stay home.
    assert _released(_raw("watchlist-plate", p1, p3), "MX") is None
    home = _released(_raw("watchlist-plate", p1, p3), "US")
    assert home is not None and len(home[0]["evidence"]) == 2


def test_a_permit_goes_to_its_two_countries_only():
    from engine.release import AUTHORIZATION_PARTIES, InterimPolicy, release_json

    grant, seen = permit("a1", "0m"), patrol("p1", 0)
    raw = _raw("some-rule", grant, seen)
    for dest in ("MX", "US"):
        out = release_json(raw, dest, ["GT", "MX", "US"], InterimPolicy(), now=0.0, topic="t")
        assert out is not None and "a1" in [e["event_id"] for e in out[0]["evidence"]]
    other = release_json(raw, "GT", ["GT", "MX", "US"], InterimPolicy(), now=0.0, topic="t")
    assert other is not None
    assert [e["event_id"] for e in other[0]["evidence"]] == ["p1"]
    assert {"path": "evidence[a1]", "action": "drop", "policy_rule": AUTHORIZATION_PARTIES} in (
        other[0]["redactions"]
    )


def test_each_partner_writes_only_its_own_authorizations_topic():
    from streams.settings import Settings
    from streams.tools.acls import acl_plan

    s = Settings(_env_file=None)
    writes = {(g.principal, g.name) for g in acl_plan(s) if g.operation == "WRITE"}
    assert ("producer-mx", "events.authorizations.mx") in writes
    assert ("producer-us", "events.authorizations.us") in writes
    assert ("producer-us", "events.authorizations.mx") not in writes
    assert ("producer-mx", "events.authorizations.us") not in writes
    assert s.topic_event_types["events.authorizations.mx"] == ("authorization", "MX")


def test_a_permit_on_another_partners_topic_is_refused():
    raw = raw_permit()  # issued by MX
    at = DEFAULT_START.timestamp()
    assert isinstance(validate(raw, "authorization", now=at, partners=PARTNERS, issuer="MX"), Fact)
    got = validate(raw, "authorization", now=at, partners=PARTNERS, issuer="US")
    assert got == Rejection(
        "wrong_issuer",
        "source.country is MX on US's authorizations topic: each partner publishes only its "
        "own authorizations, on its own topic",
    )
