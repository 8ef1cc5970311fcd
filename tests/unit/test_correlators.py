"""The event_count, value_count, temporal and sequence rule types, without a broker."""

from __future__ import annotations

import re
import zlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.correlators import RULE_TYPES
from engine.durations import parse_duration
from engine.engine import Engine
from engine.errors import RuleSetError
from engine.facts import Fact
from engine.hits import RawAlert
from engine.rulefiles import parse_rules_text
from engine.rules import RuleSet
from engine.ruletests import DEFAULT_START, build_event
from engine.versions import standing

T0 = DEFAULT_START.timestamp()
BORDER = {"lat": 31.3330, "lon": -110.9400}  # Nogales, under 100 m from the line


def ev(eid: str, etype: str, at: str = "0m", **fields: Any) -> Fact:
    return build_event({"id": eid, "type": etype, "at": at, **fields}, DEFAULT_START)


def t(at: str) -> float:
    """Epoch seconds of an offset from the test start."""
    return T0 + parse_duration(at)


def rules(text: str) -> RuleSet:
    return parse_rules_text(text)


def engine(text: str) -> Engine:
    # expire on every advance, so that tests see expiry exactly at the horizon
    return Engine(rules(text), expire_every_s=0)


def ids(alerts: list[RawAlert]) -> list[list[str]]:
    return [sorted(f.event_id for f in a.evidence) for a in alerts]


def feed(eng: Engine, facts: list[Fact]) -> list[list[str]]:
    out: list[RawAlert] = []
    for f in facts:
        out.extend(eng.process(f))
    return ids(out)


def restored(eng: Engine, text: str) -> Engine:
    """A fresh engine for the same rules, loaded from a snapshot of `eng`."""
    blob = eng.snapshot({"applied": 7})
    fresh = engine(text)
    assert fresh.restore(blob) == {"applied": 7}
    return fresh


def det(eid: str, at: str, plate: str = "ABC123", **kw: Any) -> Fact:
    return ev(eid, "detection", at, plate=plate, **kw)


def weapon(eid: str, at: str, **kw: Any) -> Fact:
    kw.setdefault("weapon_event", "seizure")
    return ev(eid, "weapon", at, **kw)


# -- rules -----------------------------------------------------------------------------------

COUNT = """
id: plate-count
type: event_count
title: Many reads of one plate
severity: medium
key: plate
select: {type: detection, where: {plate: {exists: true}}}
threshold: 3
window: 10m
lateness: 30m
"""

VALUES = """
id: serial-countries
type: value_count
title: One serial from several countries
severity: high
key: serial
select: {type: weapon, where: {serial: {exists: true}}}
field: source.country
threshold: 2
window: 90d
lateness: 30d
"""

TEMPORAL = """
id: weapon-vehicle
type: temporal
title: Weapon and vehicle
severity: high
key: plate
kinds:
  weapon: {type: weapon, where: {plate: {exists: true}}}
  vehicle: {type: [detection, track], where: {plate: {exists: true}}}
window: 24h
lateness: 2d
"""

TEMPORAL3 = """
id: three-kinds
type: temporal
title: Three kinds
severity: low
key: plate
kinds:
  a: {type: weapon}
  b: {type: detection}
  c: {type: track}
window: 10h
lateness: 1d
"""

SEQ3 = """
id: three-steps
type: sequence
title: Track, then detection, then weapon
severity: high
key: plate
steps:
  - {name: x, select: {type: track}}
  - {name: y, select: {type: detection}, within: 1h}
  - {name: z, select: {type: weapon}}
window: 12h
lateness: 1d
"""

ABSENT = """
id: no-inspection
type: sequence
title: Crossing without inspection
severity: critical
key: plate
steps:
  - name: crossing
    select: {type: detection, where: {sensor_kind: {ne: inspection}, plate: {exists: true}}}
  - name: inspection
    absent: true
    within: 30m
    select: {type: detection, where: {sensor_kind: inspection}}
window: 30m
lateness: 10m
"""

