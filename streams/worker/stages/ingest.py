"""Stage 1, ingest: validate each input message, dead-letter refusals, route accepted events
under every correlation key their rules use, and carry each input partition's watermark.

Input: whole fetched batches of the input topics. Output: one message per partition of
`fusion.routed` (copies for it, and the marks of the input partitions read), dead letters.
State: one event-time clock per input partition (it needs no snapshot: the correlate stage
keeps the highest mark it has seen of each). The input is acked once its output is sent.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable

from engine.ingest import Rejection, validate
from engine.routing import Origin, RoutedItem, Router, route_items
from engine.rules import RuleSet
from engine.watermarks import InputPartition, SourceWatermarks
from schemas.events import EventType
from streams.settings import Settings
from streams.worker.delivery import DeadLetters
from streams.worker.edges import Producer, Record
from streams.worker.envelopes import encode_routed
from streams.worker.metrics import Metrics

log = logging.getLogger("fusion.ingest")

MARKS_EVERY_S = 0.05


class IngestShell:
    """Validation, dead letters, routing and per-partition watermarks."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        producer: Producer,
        dead_letters: DeadLetters,
        rules: Callable[[], tuple[RuleSet, Router]],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.producer = producer
        self.dead_letters = dead_letters
        self.rules = rules
        self.clocks = SourceWatermarks(
            settings.out_of_orderness_s,
            settings.idle_after_s,
            settings.idle_clock_lag_s if settings.idle_clock_lag_s is not None else float("inf"),
            self._caught_up_lag,
        )
        self.topic_types = {name: etype for name, (etype, _) in settings.topic_event_types.items()}
        self.topic_owner = {name: cc for name, (_, cc) in settings.topic_event_types.items()}
        self._last_marks_sent = 0.0
        self._last_change = 0.0
        self._last_to: dict[int, float] = {}
        self._unsent: dict[int, set[InputPartition]] = {}

    def _caught_up_lag(self, source: InputPartition) -> float:
        etype = self.topic_types.get(source.topic, "")
        return self.settings.caught_up_lag_s.get(etype, float("inf"))

    async def on_messages(
        self, messages: list[Record], caught_up: dict[InputPartition, bool]
    ) -> None:
        """One fetch of input messages (any input topics): validate, route, send, mark.

        `caught_up` is as of this fetch: a source the fetch shows data for, even if not in
        this batch, is not idle when the marks go out, so it holds the watermark back."""
        settings = self.settings
        now = time.time()
        ruleset, router = self.rules()
        n = settings.internal_partitions
        partners = settings.partner_set
        max_bytes = settings.max_message_bytes
        parts: dict[int, list[RoutedItem]] = defaultdict(list)
        counts: dict[tuple[str, EventType, str], int] = defaultdict(int)
        touched: set[InputPartition] = set()
        clocks = self.clocks
        for m in messages:
            topic, partition, offset, value = m.topic, m.partition, m.offset, m.value
            etype = self.topic_types[topic]
            source = InputPartition(topic, partition)
            origin = Origin(topic, partition, offset)
            touched.add(source)
            try:
                res = validate(
                    value,
                    etype,
                    now=now,
                    partners=partners,
                    max_bytes=max_bytes,
                    issuer=self.topic_owner[topic],
                )
            except Exception as e:
                log.exception(
                    "validation failed unexpectedly on %s[%d]@%d", topic, partition, offset
                )
                res = Rejection(
                    "internal",
                    f"the pipeline failed on this message ({e!r}); "
                    "it is kept here: report it to the pipeline's maintainers",
                )
            if isinstance(res, Rejection):
                clocks.clock(source, now).last_new = now
                await self.dead_letters.send(origin, value, res, now)
                continue
            clocks.observe(source, res.ts, now)
            counts[(topic, etype, res.country)] += 1
            for q, item in route_items(res, router, ruleset.rules_taking(res), n, now, origin):
                parts[q].append(item)
        for (topic, etype, country), k in counts.items():
            self.metrics.received.labels(topic, etype, country).inc(k)
        changed = clocks.update_idleness(caught_up, now)
        self._export_idle(changed)
        self._last_change = now
        await self.send_marks(now, touched | set(changed), parts)

    async def send_marks(
        self,
        now: float,
        sources: set[InputPartition] | None = None,
        parts: dict[int, list[RoutedItem]] | None = None,
    ) -> None:
        """Send each partition of `fusion.routed` its copies with the marks of `sources` (all
        if None). A partition with no copies this time hears of the marks at most every
        `MARKS_EVERY_S` (they wait for its next message), so that many small fetches do not
        each cost a message per partition."""
        topic = self.settings.topic_routed
        unsent = self._unsent
        for q in range(self.settings.internal_partitions):
            items = parts.get(q, []) if parts else []
            if sources is None:
                chosen: set[InputPartition] | None = None
                unsent.pop(q, None)
            elif items or now - self._last_to.get(q, 0.0) >= MARKS_EVERY_S:
                chosen = sources | unsent.pop(q, set())
            else:
                unsent.setdefault(q, set()).update(sources)
                continue
            marks = self.clocks.marks(now, chosen)
            if not marks and not items:
                continue
            await self.producer.send(topic, None, encode_routed(items, marks), q)
            self._last_to[q] = now
        gauge = self.metrics.watermark_seconds
        for source, mark in self.clocks.marks(now, sources).items():
            gauge.labels("ingest", source.topic, str(source.partition)).set(mark.watermark)
        if sources is None:
            self._last_marks_sent = now

    async def on_tick(self, caught_up: dict[InputPartition, bool]) -> None:
        """Look at idleness (`caught_up`: per source read, whether nothing is left on the
        broker); send every mark when a source turned idle or active, and often while some
        source is idle (the correlate stage lets the watermark pass idle sources only after
        a grace period, and needs a message to notice it ended)."""
        now = time.time()
        changed = self.clocks.update_idleness(caught_up, now)
        self._export_idle(changed)
        if changed:
            self._last_change = now
        recent = now - self._last_change < 2 * self.settings.idle_after_s
        every = self.settings.idle_after_s / 2 if recent else 1.0
        if changed or now - self._last_marks_sent >= every:
            await self.send_marks(now)
        elif self._unsent:
            await self.send_marks(now, set().union(*self._unsent.values()))

    def _export_idle(self, sources: list[InputPartition]) -> None:
        for source in sources:
            idle = self.clocks.clocks[source].idle
            self.metrics.input_idle.labels(source.topic, str(source.partition)).set(
                1 if idle else 0
            )

    def assigned(self, sources: list[InputPartition]) -> None:
        """Start a clock for each newly assigned input partition (idle only once caught up)."""
        now = time.time()
        for source in sources:
            self.clocks.clock(source, now)

    def revoked(self, sources: list[InputPartition]) -> None:
        self.clocks.forget(sources)
