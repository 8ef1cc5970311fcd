"""`fusion relay`: the pipeline's triage relay, a process of its own run as the pipeline
(`fusion` on the secure broker).

It reads every partner's triage topic, the inbound topics and the alert topics from the
beginning, and then follows them:

- each action on `triage.<cc>` is folded into that country's state (`engine/triage.py`);
  what the sharing policy's `triage:` rules let cross goes to the inbound topic of every
  other partner that received the alert, `triage.<partner>.inbound`, after its audit record
  on `audit.triage`. Nothing is written back to `triage.<cc>`, so nothing loops;
- an alert withdrawn on `alerts.<cc>` closes that country's triage of it as
  `automated_closure`, with the withdrawal's reason as the closure's note.

Why a process and not a stage of the worker: the worker's fetch path, checkpoints and
snapshots are built for the event stream (thousands a second, partitioned, exactly once
through snapshots); triage is a few actions a minute, per alert, whose state is the fold of
compacted-size topics read in a second. A separate process keeps the worker's hot path
unchanged, needs no consumer group (it reads everything back on start, and what it already
released is on the inbound topics, so a restart releases nothing twice), and can be
restarted, upgraded or stopped without touching alert flow.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from pydantic import ValidationError

from engine.policy.model import TriageShareRule
from engine.triage import PIPELINE, TaskForce, TriageBook, dispositions, share
from schemas.alerts import Alert, PolicyRef
from schemas.triage import Actor, Note, SharedTriage, TriageAction, TriageAudit
from streams.clients import aiokafka_config, create_topics
from streams.settings import Settings
from streams.tools.console.feed import subscribe_all

log = logging.getLogger(__name__)
EXPORT_EVERY_S = 2.0


class TriageMetrics:
    """What the relay exports (FUSION_RELAY_METRICS_PORT): each country's dispositions per
    rule, the actions released to partners, and actions the fold refused. Labels are
    countries, rules and close reasons, never an alert id or a person."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.closed = Gauge(
            "fusion_triage_closed",
            "Alerts a country has closed, by rule and close reason (each country's own).",
            ["country", "rule", "reason"],
            registry=r,
        )
        self.open = Gauge(
            "fusion_triage_open",
            "Alerts a country has acted on and not closed, by rule.",
            ["country", "rule"],
            registry=r,
        )
        self.released = Counter(
            "fusion_triage_released",
            "Triage actions released to a partner under the sharing policy.",
            ["country", "destination"],
            registry=r,
        )
        self.conflicts = Gauge(
            "fusion_triage_conflicts",
            "Actions on a country's triage topic the fold refused (lost a race for a revision).",
            ["country"],
            registry=r,
        )

    def export(self, relay: TriageRelay) -> None:
        """Set the gauges from the relay's state."""
        self.closed.clear()
        self.open.clear()
        states = [s for book in relay.books.values() for s in book.states.values()]
        for d in dispositions(states, relay.rule_of):
            for reason, n in d.closed.items():
                self.closed.labels(d.country, d.rule_id, reason).set(n)
            self.open.labels(d.country, d.rule_id).set(d.open)
        for cc, book in relay.books.items():
            self.conflicts.labels(cc).set(book.conflicts)


@dataclass(frozen=True, slots=True)
class Release:
    """One action released to one partner: the record for its inbound topic, and the audit."""

    destination: str
    shared: SharedTriage
    audit: TriageAudit


Key = tuple[str, str, str, int]  # destination, country, alert id, revision


