"""The worker: a Faust app whose stages each live in their own module; this one only wires them.

Two hops, each co-partitioned by what it needs, so any producer keying is fine:

1. ingest (`stages/ingest.py`), on the input topics: validate, dead-letter refusals, route
   each event under every correlation key its rules use to `fusion.routed`, with the
   event-time watermark of every input partition read.
2. correlate (`stages/correlate.py`), on `fusion.routed`: per partition, events in event-time
   order up to the watermark (`engine/correlate.py`), alerts released per destination to
   `alerts.<cc>` (`delivery.py`), each with its audit record.

The correlate stage's state is checkpointed per partition (`checkpoint.py`, into the state
topic of `snapshots.py`) before its input is acked, so a restarted or rebalanced worker
resumes where it was. Faust's consumer hands each stage whole fetches (`fastpath.py`); Faust
keeps the group, rebalancing, offsets, commits and the producer. Paths are under
`streams/worker/`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable
from typing import Any

import faust
from faust.types import TP

from engine.correlate import CorrelateStage
from engine.watermarks import InputPartition
from streams.clients import ssl_context
from streams.settings import Settings
from streams.worker.auditlog import (
    Archive,
    AuditLogs,
    LogConfigError,
    check_log_topics,
    load_signer,
)
from streams.worker.changelog import ChangelogTopic
from streams.worker.checkpoint import Checkpoints
from streams.worker.delivery import DeadLetters, Delivery
from streams.worker.edges import Record
from streams.worker.fastpath import AppProducer, AssignedPartitions, Batch, BatchingApp
from streams.worker.metrics import Metrics, StateExport, export_lag
from streams.worker.reload import LiveAreas, LivePolicy, LiveRules
from streams.worker.stages.correlate import CorrelateShell
from streams.worker.stages.ingest import IngestShell
from streams.worker.tak import TakOutput

log = logging.getLogger("fusion")


class Worker:
    """The stages of one worker process, wired to one Faust app."""

    def __init__(self, settings: Settings, app: BatchingApp, metrics: Metrics) -> None:
        self.settings = settings
        self.app = app
        self.metrics = metrics
        self.rules = LiveRules(settings, metrics)
        self.policy = LivePolicy(settings, metrics)
        self.areas = LiveAreas(settings, metrics)
        self.input_topic_names = frozenset(settings.input_topic_names)
        self._remake_stages = False
        self.state_export = StateExport(metrics)
        producer = AppProducer(app)
        dead_letters = DeadLetters(settings, producer, metrics)
        self.tak = TakOutput(settings, metrics)
        delivery = Delivery(
            settings,
            producer,
            metrics,
            self.policy.current,
            tak=self.tak,
            rule_files=lambda: (self.rules.ruleset.digests, self.rules.ruleset.sources),
            areas=self.areas.current,
        )
        self.archive = Archive(settings, producer)
        self.ingest = IngestShell(settings, metrics, producer, dead_letters, self.rules.current)
        self.logs = (
            None
            if settings.log_signing_key_file is None
            else AuditLogs(settings, producer, load_signer(settings.log_signing_key_file))
        )
        self._log_topics_checked = time.monotonic()
        self.changelog = ChangelogTopic(settings)
        self.checkpoints = Checkpoints(
            settings,
            metrics,
            self.changelog,
            producer,
            AssignedPartitions(app, settings.topic_routed),
            self.new_stage,
            self.logs,
        )
        self.correlate = CorrelateShell(settings, metrics, self.checkpoints, delivery, dead_letters)

    def expected_sources(self) -> list[InputPartition]:
        """Every input partition: the sources each correlate partition's watermark waits on."""
        consumer = self.app.consumer
        out: list[InputPartition] = []
        for topic in self.settings.input_topic_names:
            n = consumer.topic_partitions(topic) or self.settings.input_partitions
            out.extend(InputPartition(topic, p) for p in range(n))
        return out

    def new_stage(self) -> CorrelateStage:
        """A correlate stage under the rules in force."""
        settings = self.settings
        return CorrelateStage(
            self.rules.ruleset,
            self.expected_sources(),
            dedup_window_s=settings.dedup_window_s,
            dedup_max_ids=settings.dedup_max_ids,
            grace_s=settings.idle_after_s,
        )

    # -- the fetch loop's handler ----------------------------------------------------------

    async def on_fetch(self, batch: Batch) -> None:
        """One fetch: input records through ingest, then routed records through correlate;
        then the metrics the stages held."""
        routed = self.settings.topic_routed
        inputs = [r for tp, recs in batch.items() if tp.topic != routed for r in recs]
        try:
            if inputs:
                await self.guarded("ingest", inputs[0], self._ingest(batch, inputs))
            for tp, recs in batch.items():
                if tp.topic != routed:
                    continue
                for rec in recs:
                    await self.guarded("correlate", rec, self.correlate.on_message(rec))
        finally:
            self.metrics.flush()

    async def _ingest(self, batch: Batch, records: list[Record]) -> None:
        await self.ingest.on_messages(records, self.caught_up())
        consumer = self.app.batch_consumer()
        routed = self.settings.topic_routed
        for tp, recs in batch.items():
            if tp.topic != routed:
                consumer.ack_offsets(tp, [r.offset for r in recs])

    async def guarded(self, stage: str, record: Record, work: Awaitable[None]) -> None:
        """Run a stage's work. If it fails (a bug, or a broker outage outlasting the retries),
        its partial effects cannot be trusted: stop the worker, so that it restarts from the
        last checkpoint and the committed offsets, which never pass unsnapshotted input.
        Skipping the input would lose it."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.critical(
                "%s failed on %s[%d] offset %d; stopping the worker to resume from the last "
                "checkpoint",
                stage,
                record.topic,
                record.partition,
                record.offset,
                exc_info=True,
            )
            self.metrics.internal_errors.labels(stage).inc()
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(3600)

    # -- time ------------------------------------------------------------------------------

    def caught_up(self) -> dict[InputPartition, bool]:
        """Per input partition assigned here: whether the broker holds nothing more for it."""
        consumer = self.app.batch_consumer()
        try:
            assigned = consumer.assignment()
        except Exception:
            return {}
        inputs = self.input_topic_names
        return {
            InputPartition(tp.topic, tp.partition): consumer.caught_up(tp)
            for tp in assigned
            if tp.topic in inputs
        }

    async def watch_inputs(self) -> None:
        """Often (every half idle span): which input partitions are idle, and their marks."""
        hand_over = self.app.batch_consumer().hand_over
        async with hand_over.handling(hand_over.epoch()) as current:
            if current:  # not for partitions a revocation has just taken
                await self.ingest.on_tick(self.caught_up())

    async def tick(self) -> None:
        """Once a second: reloads, due snapshots, metrics. The stages are remade and
        snapshotted between batches, never under a record half taken."""
        if self.rules.maybe_reload() is not None:
            self._remake_stages = True
        self.policy.maybe_reload()
        await self.archive.keep(self.rules.ruleset, self.policy.current())
        await self.check_log_topics()
        self.areas.maybe_reload()
        hand_over = self.app.batch_consumer().hand_over
        async with hand_over.handling(hand_over.epoch()) as current:
            if current:
                if self._remake_stages:
                    self.checkpoints.remake_stages()
                    self._remake_stages = False
                await self.checkpoints.snapshot_due()
        self.state_export.export(self.checkpoints.stages(), self.rules.ruleset.by_id)
        self.metrics.flush()
        self.metrics.ready.set(1 if self.readiness()[0] else 0)
        export_lag(self.metrics, self.app.batch_consumer().lags())

    async def check_log_topics(self) -> None:
        """Now and then: stop the worker if the log's topics could now lose leaves."""
        if self.logs is None:
            return
        now = time.monotonic()
        if now - self._log_topics_checked < self.settings.log_topics_check_s:
            return
        self._log_topics_checked = now
        try:
            await asyncio.to_thread(check_log_topics, self.settings)
        except LogConfigError:
            log.critical("stopping the worker", exc_info=True)
            os.kill(os.getpid(), signal.SIGTERM)
        except Exception:
            log.warning("could not check the log topics' configuration", exc_info=True)

    # -- partitions ------------------------------------------------------------------------

    async def on_assigned(self, assigned: set[TP]) -> None:
        inputs = self.input_topic_names
        self.ingest.assigned(
            [InputPartition(tp.topic, tp.partition) for tp in assigned if tp.topic in inputs]
        )

    async def on_revoked(self, revoked: set[TP]) -> None:
        """Hand partitions over: once the batch in hand is done, checkpoint the correlate
        partitions and forget the input clocks; no stage work runs meanwhile."""
        routed = self.settings.topic_routed
        inputs = self.input_topic_names
        consumer = self.app.batch_consumer()
        async with consumer.hand_over.revoking():
            self.ingest.revoked(
                [InputPartition(tp.topic, tp.partition) for tp in revoked if tp.topic in inputs]
            )
            consumer.forget_positions(revoked)
            await self.checkpoints.revoke({tp.partition for tp in revoked if tp.topic == routed})

    def readiness(self) -> tuple[bool, str]:
        """Ready once every input topic and `fusion.routed` has partitions assigned here."""
        try:
            assigned = self.app.consumer.assignment()
        except Exception:
            return False, "consumer not started"
        topics = {tp.topic for tp in assigned}
        wanted = {*self.settings.input_topic_names, self.settings.topic_routed}
        missing = sorted(wanted - topics)
        if missing:
            return False, f"no partitions assigned for {', '.join(missing)}"
        return True, f"{len(assigned)} partitions assigned"


