"""The per-key changelog of a correlate stage: what it writes is what changed, and a stage
restored from it is the stage that wrote it."""

from __future__ import annotations

import random
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.changelog import FACT, HEAD, StateLog, apply
from engine.correlate import CorrelateStage
from engine.correlators.base import Correlator
from engine.facts import Fact
from engine.watermarks import InputPartition
from tests.unit.test_correlate import (
    EVENTS,
    RULES,
    SOURCES,
    STANDING,
    VersionPipeline,
    late_arrivals,
    random_batches,
    standing_of,
)

NAMES = [InputPartition("in", s) for s in range(SOURCES)]


def fresh() -> CorrelateStage:
    stage = CorrelateStage(RULES, NAMES)
    stage.track()
    return stage


def restored(entries: dict[str, bytes]) -> tuple[CorrelateStage, StateLog, dict[str, Any]]:
    """A stage loaded from what a compacted changelog holds, as the worker loads it."""
    log = StateLog()
    loaded = log.load(entries)
    assert loaded is not None
    stage = fresh()
    meta = stage.restore_doc(stage.assemble(*loaded))
    return stage, log, meta


def canonical(stage: CorrelateStage) -> Any:
    """The stage's whole snapshot, with lists whose order carries nothing sorted."""
    doc = orjson.loads(orjson.dumps(stage.snapshot_doc(), option=orjson.OPT_NON_STR_KEYS))
    doc["buffer"].sort(key=orjson.dumps)
    doc["engine"]["raised"].sort()
    doc["engine"]["alerts"]["alerts"].sort(key=lambda a: a[0])
    return doc


def from_whole(stage: CorrelateStage) -> CorrelateStage:
    doc = orjson.loads(orjson.dumps(stage.snapshot_doc(), option=orjson.OPT_NON_STR_KEYS))
    other = fresh()
    other.restore_doc(doc)
    return other


class LoggedPipeline(VersionPipeline):
    """Each partition's changes written after every batch to a changelog kept as a compacted
    topic keeps it (the newest value per entry)."""

    def __init__(self, partitions: int) -> None:
        super().__init__(partitions)
        for stage in self.stages.values():
            stage.track()
        self.logs = {p: StateLog() for p in self.stages}
        self.topics: dict[int, dict[str, bytes]] = {p: {} for p in self.stages}
        self.written: list[int] = []
        self.batches = 0

    def ingest(self, batch: list[tuple[int, int, dict[str, Any]]]) -> None:
        super().ingest(batch)
        self.batches += 1
        for p, stage in self.stages.items():
            changes = self.logs[p].changes(stage, {"applied": self.batches})
            self.written.append(len(changes))
            apply(self.topics[p], changes)

    def restore_all(self) -> None:
        for p, stage in self.stages.items():
            again, log, meta = restored(self.topics[p])
            assert meta == {"applied": self.batches}
            assert canonical(again) == canonical(from_whole(stage))
            self.stages[p], self.logs[p] = again, log


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    partitions=st.integers(1, 4),
    delay=st.sampled_from([60.0, 600.0]),
    restores=st.lists(st.floats(0.05, 0.95), max_size=3),
)
def test_a_stage_restored_from_its_changelog_is_the_stage_that_wrote_it(
    seed: int, partitions: int, delay: float, restores: list[float]
) -> None:
    rng = random.Random(seed)
    per_source = late_arrivals(EVENTS, delay, rng)
    total = sum(len(s) for s in per_source)
    pipe = LoggedPipeline(partitions)
    points = sorted(restores)
    taken = 0
    for batch in random_batches(per_source, rng):
        pipe.ingest(batch)
        taken += len(batch)
        while points and taken >= points[0] * total:
            points.pop(0)
            pipe.restore_all()
    pipe.finish()
    assert pipe.late == 0
    assert standing_of(pipe.versions) == STANDING


