"""Event time on the real broker: a preloaded backlog, a slow feed and idle inputs lose
nothing, and the same input gives the same alert ids in every setup and in replay."""

from __future__ import annotations

import io
import time
import uuid
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from engine.replay import correlate_file
from engine.rulefiles import load_rules
from engine.ruletests import DEFAULT_START, build_event
from streams.tools.simulator import Simulator
from tests.integration.conftest import REPO, Lab, Worker
from tests.integration.test_pipeline import event

PARTNERS = frozenset({"US", "MX"})
PLATE_RULE = """\
id: plate-reads
type: event_count
title: Five reads of one plate within ten minutes
severity: low
select: {type: detection, where: {plate: {exists: true}}}
key: plate
threshold: 5
window: 10m
lateness: 10m
suppress: {by: [key], for: 10m}
"""


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")


def ts_of(doc: dict[str, Any]) -> float:
    return datetime.fromisoformat(doc["occurred_at"]).timestamp()


def preload(lab: Lab, events: list[tuple[str, dict[str, Any]]], partitions: int = 4) -> None:
    """Each event to partition hash(id) % 4 of its topic, each partition in event-time order."""
    per: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for etype, e in events:
        p = zlib.crc32(e["event_id"].encode()) % partitions
        per.setdefault((etype, p), []).append(e)
    for (etype, p), evs in per.items():
        evs.sort(key=ts_of)
        for e in evs:
            lab.producer.send(lab.topic_for(etype, e), orjson.dumps(e), partition=p)
    lab.flush()


def replay_ids(events: list[tuple[str, dict[str, Any]]], rules: Path) -> set[str]:
    data = b"\n".join(orjson.dumps(e) for _, e in events) + b"\n"
    alerts, stats = correlate_file(io.BytesIO(data), load_rules([rules]), partners=PARTNERS)
    assert stats.late == 0
    return {a.alert_id for a in alerts}


def plate_reads(n: int, start: float, span: float, plates: int) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i in range(n):
        at = start + span * i / n
        out.append(
            (
                "detection",
                {
                    **event("detection", eid=f"r-{i}-{uuid.uuid4().hex[:6]}"),
                    "occurred_at": iso(at),
                    "plate": f"P{(i * 7919) % plates:05d}",
                },
            )
        )
    return out


def test_catch_up_of_a_preloaded_backlog_drops_nothing_and_equals_replay(
    lab: Lab, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "plate-reads.yaml").write_text(PLATE_RULE)
    now = time.time()
    events = plate_reads(50_000, now - 3 * 3600, 2 * 3600, plates=700)
    expected = replay_ids(events, rules)
    assert len(expected) > 100
    preload(lab, events)
    w = lab.worker(FUSION_RULES_PATH=str(rules))
    got = lab.wait_alerts(expected, workers=(w,))
    assert w.metric("fusion_events_received_total") == 50_000
    assert w.metric("fusion_events_late_total") == 0
    assert lab.read_all("deadletter") == []
    assert got == expected, (len(got), len(expected), len(got - expected), len(expected - got))


def rule_test_burst(end: float) -> list[tuple[str, dict[str, Any]]]:
    """The events of the first test of every default-pack rule that expects an alert, the
    newest of each test at `end` less a few minutes per rule, with fresh ids."""
    out = []
    pack = load_rules([REPO / "rules"])
    for k, rule in enumerate(pack.rules):
        test = next(t for t in rule.tests if t.expect)
        probe = [build_event(spec, DEFAULT_START) for spec in test.events]
        newest = max(f.ts for f in probe) - DEFAULT_START.timestamp()
        begin = datetime.fromtimestamp(end - 600 * k - newest, tz=UTC)
        tag = uuid.uuid4().hex[:6]
        for spec in test.events:
            fact = build_event({**spec, "id": f"{rule.id}-{tag}-{spec['id']}"}, begin)
            out.append((fact.event_type, fact.doc))
    return out