ABSENT3 = """
id: seen-then-no-inspection
type: sequence
title: Tracked, crossed, not inspected
severity: high
key: plate
steps:
  - {name: tracked, select: {type: track}}
  - {name: crossing, select: {type: detection, where: {sensor_kind: lpr}}}
  - {name: inspection, absent: true, within: 30m,
     select: {type: detection, where: {sensor_kind: inspection}}}
window: 2h
lateness: 10m
"""


def insp(eid: str, at: str, plate: str = "ABC123") -> Fact:
    return det(eid, at, plate, sensor_kind="inspection", sensor_id="POE-1")


# -- validation ------------------------------------------------------------------------------

SEQ_HEAD = """
id: bad-seq
type: sequence
title: A bad sequence
severity: low
key: plate
window: 1h
"""


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            "steps: [{name: a, select: {type: detection}}]",
            "field steps: Value error, a sequence needs at least 2 steps, got 1",
        ),
        (
            "steps: [{name: a, select: {type: detection}, absent: true, within: 5m},"
            " {name: b, select: {type: weapon}}]",
            "Value error, the first step ('a') cannot be absent: "
            "a sequence starts with an event that happened",
        ),
        (
            "steps: [{name: a, select: {type: detection}},"
            " {name: b, select: {type: weapon}, absent: true, within: 5m},"
            " {name: c, select: {type: track}}]",
            "Value error, only the last step may be absent, but step 2 ('b') of 3 is absent",
        ),
        (
            "steps: [{name: a, select: {type: detection}},"
            " {name: b, select: {type: weapon}, absent: true}]",
            "Value error, step 2 ('b') is absent and needs `within`: how long after the step "
            "before it the event must not happen",
        ),
        (
            "steps: [{name: a, select: {type: detection}}, {name: a, select: {type: weapon}}]",
            "Value error, step names must be unique: 'a' is used more than once",
        ),
        (
            "steps: [{name: a, select: {type: detection}, within: 5m},"
            " {name: b, select: {type: weapon}}]",
            "Value error, the first step ('a') cannot have `within`: no step comes before it",
        ),
    ],
)
def test_sequence_validation_says_what_is_wrong(steps: str, message: str) -> None:
    with pytest.raises(RuleSetError, match=re.escape(message)):
        rules(SEQ_HEAD + steps)


def test_validation_names_rule_and_field() -> None:
    with pytest.raises(
        RuleSetError,
        match=re.escape(
            "rule bad-seq: field steps: Value error, a sequence needs at least 2 steps, got 0"
        ),
    ):
        rules(SEQ_HEAD + "steps: []")


def test_temporal_needs_two_kinds() -> None:
    bad = TEMPORAL.replace(
        "  vehicle: {type: [detection, track], where: {plate: {exists: true}}}\n", ""
    )
    with pytest.raises(
        RuleSetError,
        match=re.escape(
            "rule weapon-vehicle: field kinds: Value error, "
            "a temporal rule needs at least 2 kinds, got 1: ['weapon']"
        ),
    ):
        rules(bad)


@pytest.mark.parametrize(
    ("text", "old", "new", "message"),
    [
        (
            COUNT,
            "threshold: 3",
            "threshold: 0",
            "field threshold: Input should be greater than or equal to 1",
        ),
        (COUNT, "threshold: 3", "treshold: 3", "field threshold: Field required"),
        (
            VALUES,
            "field: source.country",
            "field: ''",
            "field field: String should have at least 1 character",
        ),
        (
            VALUES,
            "threshold: 2",
            "threshold: 2\nlimit: 3",
            "field limit: Extra inputs are not permitted",
        ),
    ],
)
def test_count_rules_validate(text: str, old: str, new: str, message: str) -> None:
    with pytest.raises(RuleSetError, match=re.escape(message)):
        rules(text.replace(old, new))


def test_types_registered_and_keyed() -> None:
    assert {"event_count", "value_count", "temporal", "sequence"} <= set(RULE_TYPES)
    for text in (COUNT, VALUES, TEMPORAL, SEQ3, ABSENT):
        rule = rules(text).rules[0]
        assert rule.route_key() is rule.key  # type: ignore[attr-defined]


