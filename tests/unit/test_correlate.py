"""The correlate stage: the same alerts whatever the arrival order within each partition's
allowed disorder, the batching, the number of partitions, or a snapshot and restore."""

from __future__ import annotations

import io
import math
import random
import zlib
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.correlate import STAGE_SNAPSHOT_VERSION, CorrelateStage
from engine.errors import SnapshotError
from engine.ingest import Rejection, validate
from engine.replay import correlate_file
from engine.routing import Origin, RoutedItem, Router, route_items
from engine.rulefiles import load_rules
from engine.rules import RuleSet
from engine.versions import standing
from engine.watermarks import InputPartition, Mark, SourceWatermarks
from streams.tools.simulator import Simulator

REPO = Path(__file__).resolve().parents[2]
RULES = load_rules([REPO / "rules"])
PARTNERS = frozenset({"US", "MX"})
SOURCES = 4
A, B = InputPartition("a", 0), InputPartition("b", 0)


def events(n: int, seed: int) -> list[dict[str, Any]]:
    sim = Simulator(seed=seed, scenario_share=0.3, run_id=f"c{seed}")
    clock = iter(range(1_780_000_000, 1_780_000_000 + 3 * n, 3))
    out = []
    for (_, ev), _ in zip(sim.stream(lambda: float(next(clock))), range(n), strict=False):
        out.append(ev)
    return out


def replay_ids(evs: list[dict[str, Any]], ruleset: RuleSet = RULES) -> set[str]:
    data = b"\n".join(orjson.dumps(e) for e in evs) + b"\n"
    alerts, stats = correlate_file(io.BytesIO(data), ruleset, partners=PARTNERS)
    assert stats.late == 0
    return {a.alert_id for a in alerts}


class Pipeline:
    """The worker's two stages without a broker: per-source clocks at ingest, routed items
    with marks to every partition, one CorrelateStage per partition."""

    def __init__(self, partitions: int, disorder: float = 0.0, ruleset: RuleSet = RULES) -> None:
        self.ruleset = ruleset
        self.router = Router(ruleset)
        self.partitions = partitions
        self.clocks = SourceWatermarks(disorder, idle_after=1.0, clock_lag=math.inf)
        names = [InputPartition("in", s) for s in range(SOURCES)]
        self.stages = {p: CorrelateStage(ruleset, names) for p in range(partitions)}
        self.alerts: set[str] = set()
        self.late = 0

    def ingest(self, batch: list[tuple[int, int, dict[str, Any]]]) -> None:
        parts: dict[int, list[RoutedItem]] = defaultdict(list)
        for source, offset, ev in batch:
            fact = validate(orjson.dumps(ev), ev["event_type"], now=math.inf, partners=PARTNERS)
            assert not isinstance(fact, Rejection)
            self.clocks.observe(InputPartition("in", source), fact.ts, now=0.0)
            rules = self.ruleset.rules_taking(fact)
            origin = Origin("in", source, offset)
            for q, item in route_items(fact, self.router, rules, self.partitions, 0.0, origin):
                parts[q].append(item)
        marks = self.clocks.marks(0.0, {InputPartition("in", s) for s, _, _ in batch})
        for q, stage in self.stages.items():
            self.collect(stage.take(parts.get(q, []), marks))

    def finish(self) -> None:
        """Every source caught up and quiet: all idle; then time runs on (as replay does)."""
        self.clocks.update_idleness(dict.fromkeys(self.clocks.clocks, True), now=10.0)
        marks = self.clocks.marks(10.0)
        for stage in self.stages.values():
            self.collect(stage.take([], marks))
            self.collect(stage.drain())

    def collect(self, out: Any) -> None:
        self.alerts |= {a.alert_id for a, _ in out.alerts}
        self.late += len(out.late)


def partitioned(evs: list[dict[str, Any]], disorder: float, rng: random.Random) -> list[list[Any]]:
    """Events spread over SOURCES input partitions, each in event-time order up to `disorder`."""
    per: list[list[Any]] = [[] for _ in range(SOURCES)]
    for ev in evs:
        per[zlib.crc32(ev["event_id"].encode()) % SOURCES].append(ev)
    out = []
    for evs_s in per:
        keyed = [(_ts(e) + rng.uniform(0, disorder), e) for e in evs_s]
        keyed.sort(key=lambda x: x[0])
        out.append([e for _, e in keyed])
    return out


def _ts(ev: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ev["occurred_at"]).timestamp()


