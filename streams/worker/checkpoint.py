"""Checkpoints: the correlate stage's state per partition, snapshotted before its input is acked.

Partition p of `fusion.routed` has its state in partition p of the compacted state topic.
A partition's state is loaded from its newest snapshot on its first message; a message the
state already covers (read again after a restart or a rebalance) is only acked. Snapshots
are a consistent cut taken at once; writing them, and then acking the input they cover,
goes on in the background. Everything that input produced (alerts, audit records, dead
letters) is flushed to the broker before the snapshot is written, and the snapshot before
the input is acked, so a crash at any point re-reads input rather than losing it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from engine.auditlog import PartitionLog
from engine.correlate import CorrelateStage
from engine.errors import FusionError
from engine.merkle import CompactRange
from streams.settings import Settings
from streams.worker.auditlog import AuditLogs
from streams.worker.edges import Partitions, Record, SnapshotStore
from streams.worker.metrics import Metrics

log = logging.getLogger("fusion.checkpoint")


@dataclass
class PartitionCheckpoint:
    """A partition's stage and the input it has applied but not yet acked."""

    stage: CorrelateStage
    applied: int = -1
    pending: list[Record] = field(default_factory=list)
    dirty: bool = False
    last_snapshot: float = 0.0
    last_applied: float = 0.0
    next_interval: float = 0.0
    items_since: int = 0
    items_held: int = 0
    writing: asyncio.Future[None] | None = None
    log: PartitionLog | None = None