def test_one_selector_or_a_list() -> None:
    rs = rules(
        COUNT.replace(
            "select: {type: detection, where: {plate: {exists: true}}}",
            "select: [{type: detection}, {type: track}]",
        )
    )
    assert len(rs.rules[0].selectors()) == 2


# -- event_count -----------------------------------------------------------------------------


def test_event_count_fires_at_the_threshold() -> None:
    eng = engine(COUNT)
    got = feed(eng, [det("d1", "0m"), det("d2", "4m"), det("d3", "9m")])
    assert got == [["d1", "d2", "d3"]]


def test_event_count_below_threshold_or_spread_out_does_not_fire() -> None:
    eng = engine(COUNT)
    assert feed(eng, [det("d1", "0m"), det("d2", "4m")]) == []
    assert feed(eng, [det("d3", "11m")]) == []  # d1..d3 span 11 minutes
    assert feed(eng, [det("o1", "12m", "OTHER1"), det("o2", "13m", "OTHER1")]) == []


def test_event_count_out_of_order_completes_spans_on_both_sides() -> None:
    eng = engine(COUNT)
    assert feed(eng, [det("d3", "9m"), det("d1", "0m")]) == []
    assert feed(eng, [det("d2", "5m")]) == [["d1", "d2", "d3"]]


def test_event_count_late_event_beyond_lateness_is_skipped() -> None:
    eng = engine(COUNT)
    assert feed(eng, [det("d1", "40m"), det("d2", "41m")]) == []
    assert feed(eng, [det("d0", "9m")]) == []  # 32 minutes behind: beyond 30m lateness
    assert eng.stats.rules["plate-count"].late == 1
    assert feed(eng, [det("d00", "39m")]) == [["d00", "d1", "d2"]]


def test_event_count_redelivery_is_not_counted_twice() -> None:
    eng = engine(COUNT)
    f = det("d1", "0m")
    assert feed(eng, [f, f, det("d2", "1m"), f]) == []
    assert eng.state_size()["plate-count"][:2] == (1, 2)


def test_event_count_caps_evict_and_count() -> None:
    eng = engine(COUNT + "max_per_key: 2\nmax_keys: 2\n")
    assert feed(eng, [det("d1", "0m"), det("d2", "1m"), det("d3", "2m")]) == []
    assert eng.state_size()["plate-count"] == (1, 2, 1)
    feed(eng, [det("a", "3m", "K1"), det("b", "4m", "K2")])  # a third key evicts ABC123's two
    assert eng.state_size()["plate-count"] == (2, 2, 3)


def test_event_count_expires_with_the_watermark() -> None:
    eng = engine(COUNT)
    feed(eng, [det("d1", "0m"), det("d2", "1m")])
    eng.advance(t("40m") + 30)  # window 10m + lateness 30m past d1: nothing can use it
    assert eng.state_size()["plate-count"][:2] == (1, 1)
    eng.advance(t("41m") + 1)
    assert eng.state_size()["plate-count"][:2] == (0, 0)


def test_event_count_snapshot_keeps_open_windows_and_raised_alerts() -> None:
    eng = engine(COUNT)
    assert feed(eng, [det("d1", "0m"), det("d2", "1m"), det("d3", "2m")]) == [["d1", "d2", "d3"]]
    feed(eng, [det("e1", "20m", "K9"), det("e2", "21m", "K9")])
    eng2 = restored(eng, COUNT)
    assert feed(eng2, [det("e3", "22m", "K9")]) == [["e1", "e2", "e3"]]
    # the alert raised before the snapshot is not raised again on redelivery
    assert feed(eng2, [det("d3", "2m")]) == []
    assert feed(restored(eng, COUNT), [det("d3", "2m")]) == []
    snap = orjson.loads(zlib.decompress(eng.snapshot()))
    assert snap["state"]["plate-count"]["events"] == [
        ["ABC123", ["d1", "d2", "d3"]],
        ["K9", ["e1", "e2"]],
    ]


def _oracle_fires(times: list[float], window: float, threshold: int) -> bool:
    return any(sum(1 for u in times if s <= u <= s + window) >= threshold for s in times)


