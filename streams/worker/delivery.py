"""What the stages send out besides their own topics: alerts released per destination with
their audit records (`Delivery`), and dead letters (`DeadLetters`); with their metrics, held
until the batch's `Metrics.flush`."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import orjson

from engine.areas import Areas, default_areas
from engine.auditlog import SALT_BYTES, PartitionLog
from engine.hits import RawAlert
from engine.ingest import Rejection
from engine.policy import Policy
from engine.release import recipients, release_json
from engine.routing import Origin
from streams.settings import Settings
from streams.worker.edges import Producer
from streams.worker.envelopes import dead_letter
from streams.worker.metrics import Metrics
from streams.worker.stix import stix_output
from streams.worker.tak import TakOutput


class Delivery:
    """Releases alerts to each partner's topic under the sharing policy, audited."""

    def __init__(
        self,
        settings: Settings,
        producer: Producer,
        metrics: Metrics,
        policy: Callable[[], Policy],
        *,
        tak: TakOutput | None = None,
        rule_files: Callable[[], tuple[Mapping[str, str], Mapping[str, str]]] | None = None,
        areas: Callable[[], Areas] = default_areas,
    ) -> None:
        self.settings = settings
        self.rule_files = rule_files
        self.areas = areas
        self.producer = producer
        self.metrics = metrics
        self.policy = policy
        self.partners = settings.partner_set
        self.alert_topics = {p: settings.alert_topic(p) for p in settings.partners}
        self.stix = stix_output(settings)
        self.tak = tak if tak is not None and tak.senders else None

    async def deliver(
        self, alert: RawAlert, ingested_at: float | None, log: PartitionLog | None = None
    ) -> None:
        """Release the alert to each recipient, each release audited (and, with `log`, the
        audit record salted and appended to the partition's transparency log)."""
        now = time.time()
        # The engine stamps an alert with the event time that completed it (so replays are
        # reproducible); what leaves says when the pipeline raised it (docs/contract.md).
        alert = replace(alert, raised_at=now)
        policy = self.policy()
        areas = self.areas()
        who = recipients(alert, self.partners, policy)
        held = self.metrics.batch
        if alert.change == "raised":
            held.alerts_raised.add((alert.rule_id, alert.severity))
        else:
            held.alert_versions.add((alert.rule_id, alert.change))
        key = alert.alert_id.encode()
        rule_file = None
        if self.rule_files is not None:
            digests, sources = self.rule_files()
            if alert.rule_id in digests:
                rule_file = {
                    "name": Path(sources[alert.rule_id]).name,
                    "sha256": digests[alert.rule_id],
                }
        for dest in who:
            topic = self.alert_topics[dest]
            out = release_json(alert, dest, who, policy, now=now, topic=topic, areas=areas)
            if out is None:
                continue
            body, audit = out
            released = orjson.dumps(body)
            audit["alert_sha256"] = hashlib.sha256(released).hexdigest()
            if rule_file is not None:
                audit["rule_file"] = rule_file
            if log is not None:
                audit = log.append(audit, secrets.token_bytes(SALT_BYTES))
            await self.producer.send(self.settings.topic_audit, key, orjson.dumps(audit), None)
            await self.producer.send(topic, key, released, None)
            held.audit_records.add((dest,))
            held.alerts_delivered.add((dest, alert.rule_id))
            if self.stix is not None and (bundle := self.stix.message(dest, body)) is not None:
                await self.producer.send(bundle[0], key, bundle[1], None)
            if self.tak is not None:
                self.tak.offer(dest, body)
        if alert.change != "raised":
            return  # latency is the first version's: an update waits on its span by design
        done = time.time()
        rule = (alert.rule_id,)
        held.event_to_alert.observe(rule, max(0.0, done - alert.last_seen))
        if ingested_at is not None:
            held.ingest_to_alert.observe(rule, max(0.0, done - ingested_at))


class DeadLetters:
    """Refused input to the dead-letter topic, keyed by where it was read, counted by topic
    and reason."""

    def __init__(self, settings: Settings, producer: Producer, metrics: Metrics) -> None:
        self.topic = settings.topic_deadletter
        self.producer = producer
        self.metrics = metrics

    async def send(self, origin: Origin, raw: bytes | None, why: Rejection, now: float) -> None:
        """The dead letter of the input read at `origin`, holding its payload `raw`."""
        topic, partition, offset = origin
        self.metrics.batch.rejected.add((topic, why.kind))
        await self.producer.send(
            self.topic,
            f"{topic}:{partition}:{offset}".encode(),
            dead_letter(topic, partition, offset, raw, why, now),
            None,
        )
