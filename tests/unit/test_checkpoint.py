"""Checkpoints (streams/worker/checkpoint.py) alone: a partition's state read back from its
changelog, changes-then-ack, and what happens when a changelog cannot be read or written. The
changelog topic, the producer and the assigned partitions are the in-memory stand-ins of
tests/unit/edges.py, which keep one journal, so the order of flushes, writes and acks can be
asserted."""

from __future__ import annotations

import asyncio
import base64
import logging
import zlib
from typing import Any

import orjson
import pytest

from engine.correlate import CorrelateStage
from engine.merkle import root
from engine.notes import SignedNote, Signer
from engine.routing import Origin, Router, route_items
from engine.ruletests import DEFAULT_START, build_event
from engine.watermarks import InputPartition, Mark
from streams.settings import Settings
from streams.worker.auditlog import AuditLogs
from streams.worker.checkpoint import Checkpoints, PartitionCheckpoint
from streams.worker.metrics import Metrics
from tests.unit.edges import Assigned, Broker, ChangelogStore, Msg
from tests.unit.test_stages import RULES, unit_settings

SOURCE = InputPartition("events.detections", 0)
ROUTED = "fusion.routed"


class Stops(list[str]):
    def append_stop(self) -> None:
        self.append("stop")


class Edges:
    """The producer, the changelog topic and the assigned partitions (0 and 1), one journal;
    and whether the worker was told to stop."""

    def __init__(self, entries: dict[int, dict[str, bytes]] | None = None) -> None:
        self.broker = Broker()
        self.store = ChangelogStore(self.broker, entries=entries or {})
        self.assigned = Assigned({0, 1}, journal=self.broker.journal)
        self.journal = self.broker.journal
        self.stopped = Stops()

    def acks(self) -> list[str]:
        return [entry for entry in self.journal if entry.startswith("ack")]


def stage() -> CorrelateStage:
    return CorrelateStage(RULES, [SOURCE])


def checkpoints(
    edges: Edges, settings: Settings | None = None, logs: AuditLogs | None = None
) -> Checkpoints:
    return Checkpoints(
        settings or unit_settings(),
        Metrics(),
        edges.store,
        edges.broker,
        edges.assigned,
        stage,
        logs,
        stop=edges.stopped.append_stop,
    )


def head(edges: Edges, partition: int = 0) -> Any:
    return orjson.loads(edges.store.entries[partition]["h"])


def record(partition: int, offset: int) -> Msg:
    return Msg(ROUTED, partition, offset, b"")


def held_read(checkpoint: PartitionCheckpoint) -> None:
    """The stage takes a plate read and holds it (its source's watermark is behind it)."""
    held_read_stage(checkpoint.stage)


def held_read_stage(taking: CorrelateStage) -> None:
    fact = build_event({"id": "d1", "type": "detection", "plate": "AB-1"}, DEFAULT_START)
    items = route_items(
        fact, Router(RULES), RULES.rules_taking(fact), 1, 0.0, Origin(SOURCE.topic, 0, 0)
    )
    taking.take([it for _, it in items], {SOURCE: Mark(fact.ts - 60, False)})


async def apply_read(partitions: Checkpoints, partition: int, offset: int) -> None:
    """The record at `offset` of `partition` brings the stage a read it holds."""
    checkpoint = await partitions.accept(record(partition, offset))
    assert checkpoint is not None
    held_read(checkpoint)
    partitions.applied(checkpoint, record(partition, offset), changed=True, items=1)


def test_a_partition_not_assigned_here_is_neither_loaded_nor_applied() -> None:
    edges = Edges()
    edges.assigned.owned = {1}
    partitions = checkpoints(edges)
    assert asyncio.run(partitions.accept(record(0, 5))) is None
    assert edges.journal == [] and partitions.partitions == {}


def test_snapshot_then_ack_after_the_output_is_flushed() -> None:
    edges = Edges()
    partitions = checkpoints(edges)

    async def run() -> None:
        await apply_read(partitions, 0, 7)
        await edges.broker.send("alerts.us", b"a1", b"{}", None)  # what the record produced
        await partitions.maybe_snapshot(0, force=True)

    asyncio.run(run())
    assert edges.journal == [
        "open 0",
        "read 0",
        "send alerts.us",
        "flush",
        "write 0",
        "ack 0@7",
    ]
    assert head(edges)["meta"] == {"applied": 7}
    assert [n for n in edges.store.entries[0] if n.startswith("b/")] == ["b/d1\x00plate:AB1"]


