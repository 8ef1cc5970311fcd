"""Event-time watermarks: per input partition, carried downstream, combined by minimum.

A *source* is one partition of one input topic (`InputPartition`, named
`"events.detections:2"` where it travels: marks on `fusion.routed`, snapshots). Its watermark
says: this source will send no more events with an event time before it, except late ones.
The ingest stage keeps one `SourceClock` per source it reads (bounded out-of-orderness:
the newest event time seen, less the allowed disorder) and sends each source's `Mark`
downstream with the data. The correlate stage combines the marks of every source with
`CombinedWatermark`: the minimum over the sources that are not idle.

A source is *idle* when it is caught up (nothing left to read on the broker) and has had
nothing new for a settable span of processing time: it then stops holding the watermark
back, and rejoins with its next event. A source that is caught up but busy holds it back at
most a span behind the wall clock set per feed: a feed of records about the past (watchlist
entries made days ago, weapon traces) must not hold every alert back by as much; its records
that arrive behind the watermark are still taken, out of order, within each rule's allowed
lateness. Sensor feeds get a long span, so a slow one is waited for and stays in order.
A partition with a backlog is never idle, so a backlog or a slow partition read last never
turns the others' records into late ones.
When every source is idle, nothing is in flight anywhere: everything held may go, and
event time may follow the wall clock (less a lag) so that absence rules still decide.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

T = TypeVar("T")


class InputPartition(NamedTuple):
    """A source of event time: one partition of one input topic."""

    topic: str
    partition: int

    def __str__(self) -> str:
        """Its name where it travels: `<topic>:<partition>`."""
        return f"{self.topic}:{self.partition}"

    @classmethod
    def parse(cls, name: str) -> InputPartition:
        """The input partition a name (`str()` of one) names; ValueError if it names none."""
        topic, colon, partition = name.rpartition(":")
        if not (topic and colon and partition.isdigit()):
            raise ValueError(f"{name!r} does not name an input partition (<topic>:<partition>)")
        return cls(topic, int(partition))


class Mark(NamedTuple):
    """A source's progress as sent downstream: its watermark, and whether it is idle."""

    watermark: float
    idle: bool


@dataclass(slots=True)
class SourceClock:
    """One source's event-time progress at the ingest stage."""

    max_ts: float = -math.inf
    last_new: float = -math.inf
    idle: bool = False
    caught_up: bool = False
    caught_up_lag: float = math.inf

    def observe(self, ts: float, now: float) -> None:
        if ts > self.max_ts:
            self.max_ts = ts
        self.last_new = now
        self.idle = False

    def mark(self, out_of_orderness: float, now: float, idle_floor: float) -> Mark:
        """The source's mark: while idle, its newest event time (or the wall-clock floor, if
        later); otherwise the newest event time less the allowed disorder, but, once caught up
        with the broker, no further back than its `caught_up_lag` behind `now`."""
        if self.idle:
            return Mark(max(self.max_ts, idle_floor), True)
        w = self.max_ts - out_of_orderness
        if self.caught_up and self.max_ts > -math.inf and now - self.caught_up_lag > w:
            w = now - self.caught_up_lag
        return Mark(w, False)


class SourceWatermarks:
    """The ingest stage's clocks, one per source it reads."""

    def __init__(
        self,
        out_of_orderness: float,
        idle_after: float,
        clock_lag: float,
        caught_up_lag: Callable[[InputPartition], float] = lambda source: math.inf,
    ) -> None:
        self.out_of_orderness = out_of_orderness
        self.idle_after = idle_after
        self.clock_lag = clock_lag
        self.caught_up_lag = caught_up_lag
        self.clocks: dict[InputPartition, SourceClock] = {}

    def clock(self, source: InputPartition, now: float) -> SourceClock:
        c = self.clocks.get(source)
        if c is None:
            c = self.clocks[source] = SourceClock(
                last_new=now, caught_up_lag=self.caught_up_lag(source)
            )
        return c

    def observe(self, source: InputPartition, ts: float, now: float) -> None:
        self.clock(source, now).observe(ts, now)

    def update_idleness(
        self, caught_up: dict[InputPartition, bool], now: float
    ) -> list[InputPartition]:
        """Mark sources idle (caught up and quiet for `idle_after`) or active; returns the
        sources whose state changed. A source missing from `caught_up` is not caught up."""
        changed = []
        for source, c in self.clocks.items():
            c.caught_up = caught_up.get(source, False)
            idle = c.caught_up and now - c.last_new >= self.idle_after
            if idle != c.idle:
                c.idle = idle
                changed.append(source)
        return changed

    def marks(
        self, now: float, sources: Iterable[InputPartition] | None = None
    ) -> dict[InputPartition, Mark]:
        idle_floor = now - self.clock_lag
        ooo = self.out_of_orderness
        clocks = self.clocks
        chosen = clocks if sources is None else sources
        return {
            source: clocks[source].mark(ooo, now, idle_floor)
            for source in chosen
            if source in clocks
        }

    def forget(self, sources: Iterable[InputPartition]) -> None:
        for source in sources:
            self.clocks.pop(source, None)