POOL = [det(f"p{i}", f"{i * 3}m") for i in range(12)]
PATIENT = COUNT.replace("lateness: 30m", "lateness: 1d")  # every test event within lateness


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 11), min_size=1, max_size=8, unique=True).flatmap(st.permutations))
def test_event_count_any_arrival_order(order: list[int]) -> None:
    """Events within lateness, in any order: it fires iff some window holds 3 of them, each
    alert is one window span holding the trigger, and no evidence repeats."""
    facts = [POOL[i] for i in order]
    eng = engine(PATIENT)
    alerts: list[RawAlert] = []
    for f in facts:
        got = eng.process(f)
        for a in got:
            if a.change == "raised":
                assert f in a.evidence or any(g.ts > f.ts for g in a.evidence)
        alerts.extend(got)
    assert eng.stats.rules["plate-count"].late == 0
    times = [f.ts for f in facts]
    alerts = list(standing(alerts).values())
    assert bool(alerts) == _oracle_fires(times, 600, 3)
    for a in alerts:
        ts = [f.ts for f in a.evidence]
        assert len(ts) >= 3 and max(ts) - min(ts) <= 600
        inside = {f.event_id for f in facts if min(ts) <= f.ts <= min(ts) + 600}
        assert {f.event_id for f in a.evidence} <= inside
    assert len({a.alert_id for a in alerts}) == len(alerts)


@settings(max_examples=40, deadline=None)
@given(st.permutations(range(8)))
def test_event_count_same_events_same_keys_alerted(order: list[int]) -> None:
    """Two keys, the same facts in any order: the same keys alert (K1 has 3 in a window)."""
    pool = [
        det("k1a", "0m", "K1"),
        det("k1b", "6m", "K1"),
        det("k1c", "10m", "K1"),
        det("k2a", "0m", "K2"),
        det("k2b", "6m", "K2"),
        det("k2c", "11m", "K2"),
        det("k1d", "30m", "K1"),
        det("k2d", "35m", "K2"),
    ]
    eng = engine(PATIENT)
    alerts = []
    for i in order:
        alerts.extend(eng.process(pool[i]))
    assert {a.key for a in alerts} == {"K1"}


# -- value_count -----------------------------------------------------------------------------


def gun(eid: str, at: str, country: str, serial: str = "SN-1", **kw: Any) -> Fact:
    return weapon(eid, at, serial=serial, country=country, **kw)


def test_value_count_fires_on_distinct_values() -> None:
    eng = engine(VALUES)
    assert feed(eng, [gun("w1", "0m", "US"), gun("w2", "1d", "US")]) == []
    assert feed(eng, [gun("w3", "5d", "MX")]) == [["w1", "w3"]]  # earliest per value + trigger
    assert feed(eng, [gun("w4", "6d", "US")]) == [["w1", "w3", "w4"]]


def test_value_count_needs_the_values_in_one_window() -> None:
    eng = engine(VALUES)
    assert feed(eng, [gun("w1", "0m", "US"), gun("w2", "91d", "MX")]) == []
    assert feed(eng, [gun("x1", "91d", "US", "SN-2"), gun("x2", "92d", "US", "SN-2")]) == []


def test_value_count_out_of_order_and_late() -> None:
    eng = engine(VALUES)
    assert feed(eng, [gun("w2", "60d", "MX")]) == []
    assert feed(eng, [gun("w0", "20d", "US")]) == []  # 40 days behind: beyond 30d lateness
    assert eng.stats.rules["serial-countries"].late == 1
    assert feed(eng, [gun("w1", "40d", "US")]) == [["w1", "w2"]]


def test_value_count_ignores_events_without_the_field_and_normalises_the_key() -> None:
    eng = engine(VALUES.replace("field: source.country", "field: make"))
    assert feed(eng, [gun("w1", "0m", "US", "sn 1 "), gun("w2", "1d", "MX", " SN 1")]) == []
    assert feed(
        eng,
        [gun("w3", "2d", "MX", "SN 1", make="Colt"), gun("w4", "3d", "MX", "SN 1", make="Glock")],
    ) == [["w3", "w4"]]


