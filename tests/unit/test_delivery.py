"""Delivery (streams/worker/delivery.py) alone: an alert released to each recipient's topic with
its audit record first, STIX and TAK beside it when configured, and dead letters keyed by where
their input was read. The producer is an in-memory stand-in that records what was sent."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from datetime import datetime

import orjson
from pydantic import SecretStr

from engine.auditlog import PartitionLog, record_leaf_hash
from engine.hits import RawAlert
from engine.ingest import Rejection
from engine.routing import Origin
from streams.keys import configured_policy, generate
from streams.settings import Settings
from streams.worker.delivery import DeadLetters, Delivery
from streams.worker.metrics import Metrics
from streams.worker.tak import TakOutput
from tests.unit.edges import Broker
from tests.unit.test_release import IN_MX, IN_US, alert, fact

KEYS = SecretStr(json.dumps(generate(key_id="kunit")))


def settings(**overrides: object) -> Settings:
    return Settings(pseudonym_keys=KEYS, **overrides)  # type: ignore[arg-type]


def deliver(
    settings: Settings, raw: RawAlert, tak: TakOutput | None = None
) -> tuple[Broker, Metrics]:
    broker, metrics = Broker(), Metrics()
    policy = configured_policy(settings)
    delivery = Delivery(settings, broker, metrics, lambda: policy, tak=tak)
    asyncio.run(delivery.deliver(raw, ingested_at=None))
    metrics.flush()  # as the worker does at the end of each fetch
    return broker, metrics


def test_each_recipient_gets_the_alert_as_released_to_it_after_its_audit_record() -> None:
    config = settings()
    raw = alert(fact("s1", "MX", type="suspect", person_ref="P-1"), fact("d1", "US"), at=IN_US)
    before = time.time()
    broker, metrics = deliver(config, raw)
    # per recipient: the audit record, then the alert; both keyed by the alert's id
    assert [topic for topic in broker.sent] == [config.topic_audit, "alerts.mx", "alerts.us"]
    for topic in ("alerts.mx", "alerts.us"):
        ((key, value, partition),) = broker.sent[topic]
        body = orjson.loads(value)
        assert (key, partition) == (b"a1", None)
        assert body["recipient"] == topic[-2:].upper() and body["recipients"] == ["MX", "US"]
        # raised_at says when the pipeline released it, not the event time that completed it
        raised = datetime.fromisoformat(body["raised_at"]).timestamp()
        assert before <= raised <= time.time()
    audits = [orjson.loads(v) for v in broker.values(config.topic_audit)]
    assert [a["destination"] for a in audits] == ["MX", "US"]
    assert [a["topic"] for a in audits] == ["alerts.mx", "alerts.us"]
    mx = orjson.loads(broker.values("alerts.mx")[0])
    us = orjson.loads(broker.values("alerts.us")[0])
    assert mx["evidence"][0]["fields"]["person_ref"] == "P-1"  # its own
    assert us["evidence"][0]["fields"]["person_ref"] != "P-1"  # another country's: not as is
    sample = metrics.registry.get_sample_value
    assert sample("fusion_alerts_raised_total", {"rule": "r1", "severity": "high"}) == 1
    assert sample("fusion_alerts_delivered_total", {"destination": "US", "rule": "r1"}) == 1
    assert sample("fusion_audit_records_total", {"destination": "MX"}) == 1


def test_stix_bundles_and_tak_go_beside_the_alert_when_configured() -> None:
    config = settings(stix_topics=True, tak_servers={"MX": "tcp://127.0.0.1:9"})
    raw = alert(fact("d1", "MX"), at=IN_MX)
    tak = TakOutput(config, Metrics())
    broker, _ = deliver(config, raw, tak)
    ((_, bundle, _),) = broker.sent["stix.mx"]
    assert orjson.loads(bundle)["type"] == "bundle"
    (held,) = tak.senders["MX"].buffer
    assert held == orjson.loads(broker.values("alerts.mx")[0])


def test_without_stix_and_tak_only_the_alert_and_its_audit_leave() -> None:
    config = settings()
    broker, _ = deliver(config, alert(fact("d1", "MX"), at=IN_MX))
    assert set(broker.sent) == {config.topic_audit, "alerts.mx"}


def test_a_dead_letter_is_keyed_by_where_its_input_was_read_and_counted() -> None:
    config, broker, metrics = settings(), Broker(), Metrics()
    dead_letters = DeadLetters(config, broker, metrics)
    why = Rejection("late", "too late for every rule")
    asyncio.run(dead_letters.send(Origin("events.weapons", 3, 17), b'{"a": 1}', why, 0.0))
    labels = {"topic": "events.weapons", "reason": "late"}
    assert metrics.registry.get_sample_value("fusion_events_rejected_total", labels) is None
    metrics.flush()
    ((key, value, partition),) = broker.sent[config.topic_deadletter]
    assert (key, partition) == (b"events.weapons:3:17", None)
    letter = orjson.loads(value)
    assert (letter["topic"], letter["partition"], letter["offset"]) == ("events.weapons", 3, 17)
    assert letter["error"] == {"kind": "late", "message": "too late for every rule"}
    assert letter["payload"] == '{"a": 1}'
    assert metrics.registry.get_sample_value("fusion_events_rejected_total", labels) == 1


def test_with_the_log_each_audit_record_is_salted_placed_and_names_what_it_released() -> None:
    config = settings()
    raw = alert(fact("s1", "MX", type="suspect", person_ref="P-1"), fact("d1", "US"), at=IN_US)
    broker, metrics = Broker(), Metrics()
    policy = configured_policy(config)
    log = PartitionLog("border-fusion/audit/0")
    digests = {"r1": "ab" * 32}
    delivery = Delivery(
        config,
        broker,
        metrics,
        lambda: policy,
        rule_files=lambda: (digests, {"r1": "rules/r1.yaml"}),
    )
    asyncio.run(delivery.deliver(raw, ingested_at=None, log=log))
    audits = [orjson.loads(v) for v in broker.values(config.topic_audit)]
    assert [a["log"] for a in audits] == [
        {"log": "border-fusion/audit/0", "index": 0},
        {"log": "border-fusion/audit/0", "index": 1},
    ]
    assert len({a["salt"] for a in audits}) == 2
    for a in audits:
        released = broker.values(a["topic"])[0]
        assert a["alert_sha256"] == hashlib.sha256(released).hexdigest()
        assert a["rule_file"] == {"name": "r1.yaml", "sha256": "ab" * 32}
    # the leaves are the records exactly as written, canonical
    entries, _ = log.cut()
    assert [e["leaf_hash"] for e in entries] == [
        base64.b64encode(record_leaf_hash(a)).decode() for a in audits
    ]