def test_what_a_batch_writes_is_what_it_changed_not_the_state() -> None:
    rng = random.Random(5)
    per_source = late_arrivals(EVENTS, 60.0, rng)
    pipe = LoggedPipeline(1)
    one_at_a_time = [[(s, i, ev)] for s, evs in enumerate(per_source) for i, ev in enumerate(evs)]
    one_at_a_time.sort(key=lambda b: b[0][2]["occurred_at"])
    for batch in one_at_a_time:
        pipe.ingest(batch)
    held = len(pipe.topics[0])
    assert held > 300  # the state grew to hundreds of entries...
    # ...and a batch of one event wrote a handful: its fact, the parts it touched, the head
    # (a release of the buffer or an expiry writes more, in proportion to what it dropped)
    pipe.written.sort()
    assert pipe.written[len(pipe.written) // 2] <= 8
    assert max(pipe.written) < held / 4


def fact(eid: str, ts: float) -> Fact:
    return Fact.from_doc(
        {
            "event_id": eid,
            "event_type": "detection",
            "occurred_at": "2026-01-01T00:00:00Z",
            "source": {"agency": "CBP", "country": "US"},
            "location": {"lat": 31.0, "lon": -110.0},
            "plate": "ABC123",
        },
        ts,
    )


class Parts:
    """Parts by hand: name -> (value, facts)."""

    def __init__(self) -> None:
        self.now: dict[str, tuple[Any, list[Fact]]] = {}
        self.changed: set[str] = set()

    def set(self, name: str, facts: list[Fact] | None) -> None:
        if facts is None:
            self.now.pop(name, None)
        else:
            self.now[name] = ([f.event_id for f in facts], facts)
        self.changed.add(name)

    def take_changes(self, full: bool = False) -> Any:
        names, self.changed = (set(self.now) if full else self.changed), set()
        for n in sorted(names):
            value, facts = self.now.get(n, (None, []))
            yield n, value, facts

    def head(self, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"meta": meta or {}}


def test_an_event_is_written_once_while_any_part_refers_to_it_and_deleted_after() -> None:
    a, b = fact("e1", 1.0), fact("e2", 2.0)
    parts, log, topic = Parts(), StateLog(), {}
    parts.set("c/r/k1", [a])
    parts.set("c/r/k2", [a, b])
    apply(topic, log.changes(parts))
    assert sorted(topic) == ["c/r/k1", "c/r/k2", FACT + "e1", FACT + "e2", HEAD]
    parts.set("c/r/k1", None)
    changes = log.changes(parts)
    assert (FACT + "e1", None) not in changes  # k2 still refers to it
    apply(topic, changes)
    parts.set("c/r/k2", [b])
    changes = log.changes(parts)
    assert (FACT + "e1", None) in changes and all(n != FACT + "e2" for n, _ in changes)
    apply(topic, changes)
    assert sorted(topic) == ["c/r/k2", FACT + "e2", HEAD]
    # a part deleted before it was ever written writes nothing
    parts.set("c/r/k9", None)
    assert [n for n, _ in log.changes(parts)] == [HEAD]


def test_a_full_pass_deletes_what_no_part_stands_for() -> None:
    a = fact("e1", 1.0)
    parts, log, topic = Parts(), StateLog(), {}
    parts.set("c/r/k1", [a])
    apply(topic, log.changes(parts))
    loaded = StateLog()
    assert loaded.load(topic) is not None
    parts.now.clear()  # the state no longer holds it (a rule changed, say)
    apply(topic, loaded.changes(parts, full=True))
    assert sorted(topic) == [HEAD]


def test_a_changelog_that_could_not_be_used_is_deleted_by_the_next_full_pass() -> None:
    a, b = fact("e1", 1.0), fact("e2", 2.0)
    parts, topic = Parts(), {}
    parts.set("c/r/k1", [a])
    apply(topic, StateLog().changes(parts))
    fresh, log = Parts(), StateLog()
    log.disown(topic)  # written by another release, say: started empty
    fresh.set("c/r/k2", [b])
    apply(topic, log.changes(fresh, full=True))
    assert sorted(topic) == ["c/r/k2", FACT + "e2", HEAD]


class Whole(Correlator[Any]):
    """A rule type with state of its own and no changelog of its own."""

    def __init__(self) -> None:
        super().__init__(RULES.rules[0])
        self.held: dict[str, Fact] = {}

    def on_fact(self, fact: Fact, key: str | None, owner: bool, watermark: float) -> Any:
        self.held[fact.event_id] = fact
        return []

    def expire(self, watermark: float) -> None:
        pass

    def size(self) -> tuple[int, int]:
        return (len(self.held), len(self.held))

    def evictions(self) -> int:
        return 0

    def facts(self) -> Any:
        return iter(self.held.values())

    def snapshot(self) -> Any:
        return {"held": sorted(self.held)}

    def restore(self, data: Any, facts: dict[str, Fact]) -> None:
        self.held = {i: facts[i] for i in data["held"]}


def test_a_rule_type_without_a_changelog_of_its_own_is_written_whole_every_time() -> None:
    c = Whole()
    c.track()
    c.on_fact(fact("e1", 1.0), "k", True, 0.0)
    first = list(c.take_changes())
    assert [(n, v) for n, v, _ in first] == [("*", {"held": ["e1"]})]
    again = list(c.take_changes())  # nothing is known to have changed: written whole anyway
    assert [n for n, _, _ in again] == ["*"] and [f.event_id for f in again[0][2]] == ["e1"]
    other = Whole()
    other.restore(other.assemble([], again[0][1]), {"e1": fact("e1", 1.0)})
    assert list(other.held) == ["e1"]
