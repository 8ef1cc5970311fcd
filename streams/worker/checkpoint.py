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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from engine.correlate import CorrelateStage
from engine.errors import FusionError
from streams.settings import Settings
from streams.worker.metrics import Metrics

log = logging.getLogger("fusion.checkpoint")


@dataclass
class PartitionCheckpoint:
    """A partition's stage and the input it has applied but not yet acked."""

    stage: CorrelateStage
    applied: int = -1
    pending: list[Any] = field(default_factory=list)
    dirty: bool = False
    last_snapshot: float = 0.0
    last_applied: float = 0.0
    next_interval: float = 0.0
    items_since: int = 0
    items_held: int = 0
    writing: asyncio.Future[None] | None = None


class Checkpoints:
    """Owns "processed offsets, state, commit order" for the correlate stage's partitions."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        new_stage: Callable[[], CorrelateStage],
        owns: Callable[[int], bool],
        read: Callable[[int], Awaitable[bytes | None]],
        send: Callable[[bytes, int], Awaitable[object]],
        flush: Callable[[], Awaitable[None]],
        ack: Callable[[Any], None],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.new_stage = new_stage
        self.owns = owns
        self.read = read
        self.send = send
        self.flush = flush
        self.ack = ack
        self.partitions: dict[int, PartitionCheckpoint] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def partition(self, p: int) -> PartitionCheckpoint | None:
        """Partition p's checkpoint, loaded from its snapshot on first use; None if not ours."""
        cp = self.partitions.get(p)
        if cp is not None:
            return cp
        if not self.owns(p):
            return None
        async with self._locks.setdefault(p, asyncio.Lock()):
            cp = self.partitions.get(p)
            if cp is not None:
                return cp
            blob = await self._read(p)
            if not self.owns(p):
                return None  # revoked while its snapshot was read: it is no longer ours
            # The stage is made after the read: rules reloaded while it waited apply to it.
            cp = self._fresh()
            if blob is not None:
                try:
                    doc = orjson.loads(zlib.decompress(blob))
                    if doc.get("v") == 1:  # the engine alone, as the previous release wrote it
                        meta = cp.stage.engine.restore_doc(doc)
                    else:
                        meta = cp.stage.restore_doc(doc)
                    cp.applied = int(meta.get("applied", -1))
                except (
                    zlib.error,
                    orjson.JSONDecodeError,
                    FusionError,
                    KeyError,
                    TypeError,
                    ValueError,
                ):
                    log.exception(
                        "snapshot of partition %d unreadable; starting it empty "
                        "(its input is read again from the committed offset)",
                        p,
                    )
                    cp = self._fresh()
            log.info("partition %d ready (resuming after offset %d)", p, cp.applied)
            self.partitions[p] = cp
            return cp

    def _fresh(self) -> PartitionCheckpoint:
        return PartitionCheckpoint(
            self.new_stage(),
            last_snapshot=time.monotonic(),
            next_interval=self.settings.snapshot_interval_s,
        )

    async def _read(self, p: int) -> bytes | None:
        for attempt in range(1, 11):
            try:
                return await self.read(p)
            except Exception as e:
                if attempt == 10:
                    raise
                log.warning("reading the snapshot of partition %d failed (%r); retrying", p, e)
                await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
        return None

    def applied(
        self, cp: PartitionCheckpoint, offset: int, token: Any, changed: bool, items: int = 0
    ) -> None:
        """The stage has applied the message at `offset`; ack it once a snapshot covers it.
        A message that changed nothing (marks that moved no watermark) waits for the next
        snapshot rather than causing one, so an idle pipeline does not snapshot."""
        cp.applied = offset
        cp.pending.append(token)
        cp.dirty = cp.dirty or changed
        if items:
            cp.last_applied = time.monotonic()
            cp.items_since += items

    async def maybe_snapshot(self, p: int, force: bool = False) -> None:
        """Snapshot partition p if due (`force`: now, and wait until written and acked).

        Snapshots are spaced out as state grows, so that they take at most
        `snapshot_cpu_share` of the time: the cost is more input to re-read after a crash,
        never lost input; and a busy partition is snapshotted only once it has taken at least
        half as many events as the last snapshot held, so that their cost is proportional to
        the work. A partition whose input has gone quiet is snapshotted at once, so its input
        is committed soon after it is processed."""
        cp = self.partitions.get(p)
        if cp is None:
            return
        if cp.writing is not None and not cp.writing.done():
            if not force:
                return
            await cp.writing
        if not cp.dirty:
            # what it has taken since its last snapshot changed nothing (marks that moved no
            # watermark): ack it as it is
            if cp.pending and (cp.writing is None or cp.writing.done()):
                to_ack, cp.pending = cp.pending, []
                for token in to_ack:
                    self.ack(token)
            return
        now = time.monotonic()
        if not force:
            s = self.settings
            elapsed = now - cp.last_snapshot
            quiet = now - cp.last_applied >= s.snapshot_interval_s
            worth = elapsed >= cp.next_interval and 2 * cp.items_since >= cp.items_held
            if not (quiet or worth or elapsed >= s.snapshot_max_interval_s):
                return
        began = time.perf_counter()
        doc = cp.stage.snapshot_doc({"applied": cp.applied})
        blob = zlib.compress(orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS), 1)
        cp.items_held = len(doc["engine"]["facts"]) + len(doc["buffer"])
        cp.items_since = 0
        to_ack, cp.pending = cp.pending, []
        cp.dirty = False
        cp.last_snapshot = time.monotonic()
        cost = (time.perf_counter() - began) * len(self.partitions)
        s = self.settings
        cp.next_interval = min(
            s.snapshot_max_interval_s, max(s.snapshot_interval_s, cost / s.snapshot_cpu_share)
        )
        write = self._write(p, cp, blob, to_ack)
        if force:
            await write
        else:
            cp.writing = asyncio.ensure_future(write)

    async def _write(self, p: int, cp: PartitionCheckpoint, blob: bytes, to_ack: list[Any]) -> None:
        try:
            await self.flush()
            await self.send(blob, p)
            await self.flush()
        except Exception:
            log.exception("writing the snapshot of partition %d failed; will retry", p)
            cp.pending[:0] = to_ack
            cp.dirty = True
            return
        self.metrics.snapshots.labels("correlate").inc()
        self.metrics.snapshot_bytes.labels("correlate").set(len(blob))
        for token in to_ack:
            self.ack(token)

    async def snapshot_due(self) -> None:
        for p in list(self.partitions):
            await self.maybe_snapshot(p)

    async def revoke(self, partitions: set[int]) -> None:
        """Hand partitions over: snapshot their state (waiting for it), then forget it."""
        for p in partitions:
            if p not in self.partitions:
                continue
            try:
                await self.maybe_snapshot(p, force=True)
            except Exception:
                # its input since the last snapshot is read again by the next owner
                log.exception("could not snapshot partition %d on revocation", p)
            finally:
                self.partitions.pop(p, None)

    def replace_stages(self, remake: Callable[[CorrelateStage], CorrelateStage]) -> None:
        """Swap every partition's stage (a rule reload), keeping what carries over."""
        for cp in self.partitions.values():
            cp.stage = remake(cp.stage)
            cp.dirty = True

