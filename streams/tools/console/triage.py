"""The console's triage: its country's triage topic folded into a `TriageBook` (so a restart
loses nothing), the partners' shared triage from its inbound topic beside it (never merged),
actions written to the triage topic and answered once read back, and any alert loaded by id
from the alert topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from engine.triage import PartnerState, TaskForce, TriageBook, TriageState, take_shared
from schemas.alerts import Alert
from schemas.triage import SharedTriage, TriageAction
from streams.clients import aiokafka_config
from streams.settings import Settings
from streams.tools.console.feed import AlertFeed, subscribe_all

log = logging.getLogger(__name__)
READ_BACK_S = 10.0


class TriageView:
    """One country's triage of every alert, and what its partners shared of theirs."""

    def __init__(self, country: str, forces: Mapping[str, TaskForce]) -> None:
        self.country = country
        self.forces = forces
        self.book = TriageBook(country, forces)
        self.partners: dict[str, dict[str, PartnerState]] = {}
        self.waiting: dict[str, asyncio.Future[TriageState | None]] = {}
        self.on_change: Callable[[str], None] = lambda alert_id: None

    def take_action(self, action: TriageAction) -> None:
        state = self.book.apply(action) if action.country == self.country else None
        if action.country != self.country:
            log.warning(
                "console: an action of %s on the %s triage topic", action.country, self.country
            )
        future = self.waiting.pop(action.action_id, None)
        if future is not None and not future.done():
            future.set_result(state)
        if state is not None:
            self.on_change(action.alert_id)

    def take_shared(self, shared: SharedTriage) -> None:
        if shared.country == self.country:
            return  # nothing of one's own comes back: the inbound topic is the partners'
        per_country = self.partners.setdefault(shared.alert_id, {})
        per_country[shared.country] = take_shared(per_country.get(shared.country), shared)
        self.on_change(shared.alert_id)

    def view(self, alert_id: str) -> dict[str, Any]:
        """The alert's triage as the page shows it: one's own, and each partner's beside it."""
        return {
            "alert_id": alert_id,
            "own": self.book.get(alert_id).to_json(),
            "partners": {
                cc: state.to_json() for cc, state in sorted(self.partners.get(alert_id, {}).items())
            },
        }

    def alert_ids(self) -> set[str]:
        return set(self.book.states) | set(self.partners)


class TriageFeed(AlertFeed):
    """Reads the country's triage topic and its inbound topic from the beginning, then live."""

    def __init__(self, settings: Settings, country: str, view: TriageView) -> None:
        own, inbound = settings.triage_topic(country), settings.inbound_topic(country)
        super().__init__(
            settings,
            own,
            None,
            lambda a, d: None,
            client_id=f"fusion-console-triage-{country.lower()}",
        )
        self.topics = [own, inbound]
        self.inbound = inbound
        self.view = view

    def _take_record(self, topic: str, value: bytes | None) -> None:
        try:
            if topic == self.inbound:
                self.view.take_shared(SharedTriage.model_validate_json(value or b""))
            else:
                self.view.take_action(TriageAction.model_validate_json(value or b""))
        except ValidationError as e:
            self.status.refused += 1
            log.warning("console: a record on %s is not triage: %s", topic, e)
            return
        self.status.read += 1


class TriageWriter:
    """Writes the country's actions to its triage topic (started with the console)."""

    def __init__(self, settings: Settings, country: str) -> None:
        self.settings = settings
        self.topic = settings.triage_topic(country)
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(
            acks="all",
            client_id=f"fusion-console-writer-{self.topic}",
            **aiokafka_config(self.settings),
        )
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def write(self, action: TriageAction) -> None:
        if self.producer is None:
            raise RuntimeError("the triage writer is not started")
        await self.producer.send_and_wait(
            self.topic, action.model_dump_json().encode(), key=action.alert_id.encode()
        )


async def submit(
    view: TriageView, writer: TriageWriter, action: TriageAction, wait_s: float = READ_BACK_S
) -> TriageState | None:
    """Write an action and wait until the console has read it back: its state after it, or
    None if the fold refused it (another action took its revision first)."""
    future: asyncio.Future[TriageState | None] = asyncio.get_running_loop().create_future()
    view.waiting[action.action_id] = future
    try:
        await writer.write(action)
        return await asyncio.wait_for(future, wait_s)
    finally:
        view.waiting.pop(action.action_id, None)


async def find_alert(settings: Settings, topic: str, alert_id: str) -> dict[str, Any] | None:
    """The newest version of an alert on its topic, read from the beginning (for an alert
    older than the console's span)."""
    consumer = AIOKafkaConsumer(
        group_id=None,
        enable_auto_commit=False,
        client_id="fusion-console-find",
        **aiokafka_config(settings),
    )
    found: dict[str, Any] | None = None
    key = alert_id.encode()
    try:
        await consumer.start()
        tps = sorted(await subscribe_all(consumer, [topic], wait_s=5.0))
        if not tps:
            return None
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)

        async def behind() -> bool:
            for tp in tps:
                if await consumer.position(tp) < ends[tp]:
                    return True
            return False

        while await behind():
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                for record in records:
                    if (
                        record.key != key
                        or record.offset >= ends[TopicPartition(record.topic, record.partition)]
                    ):
                        continue
                    try:
                        doc = orjson.loads(record.value or b"")
                        alert = Alert.model_validate(doc)
                    except (orjson.JSONDecodeError, ValidationError):
                        continue
                    if alert.alert_id == alert_id and (
                        found is None or alert.version >= int(found.get("version", 1))
                    ):
                        found = doc
    finally:
        await consumer.stop()
    return found