def test_value_count_snapshot_restore() -> None:
    eng = engine(VALUES)
    feed(eng, [gun("w1", "0m", "US")])
    eng2 = restored(eng, VALUES)
    assert feed(eng2, [gun("w2", "3d", "GT")]) == [["w1", "w2"]]
    assert eng2.state_size()["serial-countries"] == (1, 2, 0)


# -- temporal --------------------------------------------------------------------------------


def test_temporal_fires_in_any_order() -> None:
    eng = engine(TEMPORAL)
    assert feed(eng, [weapon("w1", "0m", plate="ABC-123"), det("d1", "5h", "abc 123")]) == [
        ["d1", "w1"]
    ]
    eng = engine(TEMPORAL)
    assert feed(eng, [det("d1", "0m"), weapon("w1", "20h", plate="ABC123")]) == [["d1", "w1"]]


def test_temporal_does_not_fire_beyond_the_window_or_with_one_kind() -> None:
    eng = engine(TEMPORAL)
    assert feed(eng, [weapon("w1", "0m", plate="ABC123"), det("d1", "25h")]) == []
    assert feed(eng, [det("d2", "26h"), ev("t1", "track", "26h", plate="ABC123")]) == []


def test_temporal_picks_the_events_closest_to_the_trigger_and_fires_once_per_combination() -> None:
    eng = engine(TEMPORAL)
    assert feed(eng, [det("d1", "0m"), det("d2", "10h"), det("d3", "30h")]) == []
    assert feed(eng, [weapon("w1", "12h", plate="ABC123")]) == [["d2", "w1"]]
    assert feed(eng, [weapon("w1", "12h", plate="ABC123")]) == []  # redelivered
    assert feed(eng, [det("d4", "13h")]) == [["d4", "w1"]]  # a new combination


def test_temporal_out_of_order_late_and_too_late() -> None:
    eng = engine(TEMPORAL)
    assert feed(eng, [det("d1", "0m"), det("o1", "40h", "OTHER1")]) == []
    assert feed(eng, [weapon("w1", "5h", plate="ABC123")]) == [["d1", "w1"]]  # 35 h late: allowed
    assert feed(eng, [det("o2", "80h", "OTHER1"), weapon("w2", "6h", plate="ABC123")]) == []
    assert eng.stats.rules["weapon-vehicle"].late == 1


def test_temporal_finds_a_window_when_the_closest_events_do_not_fit() -> None:
    eng = engine(TEMPORAL3)
    feed(eng, [det("b1", "-6h"), det("b2", "7h"), ev("c1", "track", "7h", plate="ABC123")])
    # closest b (-6 h) and c (+7 h) span 13 h > 10 h; b2 and c1 fit with the trigger
    assert feed(eng, [weapon("a1", "0m", plate="ABC123")]) == [["a1", "b2", "c1"]]


def test_temporal_one_event_fills_one_kind() -> None:
    text = TEMPORAL3.replace("b: {type: detection}", "b: {type: [detection, track]}")
    eng = engine(text)
    assert (
        feed(eng, [ev("c1", "track", "1h", plate="ABC123"), weapon("a1", "0m", plate="ABC123")])
        == []
    )
    assert feed(eng, [det("b1", "2h")]) == [["a1", "b1", "c1"]]


def test_temporal_caps_and_snapshot() -> None:
    text = TEMPORAL + "max_per_key: 1\n"
    eng = engine(text)
    feed(eng, [det("d1", "0m"), det("d2", "1h")])
    assert eng.state_size()["weapon-vehicle"] == (1, 1, 1)
    eng2 = restored(eng, text)
    assert feed(eng2, [weapon("w1", "2h", plate="ABC123")]) == [["d2", "w1"]]
    eng2.advance(t("2h") + 72 * 3600 + 1)  # past window + lateness: state expires
    assert eng2.state_size()["weapon-vehicle"][:2] == (0, 0)


# -- sequence, all steps present -------------------------------------------------------------


def trk(eid: str, at: str, plate: str = "ABC123") -> Fact:
    return ev(eid, "track", at, plate=plate)