def test_a_backlog_before_current_events_fires_what_replay_fires(lab: Lab) -> None:
    w = lab.worker()
    w.wait_ready()
    burst = rule_test_burst(time.time() - 3 * 3600)
    data = b"\n".join(orjson.dumps(e) for _, e in burst)
    alerts, _ = correlate_file(io.BytesIO(data), load_rules([REPO / "rules"]), partners=PARTNERS)
    want_rules = {a.rule_id for a in alerts}
    assert want_rules == {r.id for r in load_rules([REPO / "rules"]).rules}, want_rules
    # Each feed publishes its backlog in event-time order (the disorder the pipeline puts
    # right is across partitions and feeds, within a partition up to FUSION_OUT_OF_ORDERNESS_S)
    for etype, e in sorted(burst, key=lambda te: te[1]["occurred_at"]):
        lab.send(etype, e, key=uuid.uuid4().bytes)
    lab.flush()
    for etype in ("detection", "suspect", "weapon", "track"):
        lab.send(etype, event(etype, where=(30.0, -105.0), plate=f"NOW-{uuid.uuid4().hex[:5]}"))
    lab.flush()
    want_ids = {a.alert_id for a in alerts}
    got = lab.wait_alerts(want_ids, timeout=60, workers=(w,))
    assert got >= want_ids, (len(want_ids - got), w.logs())
    assert w.metric("fusion_events_late_total") == 0


def test_an_input_that_never_receives_anything_does_not_stop_absence_rules(lab: Lab) -> None:
    w = lab.worker()
    w.wait_ready()
    now = time.time()
    plate = f"ID-{uuid.uuid4().hex[:5]}"
    at_border = {
        **event("detection", where=(31.3330, -110.9400), plate=plate, sensor_kind="lpr"),
        "occurred_at": iso(now - 50 * 60),
    }
    later = {**event("detection", where=(30.0, -105.0)), "occurred_at": iso(now)}
    topic = lab.topics["detection"]
    lab.producer.send(topic, orjson.dumps(at_border), partition=0)
    lab.producer.send(topic, orjson.dumps(later), partition=0)
    lab.flush()
    # Only one of sixteen input partitions ever receives anything; the rest are idle.
    alerts = lab.read("US", 1, timeout=30)
    assert [a["rule_id"] for a in alerts] == ["crossing-without-inspection"], alerts
    assert w.metric("fusion_input_idle") >= 15


def received(w: Worker) -> float:
    try:
        return w.metric("fusion_events_received_total")
    except OSError:  # its metrics server is not up yet
        return 0.0


def determinism_events() -> list[tuple[str, dict[str, Any]]]:
    """About 6,000 events of all four types over 2 h, rule scenarios mixed in."""
    sim = Simulator(seed=23, scenario_share=0.25, run_id=uuid.uuid4().hex[:6])
    start = time.time() - 3 * 3600
    clock = iter(start + 1.2 * i for i in range(10**6))
    return [ev for ev, _ in zip(sim.stream(lambda: next(clock)), range(6000), strict=False)]


def test_the_same_input_gives_the_same_alert_ids_in_every_setup(lab: Lab) -> None:
    events = determinism_events()
    expected = replay_ids(events, REPO / "rules")
    assert len(expected) > 50
    preload(lab, events)
    total = len(events)
    quiet = {"FUSION_IDLE_CLOCK_LAG_S": "60"}
    results: dict[str, set[str]] = {}

    def run(name: str, workers: int = 1, kill_half: bool = False, **extra: str) -> None:
        env = {**lab.run_env(name), **quiet, **extra}
        lab.create_run_topics(env)
        ws = [lab.worker(**env) for _ in range(workers)]
        if kill_half:
            deadline = time.monotonic() + 60
            while received(ws[0]) < total / 2:
                assert time.monotonic() < deadline, ws[0].logs()
                time.sleep(0.05)
            ws[0].kill()
            ws = [lab.worker(**env)]
        results[name] = lab.wait_alerts(expected, env=env, workers=tuple(ws))
        for w in ws:
            w.stop()

    run("one")
    run("two", workers=2)
    run("killed", kill_half=True, FUSION_BATCH_MAX="200")
    run("batch", FUSION_BATCH_MAX="97")
    for name, got in results.items():
        assert got == expected, (name, len(got - expected), len(expected - got))