def test_a_restarted_partition_resumes_from_its_snapshot_and_acks_what_it_covers() -> None:
    edges = Edges()
    first = checkpoints(edges)

    async def before_the_restart() -> None:
        await apply_read(first, 0, 7)
        await first.maybe_snapshot(0, force=True)

    asyncio.run(before_the_restart())
    edges.journal.clear()
    again = checkpoints(edges)
    assert asyncio.run(again.accept(record(0, 7))) is None  # covered: acked, not applied
    checkpoint = asyncio.run(again.accept(record(0, 8)))
    assert checkpoint is not None and checkpoint.applied == 7
    assert [it.event_id for it in checkpoint.stage.buffer.items()] == ["d1"]
    assert edges.journal == ["open 0", "read 0", "ack 0@7"]


def test_input_that_changed_nothing_is_acked_without_a_snapshot() -> None:
    edges = Edges()
    partitions = checkpoints(edges)

    async def run() -> None:
        checkpoint = await partitions.accept(record(1, 3))
        assert checkpoint is not None
        partitions.applied(checkpoint, record(1, 3), changed=False)
        await partitions.snapshot_due()

    asyncio.run(run())
    assert edges.journal == ["open 1", "read 1", "ack 1@3"]


def test_a_busy_partition_is_not_snapshotted_before_its_interval() -> None:
    edges = Edges()
    partitions = checkpoints(edges, Settings(snapshot_interval_s=3600))

    async def run() -> None:
        await apply_read(partitions, 0, 1)
        await partitions.snapshot_due()

    asyncio.run(run())
    assert edges.journal == ["open 0", "read 0"]  # not written, not acked: it waits


def test_a_changelog_that_could_not_be_written_stops_the_worker_and_acks_nothing() -> None:
    edges = Edges()
    partitions = checkpoints(edges, Settings(snapshot_interval_s=0.001))

    async def run() -> None:
        await apply_read(partitions, 0, 4)
        edges.broker.fail = True  # the broker went away
        await asyncio.sleep(0.01)
        await partitions.maybe_snapshot(0)
        writing = partitions.partitions[0].writing
        assert writing is not None
        await writing

    asyncio.run(run())
    assert edges.acks() == [] and edges.stopped == ["stop"] and edges.store.entries == {}


def test_a_changelog_of_another_release_is_not_used(caplog: pytest.LogCaptureFixture) -> None:
    edges = Edges()
    first = checkpoints(edges)

    async def write_one() -> None:
        await apply_read(first, 0, 7)
        await first.maybe_snapshot(0, force=True)

    asyncio.run(write_one())
    old = orjson.loads(edges.store.entries[0]["h"])
    old["v"] = 1
    edges.store.entries[0]["h"] = orjson.dumps(old)
    with caplog.at_level(logging.WARNING, logger="fusion.checkpoint"):
        checkpoint = asyncio.run(checkpoints(edges).accept(record(0, 5)))
    assert checkpoint is not None and checkpoint.applied == -1  # empty: everything is applied
    assert checkpoint.full  # its next changes delete what the changelog held
    assert (
        "the changelog of partition 0 not used: a stage snapshot of version 1, not 3: written "
        "by another release; starting it empty (its input is read again from the committed "
        "offset)"
    ) in caplog.messages


def test_an_unreadable_changelog_starts_the_partition_empty(
    caplog: pytest.LogCaptureFixture,
) -> None:
    edges = Edges(entries={0: {"h": b"not json"}})
    with caplog.at_level(logging.ERROR, logger="fusion.checkpoint"):
        checkpoint = asyncio.run(checkpoints(edges).accept(record(0, 5)))
    assert checkpoint is not None and checkpoint.applied == -1
    assert any("the changelog of partition 0 is unreadable" in m for m in caplog.messages)


def test_a_revocation_snapshots_and_forgets_its_partitions() -> None:
    edges = Edges()
    partitions = checkpoints(edges)

    async def run() -> None:
        for p in (0, 1):
            await apply_read(partitions, p, 2)
        await partitions.revoke({0})

    asyncio.run(run())
    assert list(partitions.partitions) == [1]
    assert edges.acks() == ["ack 0@2"] and list(edges.store.entries) == [0]
    assert "close 0" in edges.journal


def test_reloaded_rules_remake_every_stage_with_its_state() -> None:
    edges = Edges()
    partitions = checkpoints(edges)
    checkpoint = asyncio.run(partitions.accept(record(0, 2)))
    assert checkpoint is not None
    held_read(checkpoint)
    old = checkpoint.stage
    partitions.remake_stages()
    assert partitions.stages() == [checkpoint.stage] and checkpoint.stage is not old
    assert checkpoint.stage.buffer.items() == old.buffer.items()
    assert checkpoint.dirty and checkpoint.full  # the next changes compare the whole stage