def random_batches(
    per_source: list[list[Any]], rng: random.Random
) -> Iterator[list[tuple[int, int, dict[str, Any]]]]:
    """The sources interleaved at random, in random batch sizes: (source, offset, event)."""
    cursors = [0] * SOURCES
    while any(c < len(s) for c, s in zip(cursors, per_source, strict=True)):
        batch = []
        for _ in range(rng.randint(1, 40)):
            live = [i for i in range(SOURCES) if cursors[i] < len(per_source[i])]
            if not live:
                break
            s = rng.choice(live)
            batch.append((s, cursors[s], per_source[s][cursors[s]]))
            cursors[s] += 1
        yield batch


def restore_every_stage(pipe: Pipeline, meta: dict[str, Any] | None = None) -> None:
    """Each partition's stage replaced by a fresh one restored from its snapshot (as JSON)."""
    for p, stage in pipe.stages.items():
        doc = orjson.loads(orjson.dumps(stage.snapshot_doc(meta), option=orjson.OPT_NON_STR_KEYS))
        fresh = CorrelateStage(RULES, [InputPartition("in", s) for s in range(SOURCES)])
        assert fresh.restore_doc(doc) == (meta or {})
        pipe.stages[p] = fresh


def run_pipeline(
    per_source: list[list[Any]], partitions: int, rng: random.Random, disorder: float = 0.0
) -> Pipeline:
    """Interleave the sources at random, in random batch sizes."""
    pipe = Pipeline(partitions, disorder)
    for batch in random_batches(per_source, rng):
        pipe.ingest(batch)
    pipe.finish()
    return pipe


EVENTS = events(600, seed=3)
EXPECTED = replay_ids(EVENTS)


def test_the_stream_exercises_several_rules():
    data = b"\n".join(orjson.dumps(e) for e in EVENTS)
    alerts, _ = correlate_file(io.BytesIO(data), RULES, partners=PARTNERS)
    assert len({a.rule_id for a in alerts}) >= 2 and len(alerts) >= 10


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), partitions=st.sampled_from([1, 2, 3, 4, 8]))
def test_same_alerts_whatever_the_interleaving_batching_and_partitions(
    seed: int, partitions: int
) -> None:
    rng = random.Random(seed)
    pipe = run_pipeline(partitioned(EVENTS, 0.0, rng), partitions, rng)
    assert pipe.late == 0
    assert pipe.alerts == EXPECTED


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_same_alerts_with_disorder_within_the_allowed_out_of_orderness(seed: int) -> None:
    rng = random.Random(seed)
    pipe = run_pipeline(partitioned(EVENTS, 30.0, rng), 4, rng, disorder=30.0)
    assert pipe.late == 0
    assert pipe.alerts == EXPECTED


def test_a_snapshot_and_restore_midway_changes_nothing():
    rng = random.Random(5)
    per_source = partitioned(EVENTS, 0.0, rng)
    pipe = Pipeline(2)
    flat = [(s, i, e) for s, evs in enumerate(per_source) for i, e in enumerate(evs)]
    flat.sort(key=lambda x: (x[1], x[0]))
    half = len(flat) // 2
    for k in range(0, half, 25):
        pipe.ingest(flat[k : min(k + 25, half)])
    restore_every_stage(pipe, {"applied": 1})
    for k in range(half, len(flat), 25):
        pipe.ingest(flat[k : k + 25])
    pipe.finish()
    assert pipe.alerts == EXPECTED


def test_nothing_is_released_until_every_source_is_heard_from():
    stage = CorrelateStage(RULES, [A, B])
    pipe = Pipeline(1)
    ev = EVENTS[0]
    fact = validate(orjson.dumps(ev), ev["event_type"], now=math.inf, partners=PARTNERS)
    assert not isinstance(fact, Rejection)
    items = [
        it
        for _, it in route_items(
            fact, pipe.router, RULES.rules_taking(fact), 1, 0.0, Origin("a", 0, 0)
        )
    ]
    stage.take(items, {A: Mark(fact.ts + 100, False)})
    assert len(stage.buffer) == len(items) > 0
    stage.take([], {B: Mark(fact.ts + 50, False)})
    assert len(stage.buffer) == 0