@dataclass
class TriageRelay:
    """The relay's decisions, without I/O: fed records, returns what to write. Until `go_live`
    it only learns (what was already released, every country's state, withdrawals)."""

    partners: Sequence[str]
    forces: Mapping[str, TaskForce]
    rules: Sequence[TriageShareRule]
    policy: PolicyRef
    inbound_topic: Callable[[str], str]
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    books: dict[str, TriageBook] = field(default_factory=dict)
    released: set[Key] = field(default_factory=set)
    recipients: dict[str, frozenset[str]] = field(default_factory=dict)
    rule_of: dict[str, str] = field(default_factory=dict)
    withdrawn: dict[tuple[str, str], Alert] = field(default_factory=dict)
    live: bool = False
    _candidates: list[tuple[TriageAction, SharedTriage]] = field(default_factory=list)
    _closing: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        for cc in self.partners:
            self.books.setdefault(cc, TriageBook(cc, self.forces))

    def seen_release(self, destination: str, shared: SharedTriage) -> None:
        self.released.add((destination, shared.country, shared.alert_id, shared.revision))

    def take_alert(self, country: str, alert: Alert) -> tuple[list[Release], list[TriageAction]]:
        self.recipients[alert.alert_id] = frozenset(alert.recipients) | {country}
        self.rule_of[alert.alert_id] = alert.rule_id
        if alert.change == "withdrawn":
            self.withdrawn[(country, alert.alert_id)] = alert
        if not self.live:
            return [], []
        releases = self._releases()
        closure = self._closure(country, alert.alert_id)
        return releases, closure

    def take_action(self, action: TriageAction) -> tuple[list[Release], list[TriageAction]]:
        book = self.books.get(action.country)
        if book is None:
            log.warning("relay: an action of %s, not a partner", action.country)
            return [], []
        state = book.apply(action)
        if action.actor.role == "pipeline":
            self._closing.discard((action.country, action.alert_id))
        if state is not None:
            shared = share(action, state, self.rules, self.forces, self.policy)
            if shared is not None:
                self._candidates.append((action, shared))
        if not self.live:
            return [], []
        return self._releases(), self._closure(action.country, action.alert_id)

    def go_live(self) -> tuple[list[Release], list[TriageAction]]:
        """Everything read back: what a previous run left unreleased, and the closures of
        withdrawals not yet made."""
        self.live = True
        closures = [c for cc, alert_id in list(self.withdrawn) for c in self._closure(cc, alert_id)]
        return self._releases(), closures

    def _releases(self) -> list[Release]:
        out: list[Release] = []
        held: list[tuple[TriageAction, SharedTriage]] = []
        for action, shared in self._candidates:
            to = self.recipients.get(action.alert_id)
            if to is None:
                held.append((action, shared))  # its alert not read yet
                continue
            for destination in sorted(to - {action.country}):
                if destination not in self.partners:
                    continue
                key = (destination, shared.country, shared.alert_id, shared.revision)
                if key in self.released:
                    continue
                self.released.add(key)
                topic = self.inbound_topic(destination)
                audit = TriageAudit(
                    alert_id=shared.alert_id,
                    country=shared.country,
                    destination=destination,
                    action_id=action.action_id,
                    revision=shared.revision,
                    topic=topic,
                    released_at=self.clock(),
                    fields=shared.fields,
                    policy=shared.policy,
                )
                out.append(Release(destination, shared, audit))
        self._candidates = held
        return out

    def _closure(self, country: str, alert_id: str) -> list[TriageAction]:
        alert = self.withdrawn.get((country, alert_id))
        if alert is None or (country, alert_id) in self._closing:
            return []
        state = self.books[country].get(alert_id)
        if state.status == "closed" or alert.version in state.closed_versions:
            return []
        revision = alert.revision
        why = revision.reason if revision else "withdrawn by the pipeline"
        if revision and revision.superseded_by:
            why += f"; superseded by alert {revision.superseded_by}"
        if revision and revision.records:
            why += f" (records: {', '.join(revision.records)})"
        self._closing.add((country, alert_id))
        return [
            TriageAction(
                action_id=uuid.uuid4().hex,
                alert_id=alert_id,
                country=country,
                revision=state.revision,
                action="close",
                actor=Actor(user=PIPELINE, country=country, role="pipeline"),
                at=self.clock(),
                reason="automated_closure",
                note=Note(text=f"alert withdrawn (version {alert.version}): {why}"[:4000]),
                alert_version=alert.version,
            )
        ]


