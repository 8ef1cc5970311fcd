"""Stage 2, correlate: per partition of `fusion.routed`, the pure `CorrelateStage` (dedup,
event-time buffer, engine); alerts delivered, late events dead-lettered.

Input: routed messages (copies and marks). Output: alerts and audit records (through
`Delivery`), dead letters for events too late for every rule. State: one `CorrelateStage`
per partition, checkpointed by `Checkpoints` before its input is acked.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from engine.correlate import CorrelateOutput
from engine.ingest import Rejection
from streams.settings import Settings
from streams.worker.checkpoint import Checkpoints
from streams.worker.delivery import Delivery
from streams.worker.envelopes import dead_letter, decode_routed
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
        ack: Any,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.checkpoints = checkpoints
        self.delivery = delivery
        self.ack = ack

    async def on_message(self, msg: Any) -> None:
        cp = await self.checkpoints.partition(msg.partition)
        if cp is None:
            return
        if msg.offset <= cp.applied:
            self.ack(msg)
            return
        batch = decode_routed(msg.value)
        stage = cp.stage
        was = (stage.released_before, len(stage.buffer))
        out = stage.take(batch.items, batch.marks, time.time())
        await self.send_output(out)
        changed = bool(batch.items) or was != (stage.released_before, len(stage.buffer))
        self.checkpoints.applied(cp, msg.offset, msg, changed, len(batch.items))
        self.metrics.reordered.labels(str(msg.partition)).set(len(cp.stage.buffer))
        before = cp.stage.released_before
        if before > float("-inf"):
            self.metrics.watermark.labels(
                "correlate", self.settings.topic_routed, str(msg.partition)
            ).set(before)
        await self.checkpoints.maybe_snapshot(msg.partition)

    async def send_output(self, out: CorrelateOutput) -> None:
        m = self.metrics
        for alert, ingested_at in out.alerts:
            await self.delivery.deliver(alert, ingested_at)
        for it in out.duplicates:
            m.duplicates.labels(it.doc.get("event_type", "")).inc()
        for it in out.behind:
            if it.primary:
                m.out_of_order.labels(it.origin.topic).inc()
        if out.late:
            now = time.time()
            for it, reason in out.late:
                topic, partition, offset = it.origin
                agency = str((it.doc.get("source") or {}).get("agency", ""))
                m.late.labels(topic, str(it.doc.get("event_type", "")), agency).inc()
                m.rejected.labels(topic, "late").inc()
                await self.delivery.send(
                    self.settings.topic_deadletter,
                    f"{topic}:{partition}:{offset}".encode(),
                    dead_letter(
                        topic,
                        partition,
                        offset,
                        orjson.dumps(it.doc),
                        Rejection("late", reason),
                        now,
                    ),
                    None,
                )
