from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.border import default_border
from engine.engine import Engine, Route
from engine.errors import SnapshotError
from engine.geo import Grid, haversine_km
from engine.release import InterimPolicy, recipients, release
from engine.routing import Router, partition_for
from engine.rulefiles import load_rules
from engine.ruletests import DEFAULT_START, build_event, run_all

REPO = Path(__file__).resolve().parents[2]
RULES = load_rules([REPO / "rules"])


def ev(**kw):
    return build_event(kw, DEFAULT_START)


def listed_in_mexico_seen_in_us():
    """A Mexican suspect with a plate, and a US detection of that plate an hour later."""
    return [
        ev(
            id="s1",
            type="suspect",
            at="0m",
            person_ref="P-1",
            risk="high",
            plate="AB-12",
            country="MX",
        ),
        ev(id="d1", type="detection", at="1h", plate="ab12"),
    ]


def run(engine, *facts):
    out = []
    for f in facts:
        out.extend(engine.process(f))
    return out


def test_rule_pack_tests_pass():
    outcomes, untested = run_all(RULES)
    assert not untested
    assert [o for o in outcomes if not o.passed] == []


def test_watchlist_alert_content_and_determinism():
    facts = listed_in_mexico_seen_in_us()
    a1 = run(Engine(RULES), *facts)
    a2 = run(Engine(RULES), *reversed(facts))
    assert len(a1) == len(a2) == 1
    assert a1[0].alert_id == a2[0].alert_id
    assert a1[0].rule_id == "watchlist-plate" and a1[0].severity == "high"
    assert [f.event_id for f in a1[0].evidence] == ["s1", "d1"]
    assert a1[0].first_seen < a1[0].last_seen
    assert 0 <= a1[0].score <= 100


def test_late_event_beyond_allowed_lateness_is_skipped_and_counted():
    e = Engine(RULES)
    run(e, ev(id="x", type="detection", at="40d", subject_kind="unknown"))
    late = [ev(id=f"c{i}", type="detection", at=f"{i}m", subject_kind="person") for i in range(5)]
    assert run(e, *late) == []
    assert e.stats.rules["coordinated-crossing"].late == 5
    assert RULES.late_reason(late[0], e.watermark) is not None
    assert "behind the pipeline's event-time watermark" in RULES.late_reason(late[0], e.watermark)


def test_late_reason_spares_events_some_rule_can_use():
    e = Engine(RULES)
    run(e, ev(id="x", type="detection", at="3d", subject_kind="unknown"))
    old_plate = ev(id="p", type="detection", at="0m", plate="Q1", subject_kind="vehicle")
    # too late for coordinated-crossing (2 h) but not for watchlist-plate (30 d)
    assert RULES.late_reason(old_plate, e.watermark) is None


def test_snapshot_restore_keeps_open_windows_and_raised_ids():
    e = Engine(RULES)
    first = [ev(id=f"c{i}", type="detection", at=f"{i}m", subject_kind="person") for i in range(4)]
    assert run(e, *first) == []
    blob = e.snapshot({"applied": 41})
    e2 = Engine(RULES)
    assert e2.restore(blob) == {"applied": 41}
    fired = run(e2, ev(id="c4", type="detection", at="4m", subject_kind="person"))
    assert len(fired) == 1 and len(fired[0].evidence) == 5
    blob2 = e2.snapshot()
    e3 = Engine(RULES)
    e3.restore(blob2)
    # replaying the same evidence after a restart raises nothing new
    assert run(e3, ev(id="c4", type="detection", at="4m", subject_kind="person")) == []


def test_corrupt_snapshot_is_refused():
    with pytest.raises(SnapshotError, match="not readable"):
        Engine(RULES).restore(b"garbage")


def test_state_caps_evict_oldest_and_count():
    from engine.rulefiles import parse_rules_text

    rs = parse_rules_text(
        (REPO / "rules" / "watchlist-plate.yaml").read_text() + "max_keys: 3\nmax_per_key: 2\n"
    )
    e = Engine(rs)
    for i in range(10):
        e.process(ev(id=f"s{i}", type="suspect", at=f"{i}m", risk="high", plate=f"K{i}"))
    keys, items, evicted = e.state_size()["watchlist-plate"]
    assert keys == 3 and items == 3 and evicted == 7
    for i in range(3):
        e.process(ev(id=f"t{i}", type="suspect", at=f"{20 + i}m", risk="high", plate="K9"))
    assert e.state_size()["watchlist-plate"][1] <= 3 + 2