class RelayProcess:
    """The relay's Kafka side: one consumer over every topic it reads, one producer."""

    def __init__(
        self, settings: Settings, core: TriageRelay, metrics: TriageMetrics | None = None
    ) -> None:
        self.settings = settings
        self.core = core
        self.metrics = metrics or TriageMetrics()
        self.kinds: dict[str, tuple[str, str]] = {}
        for cc in settings.partners:
            self.kinds[settings.triage_topic(cc)] = ("action", cc)
            self.kinds[settings.inbound_topic(cc)] = ("inbound", cc)
            self.kinds[settings.alert_topic(cc)] = ("alert", cc)
        self.written = 0

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            client_id="fusion-relay",
            **aiokafka_config(self.settings),
        )
        producer = AIOKafkaProducer(
            acks="all", client_id="fusion-relay", **aiokafka_config(self.settings)
        )
        await consumer.start()
        await producer.start()
        try:
            tps = sorted(await subscribe_all(consumer, list(self.kinds)))
            if not tps:
                raise RuntimeError(
                    f"cannot read every topic of {sorted(self.kinds)}: do they exist, and may "
                    f"{self.settings.sasl_username or 'this client'} read them?"
                )
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            exported = 0.0
            while not stop.is_set():
                now = asyncio.get_running_loop().time()
                if self.core.live and now - exported >= EXPORT_EVERY_S:
                    self.metrics.export(self.core)
                    exported = now
                batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                for tp, records in sorted(batches.items(), key=lambda item: item[0].topic):
                    for record in records:
                        await self._take(producer, tp.topic, record.value)
                if not self.core.live and await self._caught_up(consumer, ends):
                    releases, closures = self.core.go_live()
                    await self._write(producer, releases, closures)
                    log.info("relay: read back; live")
                    print("relay: live", flush=True)
        finally:
            await consumer.stop()
            await producer.stop()

    @staticmethod
    async def _caught_up(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await consumer.position(tp) < end:
                return False
        return True

    async def _take(self, producer: AIOKafkaProducer, topic: str, value: bytes | None) -> None:
        kind, cc = self.kinds[topic]
        try:
            if kind == "inbound":
                self.core.seen_release(cc, SharedTriage.model_validate_json(value or b""))
                return
            if kind == "alert":
                out = self.core.take_alert(cc, Alert.model_validate_json(value or b""))
            else:
                out = self.core.take_action(TriageAction.model_validate_json(value or b""))
        except ValidationError as e:
            log.warning("relay: a record on %s is not what it should hold: %s", topic, e)
            return
        await self._write(producer, *out)

    async def _write(
        self, producer: AIOKafkaProducer, releases: list[Release], closures: list[TriageAction]
    ) -> None:
        for release in releases:
            key = release.shared.alert_id.encode()
            await producer.send_and_wait(
                self.settings.topic_triage_audit, release.audit.model_dump_json().encode(), key=key
            )
            await producer.send_and_wait(
                release.audit.topic, release.shared.model_dump_json().encode(), key=key
            )
            self.written += 1
            self.metrics.released.labels(release.shared.country, release.destination).inc()
            log.info(
                "relay: %s's %s of %s (revision %d) to %s",
                release.shared.country,
                release.shared.action,
                release.shared.alert_id,
                release.shared.revision,
                release.destination,
            )
        for closure in closures:
            await producer.send_and_wait(
                self.settings.triage_topic(closure.country),
                closure.model_dump_json().encode(),
                key=closure.alert_id.encode(),
            )
            log.info(
                "relay: closed %s's triage of %s: withdrawn", closure.country, closure.alert_id
            )


def build(settings: Settings) -> TriageRelay:
    from streams.keys import configured_policy
    from streams.tools.accounts import configured_task_forces

    policy = configured_policy(settings, throwaway_keys=True)
    return TriageRelay(
        partners=settings.partners,
        forces=configured_task_forces(settings),
        rules=policy.doc.triage,
        policy=policy.ref,
        inbound_topic=settings.inbound_topic,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`fusion relay`: run until interrupted."""
    ap = argparse.ArgumentParser(prog="fusion relay", description=__doc__.split("\n\n")[0])
    ap.parse_args(argv)
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    create_topics(settings)
    core = build(settings)
    metrics = TriageMetrics()
    if settings.relay_metrics_port:
        start_http_server(settings.relay_metrics_port, registry=metrics.registry)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await RelayProcess(settings, core, metrics).run(stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