def test_sequence_fires_in_order_only() -> None:
    eng = engine(SEQ3)
    assert feed(eng, [trk("x1", "0m"), det("y1", "30m"), weapon("z1", "2h", plate="ABC123")]) == [
        ["x1", "y1", "z1"]
    ]
    eng = engine(SEQ3)
    assert feed(eng, [weapon("z1", "0m", plate="ABC123"), det("y1", "30m"), trk("x1", "1h")]) == []


def test_sequence_window_and_within() -> None:
    eng = engine(SEQ3)
    assert feed(eng, [trk("x1", "0m"), det("y1", "2h"), weapon("z1", "3h", plate="ABC123")]) == []
    eng = engine(SEQ3)
    assert feed(eng, [trk("x1", "0m"), det("y1", "30m"), weapon("z1", "13h", plate="ABC123")]) == []


def test_sequence_out_of_order_arrival() -> None:
    eng = engine(SEQ3)
    assert feed(eng, [weapon("z1", "5h", plate="ABC123"), trk("x1", "0m")]) == []
    assert feed(eng, [det("y1", "20m")]) == [["x1", "y1", "z1"]]


def test_sequence_chooses_a_chain_that_fits_not_the_latest_step() -> None:
    eng = engine(SEQ3)
    feed(eng, [trk("x1", "4h30m"), det("y1", "5h"), det("y2", "9h")])
    # y2 is the closest detection but has no track within 1 h before it; y1 does
    assert feed(eng, [weapon("z1", "10h", plate="ABC123")]) == [["x1", "y1", "z1"]]


def test_sequence_fires_once_per_chain_and_skips_late() -> None:
    eng = engine(SEQ3)
    assert feed(eng, [trk("x1", "0m"), det("y1", "10m"), weapon("z1", "1h", plate="ABC123")]) == [
        ["x1", "y1", "z1"]
    ]
    assert feed(eng, [weapon("z1", "1h", plate="ABC123")]) == []
    assert feed(eng, [det("o", "30h", "OTHER1"), trk("x0", "1m")]) == []
    assert eng.stats.rules["three-steps"].late == 1


def test_sequence_reports_each_last_step_event_once() -> None:
    eng = engine(SEQ3)
    assert feed(eng, [trk("x1", "0m"), det("y1", "10m"), weapon("z1", "1h", plate="ABC123")]) == [
        ["x1", "y1", "z1"]
    ]
    assert feed(eng, [trk("x2", "5m")]) == []  # x2, y1, z1 also match, but z1 was reported
    assert feed(eng, [weapon("z2", "2h", plate="ABC123")]) == [["x2", "y1", "z2"]]  # tightest


def test_sequence_one_new_event_completes_several_matches() -> None:
    eng = engine(SEQ3)
    feed(
        eng,
        [det("y1", "10m"), weapon("z1", "1h", plate="ABC123"), weapon("z2", "3h", plate="ABC123")],
    )
    assert sorted(feed(eng, [trk("x1", "0m")])) == [["x1", "y1", "z1"], ["x1", "y1", "z2"]]


def test_sequence_snapshot_keeps_partial_chains_and_decisions() -> None:
    eng = engine(SEQ3)
    feed(
        eng,
        [
            trk("x1", "0m"),
            det("y1", "10m"),
            weapon("z1", "1h", plate="ABC123"),
            trk("k1", "0m", "K2"),
        ],
    )
    eng2 = restored(eng, SEQ3)
    assert feed(eng2, [trk("x2", "5m")]) == []  # z1 was reported before the snapshot
    assert feed(eng2, [det("k2", "20m", "K2"), weapon("k3", "1h", plate="K2")]) == [
        ["k1", "k2", "k3"]  # a chain begun before the snapshot completes after it
    ]


SEQ_POOL = [
    trk("x1", "0m"),
    trk("x2", "3h"),
    det("y1", "30m"),
    det("y2", "2h"),
    det("y3", "3h30m"),
    weapon("z1", "1h", plate="ABC123"),
    weapon("z2", "2h30m", plate="ABC123"),
    weapon("z3", "20h", plate="ABC123"),
    det("y9", "40m", "OTHER1"),
]


