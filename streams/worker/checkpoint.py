"""Checkpoints: the correlate stage's state per partition, written before its input is acked.

Partition p of `fusion.routed` has its state in partition p of the changelog topic, as a
per-key changelog (`engine/changelog.py`): a snapshot writes what changed since the last one,
in one transaction. A partition's state is read back from its changelog on its first message;
a message the state already covers (read again after a restart or a rebalance) is only acked.
The changes are a consistent cut taken at once; writing them, and then acking the input they
cover, goes on in the background. Everything that input produced (alerts, audit records, dead
letters) is flushed to the broker before the changes are written, and they are written before
the input is acked, so a crash at any point re-reads input rather than losing it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from engine.auditlog import PartitionLog
from engine.changelog import Change, StateLog
from engine.correlate import CorrelateStage
from engine.errors import FusionError
from engine.merkle import CompactRange
from streams.settings import Settings
from streams.worker.auditlog import AuditLogs
from streams.worker.edges import Changelog, Partitions, Producer, Record
from streams.worker.metrics import Metrics

log = logging.getLogger("fusion.checkpoint")


@dataclass
class PartitionCheckpoint:
    """A partition's stage and the input it has applied but not yet acked."""

    stage: CorrelateStage
    changelog: StateLog = field(default_factory=StateLog)
    applied: int = -1
    pending: list[Record] = field(default_factory=list)
    dirty: bool = False
    full: bool = False
    """The next snapshot compares every part (after a restore or a reload of the rules)."""
    last_snapshot: float = 0.0
    last_applied: float = 0.0
    next_interval: float = 0.0
    writing: asyncio.Future[None] | None = None
    log: PartitionLog | None = None