def test_an_event_behind_the_watermark_is_taken_if_a_rule_allows_it_else_dead_lettered():
    stage = CorrelateStage(RULES, [A])
    pipe = Pipeline(1)
    ev = next(e for e in EVENTS if e["event_type"] == "detection" and e.get("plate"))
    fact = validate(orjson.dumps(ev), "detection", now=math.inf, partners=PARTNERS)
    assert not isinstance(fact, Rejection)
    items = [
        it
        for _, it in route_items(
            fact, pipe.router, RULES.rules_taking(fact), 1, 0.0, Origin("a", 0, 0)
        )
    ]
    stage.take([], {A: Mark(fact.ts + 3600, False)})
    out = stage.take(items)
    assert out.behind and not out.late  # an hour behind: watchlist-plate allows 30 days
    stage2 = CorrelateStage(RULES, [A])
    stage2.take([], {A: Mark(fact.ts + 40 * 86400, False)})
    out = stage2.take(items)
    assert len(out.late) == 1 and "behind the pipeline's event-time watermark" in out.late[0][1]


def test_input_read_again_after_a_restart_is_taken_once():
    """A restarted ingest re-reads its uncommitted input and sends it again: the partition
    knows, per input partition, how far it has taken, snapshot included."""
    pipe = Pipeline(1)
    batch = [(0, i, e) for i, e in enumerate(EVENTS[:200])]
    pipe.ingest(batch)
    stage = pipe.stages[0]
    doc = orjson.loads(orjson.dumps(stage.snapshot_doc(), option=orjson.OPT_NON_STR_KEYS))
    fresh = CorrelateStage(RULES, [InputPartition("in", s) for s in range(SOURCES)])
    fresh.restore_doc(doc)
    pipe.stages[0] = fresh
    before = set(pipe.alerts)
    pipe.ingest(batch[100:])  # read again from an older committed offset
    assert pipe.alerts == before
    out = fresh.take([])
    assert not out.alerts


def test_an_absence_due_before_the_newest_event_fires_when_every_input_goes_idle():
    """Once every input is idle, event time moves to the newest event, and an absence due
    before it is decided, even when that newest event went to the same partition. (Taking
    that event moved the engine's clock to its time, and the stage then took the engine for
    already advanced: the alert waited for the next, later event, which in a quiet hour may
    not come. Found by the integration soak; replay, which drains, always raised it.)"""
    now = 1_780_000_000.0

    def detection(eid: str, at: float, where: tuple[float, float], **fields: Any) -> Any:
        doc = {
            "event_id": eid,
            "event_type": "detection",
            "occurred_at": datetime.fromtimestamp(at, tz=UTC).isoformat(),
            "source": {"agency": "CBP", "country": "US"},
            "location": {"lat": where[0], "lon": where[1]},
            "sensor_id": "S-1",
            "sensor_kind": "lpr",
            "subject_kind": "vehicle",
            **fields,
        }
        fact = validate(orjson.dumps(doc), "detection", now=math.inf, partners=PARTNERS)
        assert not isinstance(fact, Rejection)
        return fact

    at_border = detection("d-border", now - 50 * 60, (31.3330, -110.9400), plate="ABC-123")
    newest = detection("d-inland", now, (30.0, -105.0))
    router = Router(RULES)
    stage = CorrelateStage(RULES, ["a", "b"])
    items = [
        item
        for offset, fact in enumerate((at_border, newest))
        for _, item in route_items(
            fact, router, RULES.rules_taking(fact), 1, 0.0, Origin("a", 0, offset)
        )
    ]
    assert stage.take(items, {"a": Mark(now, False)}).alerts == []  # "b" not heard from yet
    out = stage.take([], {"a": Mark(now, True), "b": Mark(-math.inf, True)})
    assert [a.rule_id for a, _ in out.alerts] == ["crossing-without-inspection"]


def test_a_snapshot_names_every_field():
    pipe = Pipeline(1)
    pipe.ingest([(0, i, e) for i, e in enumerate(EVENTS[:50])])  # 1 of 4 sources heard: held
    stage = pipe.stages[0]
    doc = orjson.loads(orjson.dumps(stage.snapshot_doc({"applied": 49})))
    assert doc["v"] == STAGE_SNAPSHOT_VERSION
    assert doc["buffer"] and all(set(it) == set(RoutedItem._fields) for it in doc["buffer"])
    assert {tuple(it["origin"]) for it in doc["buffer"]} == {("topic", "partition", "offset")}
    newest = max(_ts(e) for e in EVENTS[:50])
    assert doc["marks"] == {"in:0": {"watermark": newest, "idle": False}}
    assert list(doc["origins"]) == ["in:0"]
    assert doc["origins"]["in:0"]["offset"] == 49 and doc["origins"]["in:0"]["routes"]
    fresh = CorrelateStage(RULES, [InputPartition("in", s) for s in range(SOURCES)])
    assert fresh.restore_doc(doc) == {"applied": 49}
    assert fresh.buffer.items() == stage.buffer.items()


