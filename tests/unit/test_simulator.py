"""The simulator, offline: its scenarios make every rule in rules/ raise an alert that reaches
every partner under the shipped sharing policy, live within 20 simulated seconds and in the
demo's backlog (where the absence rule decides by event time); its events are valid."""

from __future__ import annotations

import io
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.correlators.sequence import SequenceRule
from engine.hits import RawAlert
from engine.ingest import Rejection, validate
from engine.policy import Keyring, load_policy
from engine.release import recipients, release_json
from engine.replay import correlate_file
from engine.rulefiles import load_rules
from streams.keys import generate
from streams.settings import Settings
from streams.tools.demo import run_overrides
from streams.tools.simulator import Event, Simulator

REPO = Path(__file__).resolve().parents[2]
RULES = load_rules([REPO / "rules"])
POLICY = load_policy(REPO / "rules" / "policy.yaml", Keyring.parse(generate(), source="test"))
PARTNERS = frozenset({"US", "MX"})
T0 = 1_790_000_000.0
RATE = 40.0  # the demo's: events per second
SHARE = 0.03  # the demo's scenario share
TIPS = "tip" in Settings.model_construct().input_topics  # as the demo and `main` decide


def drawn(sim: Simulator, n: int) -> list[Event]:
    """The first `n` events of a live stream whose clock runs from T0 at the demo's rate."""
    clock = iter(T0 + i / RATE for i in range(10**7))
    return [ev for ev, _ in zip(sim.stream(lambda: next(clock)), range(n), strict=False)]


def live(seed: int, seconds: float) -> list[Event]:
    """The simulator's first `seconds` of events at the demo's rate and share."""
    return drawn(
        Simulator(seed=seed, scenario_share=SHARE, run_id=f"live{seed}", tips=TIPS),
        int(seconds * RATE),
    )


def released(events: list[Event]) -> dict[tuple[str, str], list[RawAlert]]:
    """(rule id, destination) -> the alerts released there, as the worker releases them."""
    data = b"\n".join(orjson.dumps(ev) for _, ev in events)
    alerts, stats = correlate_file(io.BytesIO(data), RULES, partners=PARTNERS)
    assert stats.rejected == 0 and stats.late == 0, stats
    out: dict[tuple[str, str], list[RawAlert]] = defaultdict(list)
    for a in alerts:
        who = recipients(a, PARTNERS, POLICY)
        for dest in who:
            body = release_json(a, dest, who, POLICY, now=a.raised_at, topic="alerts.x")
            if body is not None:
                assert body[0]["recipient"] == dest
                out[(a.rule_id, dest)].append(a)
    return out


def missing(got: dict[tuple[str, str], list[RawAlert]]) -> list[tuple[str, str]]:
    return [(r.id, c) for r in RULES.rules for c in sorted(PARTNERS) if not got.get((r.id, c))]


def ts(ev: dict[str, Any]) -> float:
    return datetime.fromisoformat(ev["occurred_at"]).timestamp()


def test_the_pack_under_test_is_the_whole_pack() -> None:
    assert len(RULES.rules) >= 6
    assert TIPS == ("weapons-tip-near-seizure" in RULES.by_id)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_every_rule_reaches_every_partner_within_20_simulated_seconds(seed: int) -> None:
    """Live, with event time = the clock. The absence rule's alerts are decided here as replay
    decides at the end of its input (as if time ran on): live, 40 minutes later."""
    got = released(live(seed, 20.0))
    assert missing(got) == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_demos_backlog_fires_every_rule_and_decides_absences_by_event_time(
    seed: int,
) -> None:
    sim = Simulator(seed=seed, scenario_share=SHARE, run_id=f"backlog{seed}", tips=TIPS)
    events = list(sim.backlog(T0 - 3600, T0, 3600))
    sensed = [ts(ev) for etype, ev in events if etype in ("detection", "track")]
    assert T0 - 3600 - 600 <= min(sensed) and max(ts(ev) for _, ev in events) <= T0
    got = released(events)
    assert missing(got) == []
    # Each absence was decided by event time within the backlog, not by the end of input:
    # its evidence is older than the newest events by more than the rule waits (a minute
    # to spare for a worker's watermark to trail its newest event).
    newest = sorted(ts(ev) for etype, ev in events if etype == "detection")[-100]
    for rule in RULES.rules:
        if isinstance(rule, SequenceRule) and rule.absence is not None:
            wait = (rule.absence.within or 0.0) + rule.decision_delay
            for cc in PARTNERS:
                decided = [a for a in got[(rule.id, cc)] if a.last_seen + wait < newest - 60]
                assert decided, (rule.id, cc)


def test_events_are_valid_and_tips_come_only_when_asked() -> None:
    for tips in (False, True) if TIPS else (False,):
        sim = Simulator(seed=9, scenario_share=0.3, run_id="valid", tips=tips)
        events = drawn(sim, 3000)
        types = {etype for etype, _ in events}
        expected = {"detection", "suspect", "weapon", "track", "authorization"}
        assert types == expected | ({"tip"} if tips else set())
        for etype, ev in events:
            assert ev["event_type"] == etype
            fact = validate(orjson.dumps(ev), etype, now=T0 + 3600, partners=PARTNERS)
            assert not isinstance(fact, Rejection), (fact, ev)
        assert len({ev["event_id"] for _, ev in events}) == len(events)


def test_the_same_seed_gives_the_same_events_and_a_full_round_comes_first() -> None:
    def first(n: int) -> list[Event]:
        sim = Simulator(seed=4, scenario_share=1.0, run_id="same")
        return [ev for ev, _ in zip(sim.stream(lambda: T0), range(n), strict=False)]

    assert first(200) == first(200)
    sim = Simulator(seed=4, run_id="round", tips=TIPS)
    every = {scenario.__name__ for scenario in sim.scenarios()}
    assert {sim._deal().__name__ for _ in every} == every


def test_a_demo_run_has_its_own_group_and_topics() -> None:
    base = Settings.model_construct()
    overrides = run_overrides(base, "demo-20260101-000000")
    run = base.model_copy(update=overrides)
    names = [*run.input_topics.values(), *(run.alert_topic(p) for p in run.partners)]
    names += [run.topic_routed, run.topic_changelog, run.topic_deadletter, run.topic_audit]
    assert all("demo-20260101-000000" in n for n in names), names
    assert len(set(names)) == len(names)
    assert run.app_id == f"{base.app_id}-demo-20260101-000000"