class Checkpoints:
    """Owns "processed offsets, state, commit order" for the correlate stage's partitions.

    `store` keeps the changelogs, `producer` sends (and flushes) the output, `routed` says
    which partitions of the stage's input are assigned here and takes the acks, and
    `new_stage` makes a stage under the rules in force."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        store: Changelog,
        producer: Producer,
        routed: Partitions,
        new_stage: Callable[[], CorrelateStage],
        logs: AuditLogs | None = None,
        stop: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.logs = logs
        self.metrics = metrics
        self.store = store
        self.producer = producer
        self.stop = stop or (lambda: os.kill(os.getpid(), signal.SIGTERM))
        self.routed = routed
        self.new_stage = new_stage
        self.partitions: dict[int, PartitionCheckpoint] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def accept(self, record: Record) -> PartitionCheckpoint | None:
        """The checkpoint of the record's partition, for its stage to apply the record; None
        if the partition is not assigned here, or if its state covers the record already
        (read again after a restart or a rebalance: it is acked as it is)."""
        checkpoint = await self.partition(record.partition)
        if checkpoint is None:
            return None
        if record.offset <= checkpoint.applied:
            self.routed.ack(record)
            return None
        return checkpoint

    async def partition(self, partition: int) -> PartitionCheckpoint | None:
        """The partition's checkpoint, loaded from its snapshot on first use; None if the
        partition is not assigned here."""
        checkpoint = self.partitions.get(partition)
        if checkpoint is not None:
            return checkpoint
        if not self.routed.owns(partition):
            return None
        async with self._locks.setdefault(partition, asyncio.Lock()):
            checkpoint = self.partitions.get(partition)
            if checkpoint is not None:
                return checkpoint
            entries, legacy = await self._read(partition)
            if not self.routed.owns(partition):
                await self.store.close(partition)
                return None  # revoked while its changelog was read: it is no longer ours
            # The stage is made after the read: rules reloaded while it waited apply to it.
            checkpoint = self._fresh()
            log_doc: dict[str, object] | None = None
            try:
                loaded = checkpoint.changelog.load(entries)
                if loaded is None and legacy is not None:
                    # an upgrade: the whole-state snapshot of an earlier release, written out
                    # whole to the changelog by the next snapshot
                    meta = checkpoint.stage.restore_doc(orjson.loads(zlib.decompress(legacy)))
                    checkpoint.applied = int(meta.get("applied", -1))
                    log_doc = meta.get("log")
                    checkpoint.full = checkpoint.dirty = True
                    log.info(
                        "partition %d: its state read from %s",
                        partition,
                        self.settings.topic_state_legacy,
                    )
                if loaded is not None:
                    head = loaded[0]
                    meta = checkpoint.stage.restore_doc(checkpoint.stage.assemble(*loaded))
                    checkpoint.applied = int(meta.get("applied", -1))
                    log_doc = meta.get("log")
                    now_rules = checkpoint.stage.engine.head()["rules"]
                    checkpoint.full = head["engine"]["rules"] != now_rules
            except FusionError as e:
                log.warning(
                    "the changelog of partition %d not used: %s; starting it empty (its input "
                    "is read again from the committed offset)",
                    partition,
                    e,
                )
                checkpoint = self._fresh(full=True)
                checkpoint.changelog.disown(entries)
            except (
                zlib.error,
                orjson.JSONDecodeError,
                AttributeError,
                KeyError,
                TypeError,
                ValueError,
            ):
                log.exception(
                    "the changelog of partition %d is unreadable; starting it empty "
                    "(its input is read again from the committed offset)",
                    partition,
                )
                checkpoint = self._fresh(full=True)
                checkpoint.changelog.disown(entries)
                log_doc = None
            if self.logs is not None:
                # with no usable snapshot the log is rebuilt from every leaf published
                checkpoint.log = await self.logs.load(partition, log_doc)
                if not self.routed.owns(partition):
                    return None
            log.info("partition %d ready (resuming after offset %d)", partition, checkpoint.applied)
            self.partitions[partition] = checkpoint
            return checkpoint

    def _fresh(self, full: bool = False) -> PartitionCheckpoint:
        stage = self.new_stage()
        stage.track()
        return PartitionCheckpoint(
            stage,
            full=full,
            last_snapshot=time.monotonic(),
            next_interval=self.settings.snapshot_interval_s,
        )

    async def _read(self, partition: int) -> tuple[dict[str, bytes], bytes | None]:
        """Take the partition's changelog (fencing its earlier owner), then read it; if it is
        empty, the partition's snapshot of the releases before the changelog, if any."""
        for attempt in range(1, 11):
            try:
                await self.store.open(partition)
                entries = await self.store.read(partition)
                return entries, None if entries else await self.store.legacy(partition)
            except Exception as e:
                if attempt == 10:
                    raise
                log.warning(
                    "reading the changelog of partition %d failed (%r); retrying", partition, e
                )
                await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
        return {}, None

    def applied(
        self, checkpoint: PartitionCheckpoint, record: Record, changed: bool, items: int = 0
    ) -> None:
        """The stage has applied the record; it is acked once a snapshot covers it. A record
        that changed nothing (marks that moved no watermark) waits for the next snapshot
        rather than causing one, so an idle pipeline does not snapshot."""
        checkpoint.applied = record.offset
        checkpoint.pending.append(record)
        checkpoint.dirty = checkpoint.dirty or changed
        if items:
            checkpoint.last_applied = time.monotonic()

    async def maybe_snapshot(self, partition: int, force: bool = False) -> None:
        """Snapshot the partition if due (`force`: now, and wait until written and acked).

        A snapshot writes what changed since the last one, so its cost follows the work,
        not the state. They are spaced `snapshot_interval_s` apart at least, further if one
        took more than `snapshot_cpu_share` of that time (the cost is more input to re-read
        after a crash, never lost input), and taken at once when the partition's input has
        gone quiet, so that its input is committed soon after it is processed."""
        checkpoint = self.partitions.get(partition)
        if checkpoint is None:
            return
        if checkpoint.writing is not None and not checkpoint.writing.done():
            if not force:
                return
            await checkpoint.writing
        if not checkpoint.dirty and not checkpoint.full:
            # what it has taken since its last snapshot changed nothing (marks that moved no
            # watermark): ack it as it is
            if checkpoint.pending and (checkpoint.writing is None or checkpoint.writing.done()):
                to_ack, checkpoint.pending = checkpoint.pending, []
                for record in to_ack:
                    self.routed.ack(record)
            return
        settings = self.settings
        now = time.monotonic()
        if not force:
            elapsed = now - checkpoint.last_snapshot
            quiet = now - checkpoint.last_applied >= settings.snapshot_interval_s
            if not (quiet or elapsed >= checkpoint.next_interval):
                return
        began = time.perf_counter()
        meta: dict[str, object] = {"applied": checkpoint.applied}
        entries: list[dict[str, object]] = []
        upto: CompactRange | None = None
        if checkpoint.log is not None:
            entries, upto = checkpoint.log.cut()
            meta["log"] = checkpoint.log.to_doc()
        changes = checkpoint.changelog.changes(checkpoint.stage, meta, full=checkpoint.full)
        checkpoint.full = False
        to_ack, checkpoint.pending = checkpoint.pending, []
        checkpoint.dirty = False
        checkpoint.last_snapshot = time.monotonic()
        cost = (time.perf_counter() - began) * len(self.partitions)
        checkpoint.next_interval = min(
            settings.snapshot_max_interval_s,
            max(settings.snapshot_interval_s, cost / settings.snapshot_cpu_share),
        )
        write = self._write(partition, checkpoint, changes, to_ack, entries, upto)
        if force:
            await write
        else:
            checkpoint.writing = asyncio.ensure_future(self._write_or_stop(partition, write))

    async def _write_or_stop(self, partition: int, write: Awaitable[None]) -> None:
        """A changelog that could not be written no longer matches the state held here: stop
        the worker, so that it resumes from the changelog and the committed offsets (the input
        since is read again). Skipping it would lose the changes."""
        try:
            await write
        except asyncio.CancelledError:
            raise
        except Exception:
            log.critical(
                "writing the changelog of partition %d failed; stopping the worker to resume "
                "from the last changes written",
                partition,
                exc_info=True,
            )
            self.metrics.internal_errors.labels("checkpoint").inc()
            self.stop()

    async def _write(
        self,
        partition: int,
        checkpoint: PartitionCheckpoint,
        changes: list[Change],
        to_ack: list[Record],
        entries: list[dict[str, object]],
        upto: CompactRange | None,
    ) -> None:
        """Output, then the log's leaves (so a leaf's record is on the broker before it),
        then the changes (holding the log's state), then the acks."""
        partition_log = checkpoint.log
        await self.producer.flush()
        if self.logs is not None and partition_log is not None and upto is not None:
            await self.logs.publish(partition, entries)
            await self.producer.flush()
            partition_log.did_publish(upto)
            if self.logs.sign_due(partition_log):
                await self.logs.sign(partition_log)
                await self.producer.flush()
        size = await self.store.write(partition, changes)
        self.metrics.snapshots.labels("correlate").inc()
        self.metrics.snapshot_bytes.labels("correlate").set(size)
        for record in to_ack:
            self.routed.ack(record)

    async def snapshot_due(self) -> None:
        for partition in list(self.partitions):
            await self.maybe_snapshot(partition)
        await self.sign_due()

    async def sign_due(self, force: bool = False) -> None:
        """Sign a checkpoint of each log with published leaves unsigned for long enough (or,
        `force`, at all)."""
        if self.logs is None:
            return
        signed = False
        for checkpoint in list(self.partitions.values()):
            partition_log = checkpoint.log
            busy = checkpoint.writing is not None and not checkpoint.writing.done()
            if partition_log is not None and not busy:
                if self.logs.sign_due(partition_log, force):
                    await self.logs.sign(partition_log)
                    signed = True
        if signed:
            await self.producer.flush()

    async def revoke(self, partitions: set[int]) -> None:
        """Hand partitions over: snapshot their state (waiting for it), then forget it."""
        for partition in partitions:
            if partition not in self.partitions:
                continue
            try:
                await self.maybe_snapshot(partition, force=True)
                await self.sign_due(force=True)
            except Exception:
                # its input since the last snapshot is read again by the next owner
                log.exception("could not snapshot partition %d on revocation", partition)
            finally:
                self.partitions.pop(partition, None)
                await self.store.close(partition)

    def remake_stages(self) -> None:
        """The rules were reloaded: every partition's stage is made again under them, with
        its state carried over (what the new rules keep of it)."""
        for checkpoint in self.partitions.values():
            stage = self.new_stage()
            stage.track()
            stage.restore_doc(checkpoint.stage.snapshot_doc())
            checkpoint.stage = stage
            checkpoint.dirty = True
            checkpoint.full = True

    def stages(self) -> list[CorrelateStage]:
        """The stage of every partition held here."""
        return [checkpoint.stage for checkpoint in self.partitions.values()]