def test_a_snapshot_of_another_version_is_refused():
    doc = CorrelateStage(RULES).snapshot_doc()
    doc["v"] = 1
    with pytest.raises(SnapshotError, match="version 1, not 3: written by another release"):
        CorrelateStage(RULES).restore_doc(doc)


def test_a_snapshot_of_release_0_9_0_is_read_so_an_upgrade_keeps_the_state():
    pipe = Pipeline(1)
    pipe.ingest([(0, i, e) for i, e in enumerate(EVENTS[:50])])  # held: 1 of 4 sources heard
    stage = pipe.stages[0]
    named = orjson.loads(orjson.dumps(stage.snapshot_doc({"applied": 49})))
    positional = {  # as 0.9.0 wrote it
        **named,
        "v": 2,
        "buffer": [
            [*(it[f] for f in RoutedItem._fields[:-1]), list(it["origin"].values())]
            for it in named["buffer"]
        ],
        "marks": {n: [m["watermark"], m["idle"]] for n, m in named["marks"].items()},
        "origins": {n: [o["offset"], o["routes"]] for n, o in named["origins"].items()},
    }
    upgraded = CorrelateStage(RULES, [InputPartition("in", s) for s in range(SOURCES)])
    assert upgraded.restore_doc(positional) == {"applied": 49}
    assert upgraded.snapshot_doc({"applied": 49}) == stage.snapshot_doc({"applied": 49})


# -- alerts that stand: records taken behind the watermark ---------------------------------


def standing_of(versions: list[Any]) -> dict[str, list[str]]:
    return {aid: sorted(f.event_id for f in a.evidence) for aid, a in standing(versions).items()}


def replay_standing(evs: list[dict[str, Any]]) -> dict[str, list[str]]:
    data = b"\n".join(orjson.dumps(e) for e in evs) + b"\n"
    alerts, _ = correlate_file(io.BytesIO(data), RULES, partners=PARTNERS)
    return standing_of(alerts)


STANDING = replay_standing(EVENTS)


def late_arrivals(evs: list[dict[str, Any]], delay: float, rng: random.Random) -> list[list[Any]]:
    """Events spread over the sources, each arriving up to `delay` seconds of event time
    after its own time: far beyond the watermark's allowed disorder (none), within every
    rule's lateness."""
    per: list[list[Any]] = [[] for _ in range(SOURCES)]
    for ev in evs:
        per[zlib.crc32(ev["event_id"].encode()) % SOURCES].append(ev)
    out = []
    for evs_s in per:
        keyed = [
            (_ts(e) + (rng.uniform(0, delay) if rng.random() < 0.3 else 0.0), e) for e in evs_s
        ]
        keyed.sort(key=lambda x: x[0])
        out.append([e for _, e in keyed])
    return out


class VersionPipeline(Pipeline):
    def __init__(self, partitions: int, disorder: float = 0.0) -> None:
        super().__init__(partitions, disorder)
        self.versions: list[Any] = []

    def collect(self, out: Any) -> None:
        super().collect(out)
        self.versions.extend(a for a, _ in out.alerts)


def run_versions(
    per_source: list[list[Any]], partitions: int, rng: random.Random, restore_at: float | None
) -> VersionPipeline:
    pipe = VersionPipeline(partitions)
    total = sum(len(s) for s in per_source)
    taken = 0
    restored = restore_at is None
    for batch in random_batches(per_source, rng):
        pipe.ingest(batch)
        taken += len(batch)
        if not restored and restore_at is not None and taken >= restore_at * total:
            restored = True
            restore_every_stage(pipe)
    pipe.finish()
    return pipe


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    partitions=st.integers(1, 4),
    delay=st.sampled_from([60.0, 300.0, 600.0]),
    restore_at=st.sampled_from([None, 0.3, 0.6]),
)
def test_the_alerts_that_stand_are_replays_whatever_arrives_late(
    seed: int, partitions: int, delay: float, restore_at: float | None
) -> None:
    rng = random.Random(seed)
    pipe = run_versions(late_arrivals(EVENTS, delay, rng), partitions, rng, restore_at)
    assert pipe.late == 0
    got = standing_of(pipe.versions)
    assert got == STANDING