# -- the transparency log in the partition's checkpoint ---------------------------------------


class MemoryLogs(AuditLogs):
    """The log's edge over the in-memory producer: a log's tail is read back from what was
    sent to the leaves topic."""

    def __init__(self, settings: Settings, broker: Broker) -> None:
        super().__init__(settings, broker, Signer.generate("border-fusion-log-test"))
        self.broker = broker

    async def tail(self, partition: int, since: int) -> list[dict[str, Any]]:
        self.broker.journal.append(f"tail {partition}")
        sent = self.broker.sent.get(self.settings.topic_log_leaves, [])
        entries = [orjson.loads(value) for _, value, p in sent if p == partition]
        return [e for e in entries if e["index"] >= since]


def audit(alert: str) -> dict[str, Any]:
    return {"alert_id": alert, "destination": "MX", "version": 1}


def test_records_then_leaves_then_a_checkpoint_then_the_snapshot_then_acks() -> None:
    edges = Edges()
    settings = unit_settings()
    logs = MemoryLogs(settings, edges.broker)
    partitions = checkpoints(edges, settings, logs)

    async def run() -> None:
        await apply_read(partitions, 0, 7)
        checkpoint = partitions.partitions[0]
        assert checkpoint.log is not None
        for alert in ("a1", "a2"):
            placed = checkpoint.log.append(audit(alert), bytes(16))
            await edges.broker.send(settings.topic_audit, b"", orjson.dumps(placed), None)
        await partitions.maybe_snapshot(0, force=True)

    asyncio.run(run())
    leaves, checkpoints_topic = settings.topic_log_leaves, settings.topic_log_checkpoints
    assert edges.journal == [
        "open 0",
        "read 0",
        "tail 0",
        f"send {settings.topic_audit}",
        f"send {settings.topic_audit}",
        "flush",
        f"send {leaves}",
        f"send {leaves}",
        "flush",
        f"send {checkpoints_topic}",
        "flush",
        "write 0",
        "ack 0@7",
    ]
    assert head(edges)["meta"]["log"]["size"] == 2
    note = SignedNote.parse(edges.broker.values(checkpoints_topic)[-1].decode())
    assert note.checkpoint().size == 2


def test_leaves_published_after_the_snapshot_are_adopted_after_a_crash() -> None:
    edges = Edges()
    settings = unit_settings()
    logs = MemoryLogs(settings, edges.broker)
    first = checkpoints(edges, settings, logs)

    async def before_the_crash() -> None:
        await apply_read(first, 0, 7)
        log = first.partitions[0].log
        assert log is not None
        log.append(audit("a1"), bytes(16))
        await first.maybe_snapshot(0, force=True)
        # two more leaves published, then killed before the next snapshot
        log.append(audit("a2"), bytes(16))
        log.append(audit("a3"), bytes(16))
        entries, _ = log.cut()
        await logs.publish(0, entries)

    asyncio.run(before_the_crash())
    again = checkpoints(edges, settings, logs)
    checkpoint = asyncio.run(again.accept(record(0, 8)))
    assert checkpoint is not None and checkpoint.log is not None
    hashes = [
        base64.b64decode(orjson.loads(v)["leaf_hash"])
        for v in edges.broker.values(settings.topic_log_leaves)
    ]
    assert checkpoint.log.tree.size == 3 and checkpoint.log.tree.root() == root(hashes)
    assert checkpoint.log.append(audit("a4"), bytes(16))["log"]["index"] == 3


def test_an_upgrade_reads_the_snapshot_of_the_releases_before_the_changelog() -> None:
    source = stage()
    held_read_stage(source)
    blob = zlib.compress(orjson.dumps(source.snapshot_doc({"applied": 6})))
    edges = Edges()
    edges.store.snapshots[0] = blob
    partitions = checkpoints(edges)

    async def run() -> PartitionCheckpoint | None:
        checkpoint = await partitions.accept(record(0, 7))
        await partitions.maybe_snapshot(0, force=True)
        return checkpoint

    checkpoint = asyncio.run(run())
    assert checkpoint is not None and checkpoint.applied == 6
    assert [it.event_id for it in checkpoint.stage.buffer.items()] == ["d1"]
    # written out whole to the changelog, and read from there from now on
    assert head(edges)["meta"] == {"applied": 6}
    assert any(n.startswith("b/d1") for n in edges.store.entries[0])
    edges.store.snapshots.clear()
    again = asyncio.run(checkpoints(edges).accept(record(0, 7)))
    assert again is not None and again.applied == 6
    assert [it.event_id for it in again.stage.buffer.items()] == ["d1"]