@settings(max_examples=60, deadline=None)
@given(st.permutations(range(len(SEQ_POOL))))
def test_sequence_same_matches_in_any_arrival_order(order: list[int]) -> None:
    """Every last-step event with a chain before it fires once, whatever the arrival order."""
    eng = engine(SEQ3)
    alerts = []
    for i in order:
        alerts.extend(eng.process(SEQ_POOL[i]))
    lasts = [max(a.evidence, key=lambda f: f.ts).event_id for a in alerts]
    assert sorted(lasts) == ["z1", "z2"]  # z3: 17 h after x2, beyond the 12 h window


# -- sequence with an absent last step -------------------------------------------------------


def test_absence_fires_only_after_the_watermark_passes_due_plus_lateness() -> None:
    eng = engine(ABSENT)
    assert feed(eng, [det("a1", "0m")]) == []
    assert ids(eng.advance(t("40m"))) == []  # 0 + 30m + 10m: not passed yet
    assert ids(eng.advance(t("40m") + 1)) == [["a1"]]
    assert ids(eng.advance(t("2h"))) == []
    assert ids(eng.flush(t("2h"))) == []


def test_absence_cancelled_by_a_late_but_allowed_event() -> None:
    eng = engine(ABSENT)
    feed(eng, [det("a1", "0m"), det("o1", "34m", "OTHER1")])
    assert ids(eng.advance(t("34m"))) == []
    assert feed(eng, [insp("i1", "25m")]) == []  # 9 minutes behind the watermark: allowed
    assert eng.stats.rules["no-inspection"].late == 0
    assert ids(eng.advance(t("2h"))) == [["o1"]]


def test_absence_not_cancelled_by_an_event_beyond_lateness() -> None:
    eng = engine(ABSENT)
    feed(eng, [det("a1", "0m"), ev("t1", "track", "36m")])
    assert feed(eng, [insp("i1", "25m")]) == []  # 11 minutes behind: late, skipped
    assert eng.stats.rules["no-inspection"].late == 1
    assert ids(eng.advance(t("41m"))) == [["a1"]]


def test_absence_cancelled_by_an_event_that_arrived_first_or_is_outside_within() -> None:
    eng = engine(ABSENT)
    feed(eng, [insp("i1", "8m"), det("a1", "0m")])
    feed(eng, [det("a2", "1m", "K2")])
    feed(eng, [insp("i3", "2m", "K3"), det("a3", "3m", "K3")])  # inspection before it
    feed(eng, [insp("i2", "32m", "K2")])  # 31 minutes after a2: outside `within`
    assert eng.stats.rules["no-inspection"].late == 0
    assert sorted(ids(eng.flush(t("1h")))) == [["a2"], ["a3"]]


def test_flush_fires_every_pending_absence() -> None:
    eng = engine(ABSENT)
    feed(eng, [det("a1", "0m"), det("a2", "5m", "K2")])
    assert sorted(ids(eng.flush(t("5m")))) == [["a1"], ["a2"]]


def test_absence_after_a_chain_of_present_steps() -> None:
    eng = engine(ABSENT3)
    feed(eng, [det("c1", "10m", sensor_kind="lpr")])
    assert ids(eng.flush(t("10m"))) == []  # no track before it
    eng = engine(ABSENT3)
    feed(eng, [det("c1", "10m", sensor_kind="lpr"), trk("x1", "0m"), trk("x2", "5m")])
    assert ids(eng.advance(t("51m"))) == [["c1", "x1"]]  # one alert per crossing: first chain


def test_absence_pending_survives_snapshot_and_is_not_raised_twice() -> None:
    eng = engine(ABSENT)
    feed(eng, [det("a1", "0m"), det("a2", "5m", "K2")])
    eng2 = restored(eng, ABSENT)
    assert eng2.state_size()["no-inspection"][:2] == (2, 4)  # two crossings, two waiting
    assert feed(eng2, [insp("i2", "20m", "K2")]) == []  # cancels a2 after the restore
    assert ids(eng2.advance(t("41m"))) == [["a1"]]
    eng3 = restored(eng2, ABSENT)
    assert ids(eng3.flush(t("2h"))) == []