def test_state_expires_as_event_time_advances():
    e = Engine(RULES)
    run(e, *[ev(id=f"c{i}", type="detection", at=f"{i}m", subject_kind="person") for i in range(3)])
    assert e.state_size()["coordinated-crossing"][1] == 3
    e.advance(DEFAULT_START.timestamp() + 86400)
    assert e.state_size()["coordinated-crossing"][1] == 0


def test_border_country_and_distance():
    b = default_border()
    assert b.country_at(32.7157, -117.1611) == "US"  # San Diego
    assert b.country_at(32.5149, -117.0382) == "MX"  # Tijuana
    assert b.country_at(31.6904, -106.4245) == "MX"  # Ciudad Juarez
    assert b.country_at(27.5306, -99.4803) == "US"  # Laredo
    assert b.distance_km(31.3341, -110.0) < 0.1
    assert 150 < b.distance_km(33.45, -112.07) < 250  # Phoenix


def test_grid_probe_covers_radius():
    rng = random.Random(3)
    g = Grid(2.0)
    for _ in range(300):
        lat, lon = rng.uniform(25, 33), rng.uniform(-117, -97)
        dlat, dlon = rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03)
        if haversine_km(lat, lon, lat + dlat, lon + dlon) <= 2.0:
            assert g.cell(lat + dlat, lon + dlon) in set(g.cells_within(lat, lon, 2.0))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-0.03, 0.03), st.floats(-0.03, 0.03), st.integers(0, 9)),
        min_size=5,
        max_size=14,
    ),
    st.integers(1, 8),
)
def test_partitioned_routing_gives_the_same_alerts_as_one_engine(points, partitions):
    facts = [
        ev(
            id=f"c{i}",
            type="detection",
            at=f"{m}m",
            subject_kind="person",
            lat=31.0 + dl,
            lon=-110.0 + dn,
        )
        for i, (dl, dn, m) in enumerate(points)
    ]
    single = {a.alert_id for a in run(Engine(RULES), *facts) if a.change == "raised"}
    router = Router(RULES, region_km=3.0)  # small regions: many cross-region clusters
    engines = [Engine(RULES) for _ in range(partitions)]
    split = set()
    for f in facts:
        for key, route in router.routes(f):
            for a in engines[partition_for(key, partitions)].process(f, route):
                if a.change == "raised":
                    split.add(a.alert_id)
    # Suppression is per engine, so the split run may raise an alert the single engine
    # suppressed; every alert the single engine raises must be raised by the split one.
    assert single <= split


def test_routes_by_entity_key():
    f = ev(id="d", type="detection", plate="ab-1", subject_kind="vehicle")
    routes = Router(RULES).routes(f)
    assert ("plate:AB1", Route("plate", True)) in routes
    assert any(k.startswith("geo:") and r.owner for k, r in routes)


def test_release_withholds_foreign_identifiers_and_audits_every_field():
    facts = listed_in_mexico_seen_in_us()
    (alert,) = run(Engine(RULES), *facts)
    pol = InterimPolicy()
    who = recipients(alert, frozenset({"US", "MX"}), pol)
    assert who == ["MX", "US"]
    us, audit = release(alert, "US", who, pol, now=0.0, topic="alerts.us")
    mx, _ = release(alert, "MX", who, pol, now=0.0, topic="alerts.mx")
    assert "person_ref" not in us.evidence[0].fields and "plate" not in us.evidence[0].fields
    assert us.evidence[1].fields["plate"] == "ab12"  # the US's own data
    assert mx.evidence[0].fields["person_ref"] == "P-1" and "plate" not in mx.evidence[1].fields
    assert {r.path for r in us.redactions} == {
        "evidence[0].fields.person_ref",
        "evidence[0].fields.plate",
    }
    assert all(r.action == "redact" for r in us.redactions)
    # every evidence field, plus the alert's location once per origin country
    assert len(audit.actions) == sum(
        len(e.event.model_dump(exclude_none=True)) - 4 for e in alert.evidence
    ) + len({e.country for e in alert.evidence})
    assert us.policy.sha256 and us.recipient == "US" and us.recipients == ["MX", "US"]
