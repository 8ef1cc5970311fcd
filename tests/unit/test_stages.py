"""The worker's stages without a broker: ingest, correlate with its checkpoints, delivery.
Their Kafka edges are plain functions here that record what would be sent or acked."""

from __future__ import annotations

import asyncio
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import SecretStr

from engine.correlate import CorrelateStage
from engine.routing import Router
from engine.rulefiles import parse_rules_text
from streams.keys import generate
from streams.settings import Settings
from streams.worker.checkpoint import Checkpoints
from streams.worker.delivery import Delivery
from streams.worker.envelopes import decode_routed
from streams.worker.metrics import Metrics
from streams.worker.reload import SharingPolicy
from streams.worker.stages.correlate import CorrelateShell
from streams.worker.stages.ingest import IngestStage
from tests.integration.test_pipeline import event

RULES = parse_rules_text(
    """
id: plate-reads
type: event_count
title: Three reads of one plate within ten minutes
severity: low
select: {type: detection, where: {plate: {exists: true}}}
key: plate
threshold: 3
window: 10m
"""
)


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    value: bytes
    acked: bool = False


@dataclass
class Broker:
    """What the stages sent, by topic; and what they acked."""

    sent: dict[str, list[tuple[bytes | None, bytes, int | None]]] = field(default_factory=dict)
    acked: list[Any] = field(default_factory=list)

    async def send(self, topic: str, key: bytes | None, value: bytes, p: int | None) -> None:
        self.sent.setdefault(topic, []).append((key, value, p))

    async def flush(self) -> None:
        return None

    def routed(self, settings: Settings) -> list[Msg]:
        out = []
        for offset, (_, value, p) in enumerate(self.sent.get(settings.topic_routed, [])):
            assert p is not None
            out.append(Msg(settings.topic_routed, p, offset, value))
        return out


def settings() -> Settings:
    return Settings(
        internal_partitions=2,
        pseudonym_keys=SecretStr(json.dumps(generate(key_id="kunit"))),
        snapshot_interval_s=0.001,
    )


def ingest_stage(s: Settings, broker: Broker) -> IngestStage:
    return IngestStage(s, Metrics(), broker.send, lambda: (RULES, Router(RULES)))


def test_ingest_dead_letters_refusals_and_sends_every_partition_its_copies_and_marks():
    s = settings()
    broker = Broker()
    stage = ingest_stage(s, broker)
    good = [event("detection", at=-60 + i, plate="ABC-123") for i in range(3)]
    msgs = [Msg(s.topic_detections, 0, i, orjson.dumps(e)) for i, e in enumerate(good)]
    msgs.append(Msg(s.topic_detections, 1, 0, b"{not json"))
    asyncio.run(stage.on_messages(msgs, {f"{s.topic_detections}:0": False}))
    (key, dl, _), = broker.sent[s.topic_deadletter]
    assert key == f"{s.topic_detections}:1:0".encode()
    assert orjson.loads(dl)["error"]["kind"] == "json"
    batches = [decode_routed(v) for _, v, _ in broker.sent[s.topic_routed]]
    assert len(batches) == s.internal_partitions  # every partition hears the marks
    assert sum(len(b.items) for b in batches) == 3
    newest = max(it.ts for b in batches for it in b.items)
    for b in batches:
        assert b.marks[f"{s.topic_detections}:0"].watermark == newest
        assert not b.marks[f"{s.topic_detections}:0"].idle


def test_ingest_marks_a_caught_up_quiet_partition_idle():
    s = settings()
    broker = Broker()
    stage = ingest_stage(s, broker)
    source = f"{s.topic_suspects}:3"
    stage.assigned([source])
    stage.clocks.clocks[source].last_new -= 10  # quiet for ten seconds
    asyncio.run(stage.on_tick({source: True}))
    batch = decode_routed(broker.sent[s.topic_routed][-1][1])
    assert batch.marks[source].idle


def correlate(s: Settings, broker: Broker, snapshot: bytes | None = None) -> CorrelateShell:
    metrics = Metrics()
    sources = [f"{t}:{p}" for t in s.input_topics.values() for p in range(4)]

    async def read(p: int) -> bytes | None:
        return snapshot

    checkpoints = Checkpoints(
        s,
        metrics,
        new_stage=lambda: CorrelateStage(RULES, sources),
        owns=lambda p: True,
        read=read,
        send=lambda blob, p: broker.send(s.topic_state_engine, None, blob, p),
        flush=broker.flush,
        ack=broker.acked.append,
    )
    policy = SharingPolicy(s, metrics)
    delivery = Delivery(s, broker.send, metrics, policy.current)
    return CorrelateShell(s, metrics, checkpoints, delivery, broker.acked.append)


def test_correlate_raises_alerts_once_every_input_is_heard_and_acks_after_a_snapshot():
    s = settings()
    up = Broker()
    stage = ingest_stage(s, up)
    reads = [event("detection", at=-300 + 60 * i, plate="KX-1") for i in range(3)]
    msgs = [Msg(s.topic_detections, 0, i, orjson.dumps(e)) for i, e in enumerate(reads)]
    everyone = {f"{t}:{p}": True for t in s.input_topics.values() for p in range(4)}
    everyone[f"{s.topic_detections}:0"] = False
    for source in everyone:
        stage.assigned([source])
        stage.clocks.clocks[source].last_new -= 10
    asyncio.run(stage.on_messages(msgs, everyone))
    # the newest read waits until its partition is caught up and quiet (idle)
    stage.clocks.clocks[f"{s.topic_detections}:0"].last_new -= 10
    asyncio.run(stage.on_tick({**everyone, f"{s.topic_detections}:0": True}))

    down = Broker()
    shell = correlate(s, down)

    async def run() -> None:
        for m in up.routed(s):
            await shell.on_message(m)
        for p in list(shell.checkpoints.partitions):
            await shell.checkpoints.maybe_snapshot(p, force=True)

    asyncio.run(run())
    alerts = [orjson.loads(v) for _, v, _ in down.sent[s.alert_topic("US")]]
    assert [a["rule_id"] for a in alerts] == ["plate-reads"]
    assert sorted(e["event_id"] for e in alerts[0]["evidence"]) == sorted(
        e["event_id"] for e in reads
    )
    assert len(down.sent[s.topic_audit]) == len(down.sent[s.alert_topic("US")]) + len(
        down.sent.get(s.alert_topic("MX"), [])
    )
    assert len(down.acked) == len(up.routed(s))  # acked, once snapshotted

    # A restart from the snapshot skips what it covers, and raises nothing twice.
    (_, blob, p), = down.sent[s.topic_state_engine][-1:]
    assert orjson.loads(zlib.decompress(blob))["meta"]["applied"] >= 0
    again = Broker()
    shell2 = correlate(s, again, snapshot=blob)

    async def rerun() -> None:
        for m in up.routed(s):
            if m.partition == p:
                await shell2.on_message(m)

    asyncio.run(rerun())
    assert s.alert_topic("US") not in again.sent
    assert len(again.acked) == len([m for m in up.routed(s) if m.partition == p])