def test_absence_caps_evict_and_count() -> None:
    text = ABSENT + "max_keys: 1\n"
    eng = engine(text)
    feed(eng, [det("a1", "0m"), det("a2", "1m", "K2")])
    keys, _, evicted = eng.state_size()["no-inspection"]
    assert keys == 1 and evicted >= 2  # a1's stored fact and its waiting chain
    assert ids(eng.flush(t("1h"))) == [["a2"]]


def test_absence_state_expires() -> None:
    eng = engine(ABSENT)
    feed(eng, [det("a1", "0m"), insp("i1", "5m")])
    assert eng.state_size()["no-inspection"][1] > 0
    eng.advance(t("2h"))
    assert eng.state_size()["no-inspection"][:2] == (0, 0)


ABS_POOL = [
    det("a0", "0m"),
    det("a1", "10m"),
    det("a2", "20m", "K2"),
    det("a3", "50m"),
    insp("i0", "25m"),
    insp("i1", "55m", "K2"),
    insp("i2", "85m"),
    insp("i3", "5m"),
]


def _absence_oracle() -> set[str]:
    out = set()
    for a in ABS_POOL:
        if a.get("sensor_kind") == "inspection":
            continue
        if not any(
            b.get("sensor_kind") == "inspection"
            and b.get("plate") == a.get("plate")
            and a.ts <= b.ts <= a.ts + 1800
            for b in ABS_POOL
        ):
            out.add(a.event_id)
    return out


@settings(max_examples=60, deadline=None)
@given(st.permutations(range(len(ABS_POOL))))
def test_absence_same_alerts_in_any_arrival_order(order: list[int]) -> None:
    """With every event within lateness, any arrival order yields the same alerts."""
    eng = engine(ABSENT.replace("lateness: 10m", "lateness: 3h"))
    alerts = []
    for i in order:
        alerts.extend(eng.process(ABS_POOL[i]))
    alerts.extend(eng.flush(t("3h")))
    got = {a.evidence[0].event_id for a in alerts}
    assert all(len(a.evidence) == 1 for a in alerts)
    assert got == _absence_oracle() == {"a2", "a3"}


# -- watchlist: what depends on arrival order ------------------------------------------------

WATCH = """
id: plate-watch
type: watchlist
title: A watched plate
severity: high
key: plate
list: {type: suspect, where: {plate: {exists: true}}}
match: {type: detection, where: {plate: {exists: true}}}
window: 30d
suppress: {by: [key], for: 6h}
"""


def suspect(eid: str, at: str, plate: str = "ABC123") -> Fact:
    return ev(eid, "suspect", at, person_ref="P-1", watchlist="w", risk="high", plate=plate)


def test_watchlist_late_entry_gives_replays_alert_whatever_the_order_sightings_came() -> None:
    eng = engine(WATCH)
    # sightings arrive out of event-time order; the entry is published after them
    assert feed(eng, [det("d2", "3h"), det("d1", "2h"), det("d3", "4h")]) == []
    out = eng.process(suspect("s1", "1h"))
    # the first sighting to arrive raised an alert; the earlier one supersedes it
    assert [(a.change, a.version) for a in out] == [("raised", 1), ("withdrawn", 2), ("raised", 1)]
    assert out[1].revision is not None and out[1].revision["superseded_by"] == out[2].alert_id
    out += eng.flush(eng.watermark)
    final = standing(out)
    assert [sorted(f.event_id for f in a.evidence) for a in final.values()] == [
        ["d1", "d2", "d3", "s1"]
    ]


def test_watchlist_evidence_takes_the_latest_entries() -> None:
    text = WATCH.replace("suppress: {by: [key], for: 6h}\n", "max_evidence_entries: 2\n")
    eng = engine(text)
    feed(eng, [suspect("s3", "3m"), suspect("s1", "1m"), suspect("s2", "2m"), suspect("s0", "0m")])
    assert feed(eng, [det("d1", "1h")]) == [["d1", "s2", "s3"]]