def broker_credentials(settings: Settings) -> faust.SASLCredentials | None:
    """SCRAM-SHA-512 over TLS (trusting the configured CA) when the broker is secured."""
    if settings.security_protocol != "SASL_SSL":
        return None
    assert settings.sasl_password is not None
    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=settings.sasl_password.get_secret_value(),
        ssl_context=ssl_context(settings),
        mechanism="SCRAM-SHA-512",
    )


def create_app(settings: Settings, metrics: Metrics | None = None) -> tuple[faust.App, Worker]:
    """The Faust app with its subscriptions, timers and health endpoints."""
    (settings.data_dir / settings.app_id).mkdir(parents=True, exist_ok=True)
    app = BatchingApp(
        settings.app_id,
        broker=[f"kafka://{b}" for b in settings.bootstrap_servers.split(",")],
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=settings.internal_partitions,
        topic_replication_factor=1,
        topic_allow_declare=False,
        broker_credentials=broker_credentials(settings),
        web_enabled=settings.web_port > 0,
        web_port=settings.web_port or 6066,
        web_bind="0.0.0.0",  # noqa: S104 - compose reaches the health endpoints from outside
        producer_max_request_size=16 * 1024 * 1024,
        producer_linger=0.002,
        producer_max_batch_size=256 * 1024,
        consumer_max_fetch_size=1024 * 1024,
        broker_commit_interval=1.0,
        broker_max_poll_records=settings.batch_max,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_s / 5),
        stream_wait_empty=False,
        store="memory://",
        datadir=str(settings.data_dir / settings.app_id),
    )
    worker = Worker(settings, app, metrics or Metrics())
    consumer = app.batch_consumer()
    consumer.batch_topics = frozenset([*settings.input_topic_names, settings.topic_routed])
    consumer.batch_handler = worker.on_fetch
    consumer.fetch_min_bytes = settings.fetch_min_bytes
    consumer.fetch_max_wait_ms = settings.fetch_max_wait_ms

    # The agents only hold the subscriptions: the batch path above takes every message.
    raw = {"value_serializer": "raw", "key_serializer": "raw"}
    topics = [app.topic(name, internal=False, **raw) for name in settings.input_topic_names]
    for topic in topics:
        app.agent(topic, name=f"subscribe-{topic.get_topic_name()}")(_holds_subscription)
    app.agent(app.topic(settings.topic_routed, **raw), name="correlate")(_holds_subscription)

    @app.timer(max(0.05, settings.idle_after_s / 2))
    async def watch_inputs() -> None:
        await worker.watch_inputs()

    @app.timer(1.0)
    async def tick() -> None:
        await worker.tick()

    @app.task
    async def tak_senders() -> None:
        await worker.tak.run()

    @app.on_before_shutdown.connect
    async def stop_tak(sender: Any, **kwargs: Any) -> None:
        await worker.tak.stop()

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        await worker.on_assigned(assigned)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        await worker.on_revoked(revoked)

    @app.page("/health/live")
    async def live(web: Any, request: Any) -> Any:
        return web.json({"status": "live"})

    @app.page("/health/ready")
    async def ready(web: Any, request: Any) -> Any:
        ok, why = worker.readiness()
        worker.metrics.ready.set(1 if ok else 0)
        return web.json(
            {"status": "ready" if ok else "not ready", "detail": why}, status=200 if ok else 503
        )

    return app, worker


async def _holds_subscription(stream: Any) -> None:
    async for _ in stream:  # pragma: no cover - the batch path takes every message
        pass