class CombinedWatermark:
    """The correlate stage's watermark over every source that feeds it.

    `release_before`: every event with an earlier event time has arrived (or is late), so
    it may be processed in event-time order. `clock`: the event time the engine may move
    to (equal, except when every source is idle: then everything held may go).

    When an idle source wakes up (new data after a quiet spell), the watermark for `grace`
    seconds of processing time is the lowest it has been over the last `grace` seconds:
    a burst written to several partitions lands on them a moment apart, and the partitions
    still idle when the first one wakes must not find their share behind the watermark.
    """

    def __init__(self, expected: Iterable[InputPartition] = (), grace: float = 0.0) -> None:
        self.expected: frozenset[InputPartition] = frozenset(expected)
        self.grace = grace
        self.marks: dict[InputPartition, Mark] = {}
        self._history: deque[tuple[float, float, float]] = deque()
        self._woke = False
        self._last_wake = -math.inf

    def update(self, source: InputPartition, mark: Mark) -> None:
        """A source's newest mark. An active source's watermark never goes back (a restarted
        reader may resend an older one); an idle source's mark is its newest event time, as
        sent (when every source is idle, everything that arrived goes, up to the newest)."""
        old = self.marks.get(source)
        if old is not None:
            if old.watermark > mark.watermark and not mark.idle:
                mark = Mark(old.watermark, False)
            if old.idle and not mark.idle:
                self._woke = True
        self.marks[source] = mark

    def _candidate(self) -> tuple[float, float]:
        marks = self.marks
        if not self.expected <= marks.keys():
            return -math.inf, -math.inf  # a source not heard from may still hold anything
        active = [m.watermark for m in marks.values() if not m.idle]
        if active:
            w = min(active)
            return w, w
        if not marks:
            return -math.inf, -math.inf
        newest = max(m.watermark for m in marks.values())
        return math.nextafter(newest, math.inf), newest  # all idle: all that arrived

    def value(self, now: float | None = None) -> tuple[float, float]:
        """(release_before, clock) at processing time `now` (None: no grace)."""
        before, clock = self._candidate()
        if now is None or self.grace <= 0:
            return before, clock
        history = self._history
        if not history or history[-1][1:] != (before, clock):
            history.append((now, before, clock))
        start = now - self.grace
        while len(history) > 1 and history[1][0] <= start:
            history.popleft()  # the entry in force at the window's start stays
        if self._woke:
            self._woke = False
            self._last_wake = now
        if now - self._last_wake >= self.grace:
            return before, clock
        return min(h[1] for h in history), min(h[2] for h in history)

    def waiting_for(self) -> list[InputPartition]:
        """The expected sources not heard from yet (for logs and readiness)."""
        return sorted(self.expected - self.marks.keys())

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Each source's mark by its name, field by field (a watermark of none yet: null)."""
        return {
            str(source): {
                "watermark": None if math.isinf(mark.watermark) else mark.watermark,
                "idle": mark.idle,
            }
            for source, mark in self.marks.items()
        }

    def restore(self, data: dict[str, dict[str, Any]]) -> None:
        """Load what `snapshot` returned."""
        for name, mark in data.items():
            watermark = mark["watermark"]
            self.update(
                InputPartition.parse(name),
                Mark(-math.inf if watermark is None else float(watermark), bool(mark["idle"])),
            )


class ReorderBuffer(Generic[T]):
    """Items held until the watermark passes them, then released in (ts, id) order."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, str, int, T]] = []
        self._seq = 0

    def push(self, ts: float, order_id: str, item: T) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (ts, order_id, self._seq, item))

    def release(self, before: float) -> Iterator[T]:
        """Every item with event time before `before`, in (ts, id) order."""
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] < before:
            yield pop(heap)[3]

    def __len__(self) -> int:
        return len(self._heap)

    def items(self) -> list[T]:
        """The items held, in release order (for snapshots)."""
        return [entry[3] for entry in sorted(self._heap)]
