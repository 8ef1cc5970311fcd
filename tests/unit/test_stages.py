"""The worker's stages without a broker: ingest, correlate with its checkpoints, delivery.
Their Kafka edges are in-memory stand-ins (tests/unit/edges.py) that record what would be
sent, written or acked."""

from __future__ import annotations

import asyncio
import json

import orjson
from pydantic import SecretStr

from engine.correlate import CorrelateStage
from engine.routing import Router
from engine.rulefiles import parse_rules_text
from engine.watermarks import InputPartition
from streams.keys import generate
from streams.settings import Settings
from streams.worker.checkpoint import Checkpoints
from streams.worker.delivery import DeadLetters, Delivery
from streams.worker.envelopes import decode_routed
from streams.worker.metrics import Metrics
from streams.worker.reload import LivePolicy
from streams.worker.stages.correlate import CorrelateShell
from streams.worker.stages.ingest import IngestShell
from tests.integration.test_pipeline import event
from tests.unit.edges import Assigned, Broker, ChangelogStore, Msg

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


def unit_settings() -> Settings:
    return Settings(
        internal_partitions=2,
        pseudonym_keys=SecretStr(json.dumps(generate(key_id="kunit"))),
        snapshot_interval_s=0.001,
    )


def ingest_shell(settings: Settings, broker: Broker) -> IngestShell:
    metrics = Metrics()
    dead_letters = DeadLetters(settings, broker, metrics)
    return IngestShell(settings, metrics, broker, dead_letters, lambda: (RULES, Router(RULES)))


def test_ingest_dead_letters_refusals_and_sends_every_partition_its_copies_and_marks():
    settings = unit_settings()
    broker = Broker()
    stage = ingest_shell(settings, broker)
    good = [event("detection", at=-60 + i, plate="ABC-123") for i in range(3)]
    msgs = [Msg(settings.topic_detections, 0, i, orjson.dumps(e)) for i, e in enumerate(good)]
    msgs.append(Msg(settings.topic_detections, 1, 0, b"{not json"))
    asyncio.run(stage.on_messages(msgs, {InputPartition(settings.topic_detections, 0): False}))
    ((key, dl, _),) = broker.sent[settings.topic_deadletter]
    assert key == f"{settings.topic_detections}:1:0".encode()
    assert orjson.loads(dl)["error"]["kind"] == "json"
    batches = [decode_routed(v) for _, v, _ in broker.sent[settings.topic_routed]]
    assert len(batches) == settings.internal_partitions  # every partition hears the marks
    assert sum(len(b.items) for b in batches) == 3
    newest = max(it.ts for b in batches for it in b.items)
    for b in batches:
        assert b.marks[InputPartition(settings.topic_detections, 0)].watermark == newest
        assert not b.marks[InputPartition(settings.topic_detections, 0)].idle


def test_ingest_marks_a_caught_up_quiet_partition_idle():
    settings = unit_settings()
    broker = Broker()
    stage = ingest_shell(settings, broker)
    source = InputPartition(settings.topic_suspects, 3)
    stage.assigned([source])
    stage.clocks.clocks[source].last_new -= 10  # quiet for ten seconds
    asyncio.run(stage.on_tick({source: True}))
    batch = decode_routed(broker.sent[settings.topic_routed][-1][1])
    assert batch.marks[source].idle


def correlate(
    settings: Settings, broker: Broker, store: ChangelogStore, assigned: Assigned
) -> CorrelateShell:
    metrics = Metrics()
    sources = [InputPartition(t, p) for t in settings.input_topics.values() for p in range(4)]
    checkpoints = Checkpoints(
        settings, metrics, store, broker, assigned, lambda: CorrelateStage(RULES, sources)
    )
    policy = LivePolicy(settings, metrics)
    delivery = Delivery(settings, broker, metrics, policy.current)
    dead_letters = DeadLetters(settings, broker, metrics)
    return CorrelateShell(settings, metrics, checkpoints, delivery, dead_letters)


def test_correlate_raises_alerts_once_every_input_is_heard_and_acks_after_a_snapshot():
    settings = unit_settings()
    up = Broker()
    stage = ingest_shell(settings, up)
    reads = [event("detection", at=-300 + 60 * i, plate="KX-1") for i in range(3)]
    msgs = [Msg(settings.topic_detections, 0, i, orjson.dumps(e)) for i, e in enumerate(reads)]
    everyone = {
        InputPartition(t, p): True for t in settings.input_topics.values() for p in range(4)
    }
    everyone[InputPartition(settings.topic_detections, 0)] = False
    for source in everyone:
        stage.assigned([source])
        stage.clocks.clocks[source].last_new -= 10
    asyncio.run(stage.on_messages(msgs, everyone))
    # the newest read waits until its partition is caught up and quiet (idle)
    stage.clocks.clocks[InputPartition(settings.topic_detections, 0)].last_new -= 10
    asyncio.run(stage.on_tick({**everyone, InputPartition(settings.topic_detections, 0): True}))

    down = Broker()
    store = ChangelogStore(down)
    assigned = Assigned()
    shell = correlate(settings, down, store, assigned)

    async def run() -> None:
        for m in up.routed(settings):
            await shell.on_message(m)
        for p in list(shell.checkpoints.partitions):
            await shell.checkpoints.maybe_snapshot(p, force=True)

    asyncio.run(run())
    alerts = [orjson.loads(v) for _, v, _ in down.sent[settings.alert_topic("US")]]
    assert [a["rule_id"] for a in alerts] == ["plate-reads"]
    assert sorted(e["event_id"] for e in alerts[0]["evidence"]) == sorted(
        e["event_id"] for e in reads
    )
    assert len(down.sent[settings.topic_audit]) == len(down.sent[settings.alert_topic("US")]) + len(
        down.sent.get(settings.alert_topic("MX"), [])
    )
    assert len(assigned.acked) == len(up.routed(settings))  # acked, once snapshotted

    # A restart from the snapshot skips what it covers, and raises nothing twice.
    (p, entries), *_ = store.entries.items()
    assert orjson.loads(entries["h"])["meta"]["applied"] >= 0
    again = Broker()
    assigned_again = Assigned()
    shell2 = correlate(settings, again, ChangelogStore(again, {p: entries}), assigned_again)

    async def rerun() -> None:
        for m in up.routed(settings):
            if m.partition == p:
                await shell2.on_message(m)

    asyncio.run(rerun())
    assert settings.alert_topic("US") not in again.sent
    assert len(assigned_again.acked) == len([m for m in up.routed(settings) if m.partition == p])