class Checkpoints:
    """Owns "processed offsets, state, commit order" for the correlate stage's partitions.

    `store` keeps the snapshots, `routed` says which partitions of the stage's input are
    assigned here and takes the acks, and `new_stage` makes a stage under the rules in
    force."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        store: SnapshotStore,
        routed: Partitions,
        new_stage: Callable[[], CorrelateStage],
        logs: AuditLogs | None = None,
    ) -> None:
        self.settings = settings
        self.logs = logs
        self.metrics = metrics
        self.store = store
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
            blob = await self._read(partition)
            if not self.routed.owns(partition):
                return None  # revoked while its snapshot was read: it is no longer ours
            # The stage is made after the read: rules reloaded while it waited apply to it.
            checkpoint = self._fresh()
            log_doc: dict[str, object] | None = None
            if blob is not None:
                try:
                    meta = checkpoint.stage.restore_doc(orjson.loads(zlib.decompress(blob)))
                    checkpoint.applied = int(meta.get("applied", -1))
                    log_doc = meta.get("log")
                except FusionError as e:
                    log.warning(
                        "snapshot of partition %d not used: %s; starting it empty (its input "
                        "is read again from the committed offset)",
                        partition,
                        e,
                    )
                    checkpoint = self._fresh()
                except (
                    zlib.error,
                    orjson.JSONDecodeError,
                    AttributeError,
                    KeyError,
                    TypeError,
                    ValueError,
                ):
                    log.exception(
                        "snapshot of partition %d unreadable; starting it empty "
                        "(its input is read again from the committed offset)",
                        partition,
                    )
                    checkpoint = self._fresh()
                    log_doc = None
            if self.logs is not None:
                # with no usable snapshot the log is rebuilt from every leaf published
                checkpoint.log = await self.logs.load(partition, log_doc)
                if not self.routed.owns(partition):
                    return None
            log.info("partition %d ready (resuming after offset %d)", partition, checkpoint.applied)
            self.partitions[partition] = checkpoint
            return checkpoint

    def _fresh(self) -> PartitionCheckpoint:
        return PartitionCheckpoint(
            self.new_stage(),
            last_snapshot=time.monotonic(),
            next_interval=self.settings.snapshot_interval_s,
        )

    async def _read(self, partition: int) -> bytes | None:
        for attempt in range(1, 11):
            try:
                return await self.store.latest(partition)
            except Exception as e:
                if attempt == 10:
                    raise
                log.warning(
                    "reading the snapshot of partition %d failed (%r); retrying", partition, e
                )
                await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
        return None

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
            checkpoint.items_since += items

    async def maybe_snapshot(self, partition: int, force: bool = False) -> None:
        """Snapshot the partition if due (`force`: now, and wait until written and acked).

        Snapshots are spaced out as state grows, so that they take at most
        `snapshot_cpu_share` of the time: the cost is more input to re-read after a crash,
        never lost input; and a busy partition is snapshotted only once it has taken at least
        half as many events as the last snapshot held, so that their cost is proportional to
        the work. A partition whose input has gone quiet is snapshotted at once, so its input
        is committed soon after it is processed."""
        checkpoint = self.partitions.get(partition)
        if checkpoint is None:
            return
        if checkpoint.writing is not None and not checkpoint.writing.done():
            if not force:
                return
            await checkpoint.writing
        if not checkpoint.dirty:
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
            worth = (
                elapsed >= checkpoint.next_interval
                and 2 * checkpoint.items_since >= checkpoint.items_held
            )
            if not (quiet or worth or elapsed >= settings.snapshot_max_interval_s):
                return
        began = time.perf_counter()
        meta: dict[str, object] = {"applied": checkpoint.applied}
        entries: list[dict[str, object]] = []
        upto: CompactRange | None = None
        if checkpoint.log is not None:
            entries, upto = checkpoint.log.cut()
            meta["log"] = checkpoint.log.to_doc()
        doc = checkpoint.stage.snapshot_doc(meta)
        blob = zlib.compress(orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS), 1)
        checkpoint.items_held = len(doc["engine"]["facts"]) + len(doc["buffer"])
        checkpoint.items_since = 0
        to_ack, checkpoint.pending = checkpoint.pending, []
        checkpoint.dirty = False
        checkpoint.last_snapshot = time.monotonic()
        cost = (time.perf_counter() - began) * len(self.partitions)
        checkpoint.next_interval = min(
            settings.snapshot_max_interval_s,
            max(settings.snapshot_interval_s, cost / settings.snapshot_cpu_share),
        )
        write = self._write(partition, checkpoint, blob, to_ack, entries, upto)
        if force:
            await write
        else:
            checkpoint.writing = asyncio.ensure_future(write)

    async def _write(
        self,
        partition: int,
        checkpoint: PartitionCheckpoint,
        blob: bytes,
        to_ack: list[Record],
        entries: list[dict[str, object]],
        upto: CompactRange | None,
    ) -> None:
        """Output, then the log's leaves (so a leaf's record is on the broker before it),
        then the snapshot holding the log's state, then the acks."""
        partition_log = checkpoint.log
        try:
            await self.store.flush()
            if self.logs is not None and partition_log is not None and upto is not None:
                await self.logs.publish(partition, entries)
                await self.store.flush()
                partition_log.did_publish(upto)
                if self.logs.sign_due(partition_log):
                    await self.logs.sign(partition_log)
            await self.store.write(partition, blob)
            await self.store.flush()
        except Exception:
            log.exception("writing the snapshot of partition %d failed; will retry", partition)
            if partition_log is not None:
                partition_log.unpublished(entries)
            checkpoint.pending[:0] = to_ack
            checkpoint.dirty = True
            return
        self.metrics.snapshots.labels("correlate").inc()
        self.metrics.snapshot_bytes.labels("correlate").set(len(blob))
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
            await self.store.flush()

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

    def remake_stages(self) -> None:
        """The rules were reloaded: every partition's stage is made again under them, with
        its state carried over (what the new rules keep of it)."""
        for checkpoint in self.partitions.values():
            stage = self.new_stage()
            stage.restore_doc(checkpoint.stage.snapshot_doc())
            checkpoint.stage = stage
            checkpoint.dirty = True

    def stages(self) -> list[CorrelateStage]:
        """The stage of every partition held here."""
        return [checkpoint.stage for checkpoint in self.partitions.values()]
