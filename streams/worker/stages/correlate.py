"""Stage 2, correlate: per partition of `fusion.routed`, the pure `CorrelateStage` (dedup,
event-time buffer, engine); alerts delivered, late events dead-lettered.

Input: routed messages (copies and marks). Output: alerts and audit records (through
`Delivery`), dead letters for events too late for every rule. State: one `CorrelateStage`
per partition, checkpointed by `Checkpoints` before its input is acked.
"""

from __future__ import annotations

import logging
import time

import orjson

from engine.auditlog import PartitionLog
from engine.correlate import CorrelateOutput
from engine.ingest import Rejection
from streams.settings import Settings
from streams.worker.checkpoint import Checkpoints
from streams.worker.delivery import DeadLetters, Delivery
from streams.worker.edges import Record
from streams.worker.envelopes import decode_routed
from streams.worker.metrics import Metrics

log = logging.getLogger("fusion.correlate")


class CorrelateShell:
    """Feeds routed messages to each partition's stage and sends what comes out."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        checkpoints: Checkpoints,
        delivery: Delivery,
        dead_letters: DeadLetters,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.checkpoints = checkpoints
        self.delivery = delivery
        self.dead_letters = dead_letters

    async def on_message(self, record: Record) -> None:
        checkpoint = await self.checkpoints.accept(record)
        if checkpoint is None:
            return
        batch = decode_routed(record.value)
        stage = checkpoint.stage
        was = (stage.released_before, len(stage.buffer))
        out = stage.take(batch.items, batch.marks, time.time())
        await self.send_output(out, checkpoint.log)
        changed = bool(batch.items) or was != (stage.released_before, len(stage.buffer))
        self.checkpoints.applied(checkpoint, record, changed, len(batch.items))
        held = self.metrics.batch
        partition = str(record.partition)
        held.reordered.set((partition,), len(stage.buffer))
        before = stage.released_before
        if before > float("-inf"):
            held.watermark_seconds.set(("correlate", self.settings.topic_routed, partition), before)
        await self.checkpoints.maybe_snapshot(record.partition)

    async def send_output(
        self, out: CorrelateOutput, audit_log: PartitionLog | None = None
    ) -> None:
        held = self.metrics.batch
        for alert, ingested_at in out.alerts:
            await self.delivery.deliver(alert, ingested_at, audit_log)
        for alert_id, rule_id, records in out.refuted_late:
            log.warning(
                "alert %s (%s) stands: %s refute it but came after its corrections span",
                alert_id,
                rule_id,
                ", ".join(records),
            )
        for it in out.duplicates:
            held.duplicates.add((it.doc.get("event_type", ""),))
        for it in out.behind:
            if it.primary:
                held.out_of_order.add((it.origin.topic,))
        if out.late:
            now = time.time()
            for it, reason in out.late:
                agency = str((it.doc.get("source") or {}).get("agency", ""))
                held.late.add((it.origin.topic, str(it.doc.get("event_type", "")), agency))
                await self.dead_letters.send(
                    it.origin, orjson.dumps(it.doc), Rejection("late", reason), now
                )
