"""Alert versions in the engine: updates bounded in number and size, corrections within the
span withdraw and after it are counted, a late earlier match supersedes, and what stands is
replay's whatever the arrival order within the rules' lateness and corrections."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.engine import Engine
from engine.facts import Fact
from engine.hits import RawAlert
from engine.rulefiles import load_rules
from engine.rules import RuleSet
from engine.ruletests import DEFAULT_START, build_event
from engine.versions import MAX_EVIDENCE, standing

REPO = Path(__file__).resolve().parents[2]
PACK = load_rules([REPO / "rules"])
BORDER = {"lat": 31.3330, "lon": -110.9400}
TUCSON = {"lat": 32.2226, "lon": -110.9747}


def only(rule_id: str) -> RuleSet:
    return RuleSet([PACK.by_id[rule_id]])


def fact(eid: str, etype: str, at_s: float, **fields: Any) -> Fact:
    return build_event({"id": eid, "type": etype, "at": f"{at_s}s", **fields}, DEFAULT_START)


def feed(engine: Engine, facts: list[Fact]) -> list[RawAlert]:
    out: list[RawAlert] = []
    for f in facts:
        out += engine.process(f)
        out += engine.advance(engine.watermark)
    return out


def in_order(ruleset: RuleSet, facts: list[Fact]) -> dict[str, list[str]]:
    """What replay gives: the facts in (time, id) order, then time runs on."""
    engine = Engine(ruleset)
    out = feed(engine, sorted(facts, key=lambda f: (f.ts, f.event_id)))
    out += engine.flush(engine.watermark)
    return final(out)


def final(versions: list[RawAlert]) -> dict[str, list[str]]:
    return {aid: sorted(f.event_id for f in a.evidence) for aid, a in standing(versions).items()}


def test_a_listed_plate_read_100_times_in_10_minutes_gives_a_bounded_number_of_versions() -> None:
    engine = Engine(only("watchlist-plate"))
    listing = fact("s", "suspect", -86400, person_ref="P", watchlist="w", risk="high", plate="Z9")
    reads = [fact(f"r{i:03}", "track", 6 * i, track_id="T", plate="Z9") for i in range(100)]
    out = feed(engine, [listing, *reads]) + engine.flush(engine.watermark)
    assert {a.alert_id for a in out} == {out[0].alert_id}
    assert out[0].change == "raised" and all(a.change == "updated" for a in out[1:])
    assert len(out) <= 1 + math.ceil(600 / 30)
    # consecutive versions are at least 30 s of event time apart, and the last holds the cap
    assert len(out[-1].evidence) == MAX_EVIDENCE
    assert [f.event_id for f in out[-1].evidence] == ["s", *[f"r{i:03}" for i in range(49)]]


def test_an_inspection_within_the_corrections_span_withdraws_and_after_it_is_counted() -> None:
    rule = "crossing-without-inspection"
    engine = Engine(only(rule))
    lpr = fact("a", "detection", 0, sensor_kind="lpr", plate="X1", **BORDER)
    fired = feed(engine, [lpr, fact("t1", "track", 31 * 60, track_id="T", **TUCSON)])
    assert [(a.change, a.version) for a in fired] == [("raised", 1)]
    # fired 30 minutes after the crossing, not 40: lateness no longer delays it
    assert fired[0].raised_at == DEFAULT_START.timestamp() + 31 * 60
    out = feed(engine, [fact("i", "detection", 20 * 60, sensor_kind="inspection", plate="X1")])
    assert [(a.change, a.version) for a in out] == [("withdrawn", 2)]
    assert out[0].revision is not None and out[0].revision["records"] == ["i"]
    assert out[0].alert_id == fired[0].alert_id

    later = Engine(only(rule))
    lpr2 = fact("b", "detection", 0, sensor_kind="lpr", plate="X2", **BORDER)
    feed(later, [lpr2, fact("t2", "track", 31 * 60, track_id="T", **TUCSON)])
    feed(later, [fact("t3", "track", 3 * 3600, track_id="T", **TUCSON)])
    out = feed(later, [fact("j", "detection", 20 * 60, sensor_kind="inspection", plate="X2")])
    assert out == []
    assert later.stats.rules[rule].refuted_late == 1
    assert [(r, records) for _, r, records in later.refuted_late] == [(rule, ("j",))]


def test_a_late_earlier_sighting_supersedes_the_alert_and_names_the_new_one() -> None:
    engine = Engine(only("watchlist-plate"))
    listing = fact("s", "suspect", 0, person_ref="P", watchlist="w", risk="high", plate="Q1")
    first = feed(engine, [listing, fact("d2", "detection", 7200, plate="Q1")])
    out = feed(engine, [fact("d1", "detection", 3600, plate="Q1")])
    assert [a.change for a in out] == ["withdrawn", "raised"]
    assert out[0].alert_id == first[0].alert_id
    assert out[0].revision is not None and out[0].revision["superseded_by"] == out[1].alert_id
    assert sorted(f.event_id for f in out[1].evidence) == ["d1", "d2", "s"]


@settings(max_examples=60, deadline=None)
@given(
    crossings=st.lists(st.integers(0, 40), min_size=1, max_size=6),
    inspections=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 5)), max_size=6),
    seed=st.integers(0, 1000),
)
def test_corrections_within_the_span_leave_what_replay_leaves(
    crossings: list[int], inspections: list[tuple[int, int]], seed: int
) -> None:
    """Border reads and inspections of a few plates (minutes); every record arrives up to
    90 minutes after its time (lateness 10 min + corrections 2 h), in any order."""
    rng = random.Random(seed)
    facts = [
        fact(f"a{i}", "detection", m * 60, sensor_kind="lpr", plate=f"P{i % 3}", **BORDER)
        for i, m in enumerate(crossings)
    ] + [
        fact(f"i{i}", "detection", m * 60, sensor_kind="inspection", plate=f"P{p % 3}")
        for i, (m, p) in enumerate(inspections)
    ]
    clocks = [fact(f"c{k}", "track", k * 600, track_id="T", **TUCSON) for k in range(16)]
    arrival = sorted(
        [*facts, *clocks], key=lambda f: f.ts + (rng.uniform(0, 5400) if f in facts else 0)
    )
    ruleset = only("crossing-without-inspection")
    engine = Engine(ruleset)
    out = feed(engine, arrival) + engine.flush(engine.watermark)
    assert final(out) == in_order(ruleset, [*facts, *clocks])
