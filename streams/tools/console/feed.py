"""The console's one Kafka reader: `alerts.<cc>` read back over a span, then followed live.

No consumer group and no commits: every console reads for itself, with the connection options
of `streams.clients` (on the secure broker, the country's operations user from the
environment, which may read only its own alert topic).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from schemas.alerts import Alert
from streams.clients import aiokafka_config
from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class FeedStatus:
    """Where the reader is, for /healthz and the page."""

    state: str = "starting"  # starting, waiting for topic, reading back, live, failed
    read: int = 0
    refused: int = 0
    error: str | None = None

    @property
    def live(self) -> bool:
        return self.state == "live"


async def subscribe_all(
    consumer: AIOKafkaConsumer, topics: list[str], wait_s: float = 20.0
) -> set[TopicPartition]:
    """Every partition of the topics, assigned to a consumer without a group (subscribed:
    aiokafka then assigns them all once their metadata is known); an empty set if some topic
    is not known or not readable within `wait_s`."""
    consumer.subscribe(topics)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        assigned = consumer.assignment()
        if assigned and {tp.topic for tp in assigned} == set(topics):
            return set(assigned)
        await asyncio.sleep(0.1)
    return set()


class AlertFeed:
    """Reads one alert topic into `sink` (called with each valid alert and its JSON)."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        since_s: float | None,
        sink: Callable[[Alert, dict[str, Any]], None],
        *,
        client_id: str = "fusion-console",
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.topics = [topic]
        self.since_s = since_s
        self.sink = sink
        self.client_id = client_id
        self.status = FeedStatus()

    async def run(self) -> None:
        """Read until cancelled; a failure is logged and kept in `status`, then retried."""
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.status.state, self.status.error = "failed", f"{type(e).__name__}: {e}"
                log.exception("console: reading %s failed; retrying in 5 s", self.topic)
                await asyncio.sleep(5)

    async def _run_once(self) -> None:
        consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,  # an idle fetch returns soon: a new alert shows within it
            client_id=self.client_id,
            **aiokafka_config(self.settings),
        )
        try:  # stopped even if cancelled while starting: no connection is left open
            await consumer.start()
            consumer.subscribe(self.topics)
            assigned = await self._assignment(consumer)
            ends = await self._seek(consumer, assigned)
            self.status.state, self.status.error = "reading back", None
            while True:
                batches = await consumer.getmany(timeout_ms=250, max_records=2000)
                for records in batches.values():
                    for record in records:
                        self._take_record(record.topic, record.value)
                if not self.status.live and await self._caught_up(consumer, ends):
                    self.status.state = "live"
                    log.info("console: %s read back (%d alerts); live", self.topic,
                             self.status.read)  # fmt: skip
        finally:
            await consumer.stop()

    async def _assignment(self, consumer: AIOKafkaConsumer) -> set[TopicPartition]:
        """The topic's partitions, once its metadata is known (it may not exist yet, or this
        user may not read it: both look the same from here, and both are waited out)."""
        ticks = 0
        while True:
            assigned = consumer.assignment()
            if assigned and {tp.topic for tp in assigned} == set(self.topics):
                break
            ticks += 1
            missing = sorted(set(self.topics) - await consumer.topics()) if ticks % 20 == 0 else []
            if missing:
                user = self.settings.sasl_username
                who = f"user {user}" if user else "this client"
                error = f"topic {', '.join(missing)} does not exist or {who} may not read it"
                if self.status.error != error:
                    log.warning("console: %s; waiting", error)
                self.status.state, self.status.error = "waiting for topic", error
            await asyncio.sleep(0.1)
        return set(assigned)

    async def _seek(
        self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """Seek to the first record of the span; return the end offsets to read back to."""
        ends: dict[TopicPartition, int] = await consumer.end_offsets(list(partitions))
        if self.since_s is None:
            await consumer.seek_to_beginning(*partitions)
            return ends
        start_ms = int((time.time() - self.since_s) * 1000)
        found = await consumer.offsets_for_times(dict.fromkeys(partitions, start_ms))
        for tp in partitions:
            at = found.get(tp)
            if at is None:
                consumer.seek(tp, ends[tp])
            else:
                consumer.seek(tp, at.offset)
        return ends

    @staticmethod
    async def _caught_up(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await consumer.position(tp) < end:
                return False
        return True

    def _take_record(self, topic: str, value: bytes | None) -> None:
        self._take(value)

    def _take(self, value: bytes | None) -> None:
        try:
            doc = orjson.loads(value or b"")
            alert = Alert.model_validate(doc)
        except (orjson.JSONDecodeError, ValidationError) as e:
            self.status.refused += 1
            log.warning("console: a record on %s is not an alert: %s", self.topic, e)
            return
        self.status.read += 1
        self.sink(alert, doc)
