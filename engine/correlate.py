"""The correlate stage, pure: routed copies in, alerts out, decided in event-time order.

Copies wait in a buffer until the combined watermark passes them, then go to the engine in
(event time, event id, route) order, so the engine sees the same sequence whatever the
batching, partitioning, worker count or restarts, and raises the same alerts. A copy that
arrives behind the watermark can no longer be put in order: it goes to the engine at once,
which takes it for every rule whose allowed lateness it is within; a copy too late for
every rule that could use it is reported (its primary copy only) to be dead-lettered.
The worker and `fusion replay` both drive this class.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.correlators.base import Part
from engine.engine import Engine, Route
from engine.errors import SnapshotError
from engine.facts import Fact
from engine.hits import RawAlert
from engine.routing import Origin, RoutedItem
from engine.rules import RuleSet
from engine.watermarks import CombinedWatermark, InputPartition, Mark, ReorderBuffer

STAGE_SNAPSHOT_VERSION = 3


@dataclass
class CorrelateOutput:
    """What one call produced: alerts (with when their newest evidence was read), primary
    copies too late for every rule (with the reason), duplicates, and copies taken behind
    the watermark (out of event-time order, but within some rule's lateness)."""

    alerts: list[tuple[RawAlert, float | None]] = field(default_factory=list)
    late: list[tuple[RoutedItem, str]] = field(default_factory=list)
    duplicates: list[RoutedItem] = field(default_factory=list)
    behind: list[RoutedItem] = field(default_factory=list)
    refuted_late: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    """(alert id, rule id, refuting event ids): taken after the alert's corrections span."""


class CorrelateStage:
    """One internal partition's correlation: dedup, event-time buffer, engine."""

    def __init__(
        self,
        ruleset: RuleSet,
        expected_sources: Iterable[InputPartition] = (),
        *,
        dedup_window_s: float = 600.0,
        dedup_max_ids: int = 200_000,
        grace_s: float = 0.0,
    ) -> None:
        self.engine = Engine(ruleset)
        self.combined_watermark = CombinedWatermark(expected_sources, grace_s)
        self.buffer: ReorderBuffer[RoutedItem] = ReorderBuffer()
        self.released_before = -math.inf
        self._advanced_to = -math.inf
        self._seen: dict[tuple[str, str], float] = {}
        self._origins: dict[InputPartition, tuple[int, set[str]]] = {}
        self._seen_order: deque[tuple[str, str]] = deque()
        self._dedup_window = dedup_window_s
        self._dedup_max = dedup_max_ids
        self._buffer_changed: dict[str, RoutedItem | None] | None = None

    @property
    def ruleset(self) -> RuleSet:
        return self.engine.ruleset

    @property
    def dedup_ids(self) -> int:
        """Event ids remembered to recognise duplicates."""
        return len(self._seen)

    def take(
        self,
        items: Iterable[RoutedItem],
        marks: dict[InputPartition, Mark] | None = None,
        now: float | None = None,
    ) -> CorrelateOutput:
        """Take routed copies and the marks sent with them; release what the watermark allows
        (`now`: processing time, for the grace given to idle inputs; None: no grace)."""
        out = CorrelateOutput()
        seen = self._seen
        origins = self._origins
        for it in items:
            eid = it.event_id
            k = (eid, it.route)
            source, offset = it.origin.source, it.origin.offset
            last = origins.get(source) if offset >= 0 else None
            if last is not None and (
                offset < last[0] or (offset == last[0] and it.route in last[1])
            ):
                # read again upstream (a restart or a rebalance re-reads uncommitted input):
                # this partition has taken it already
                if it.primary:
                    out.duplicates.append(it)
                continue
            if offset >= 0:
                if last is None or offset > last[0]:
                    origins[source] = (offset, {it.route})
                else:
                    last[1].add(it.route)
            if k in seen:
                if it.primary:
                    out.duplicates.append(it)
                continue
            seen[k] = it.ts
            self._seen_order.append(k)
            if it.ts < self.released_before:
                self._take_behind(it, out)
            else:
                order_id = f"{eid}\0{it.route}"
                self.buffer.push(it.ts, order_id, it)
                if self._buffer_changed is not None:
                    self._buffer_changed[order_id] = it
        order = self._seen_order
        while len(order) > self._dedup_max:
            del seen[order.popleft()]
        if marks:
            for source, mark in marks.items():
                self.combined_watermark.update(source, mark)
        self._release(out, now)
        self._collect_refuted(out)
        return out

    def _collect_refuted(self, out: CorrelateOutput) -> None:
        if self.engine.refuted_late:
            out.refuted_late.extend(self.engine.refuted_late)
            self.engine.refuted_late.clear()

    def drain(self, now: float | None = None) -> CorrelateOutput:
        """End of input (replay): release everything held, then decide what still waits."""
        out = CorrelateOutput()
        for it in self.buffer.release(math.inf):
            self._released(it)
            self._process(it, out)
            self.released_before = max(self.released_before, it.ts)
        last = self.engine.watermark
        if not math.isinf(last):
            self._emit(self.engine.advance(last), out)
            self._emit(self.engine.flush(last if now is None else now), out)
        self._collect_refuted(out)
        return out

    def _release(self, out: CorrelateOutput, now: float | None) -> None:
        before, clock = self.combined_watermark.value(now)
        if before == -math.inf:
            return
        for it in self.buffer.release(before):
            self._released(it)
            self._process(it, out)
        if clock > self.released_before:
            self.released_before = clock
        # Not `clock > engine.watermark`: taking an event moves the engine's clock to its time
        # without deciding what was due before it, so that test missed the newest event's time.
        if clock > self._advanced_to:
            self._advanced_to = clock
            self._emit(self.engine.advance(clock), out)
            self._expire_seen()

    def _released(self, it: RoutedItem) -> None:
        if self._buffer_changed is not None:
            self._buffer_changed[f"{it.event_id}\0{it.route}"] = None

    def _process(self, it: RoutedItem, out: CorrelateOutput) -> None:
        fact = Fact.from_doc(it.doc, it.ts)
        alerts = self.engine.process(fact, Route(it.kind, it.owner, it.route), now=it.ts)
        for a in alerts:
            out.alerts.append((a, it.ingested_at))

    def _take_behind(self, it: RoutedItem, out: CorrelateOutput) -> None:
        fact = Fact.from_doc(it.doc, it.ts)
        rs = self.engine.ruleset
        if it.primary:
            reason = rs.late_reason(fact, self.engine.watermark)
            if reason is not None:
                out.late.append((it, reason))
                return
        out.behind.append(it)
        for a in self.engine.process(fact, Route(it.kind, it.owner, it.route), now=it.ts):
            out.alerts.append((a, it.ingested_at))

    def _emit(self, alerts: list[RawAlert], out: CorrelateOutput) -> None:
        for a in alerts:
            out.alerts.append((a, None))

    def _expire_seen(self) -> None:
        """Forget ids from the oldest remembered while they are behind the dedup window (they
        are remembered in about event-time order: a straggler is forgotten a little late)."""
        horizon = self.released_before - self._dedup_window
        seen, order = self._seen, self._seen_order
        while order and seen[order[0]] < horizon:
            del seen[order.popleft()]

    # -- snapshots -------------------------------------------------------------------------

    def snapshot_doc(self, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """The stage's state as a JSON-able object, every part by name: the engine, the
        buffer, the marks, and per input partition the newest offset taken."""
        return {
            **self.snapshot_head(meta),
            "engine": self.engine.snapshot_doc(),
            "buffer": [it.as_doc() for it in self.buffer.items()],
        }

    # -- a per-key changelog (engine/changelog.py) -------------------------------------------

    def track(self) -> None:
        """Note from now on what changes, for `take_changes`."""
        self.engine.track()
        self._buffer_changed = {}

    def take_changes(self, full: bool = False) -> Iterator[Part]:
        """The parts changed since the last call (`full`: every part there is): the engine's,
        and one per event held in the buffer."""
        yield from self.engine.take_changes(full)
        changed = self._buffer_changed or {}
        self._buffer_changed = {}
        if full:
            changed = {f"{it.event_id}\0{it.route}": it for it in self.buffer.items()}
        for order_id, it in changed.items():
            yield f"b/{order_id}", None if it is None else it.as_doc(), []

    def head(self, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """The state not kept in parts (per input partition, and scalars)."""
        doc = self.snapshot_head(meta)
        doc["engine"] = self.engine.head()
        return doc

    def snapshot_head(self, meta: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "v": STAGE_SNAPSHOT_VERSION,
            "marks": self.combined_watermark.snapshot(),
            "origins": {
                str(source): {"offset": offset, "routes": sorted(routes)}
                for source, (offset, routes) in self._origins.items()
            },
            "released_before": None if math.isinf(self.released_before) else self.released_before,
            "meta": meta or {},
        }

    def assemble(
        self, head: dict[str, Any], parts: dict[str, Any], facts: dict[str, Any]
    ) -> dict[str, Any]:
        """What `snapshot_doc` returns, from `head`, the parts' values by name and the facts
        they refer to (docs by event id)."""
        engine_parts = {n: v for n, v in parts.items() if not n.startswith("b/")}
        buffer = [v for n, v in parts.items() if n.startswith("b/")]
        return {
            **head,
            "engine": self.engine.assemble(head["engine"], engine_parts, facts),
            "buffer": buffer,
        }

    def restore_doc(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Load what `snapshot_doc` returned; returns its meta."""
        version = doc.get("v")
        if version == 2:
            doc = _from_version_2(doc)
        elif version != STAGE_SNAPSHOT_VERSION:
            raise SnapshotError(
                f"a stage snapshot of version {version}, not {STAGE_SNAPSHOT_VERSION}: written "
                "by another release"
            )
        self.engine.restore_doc(doc["engine"])
        for item in doc["buffer"]:
            it = RoutedItem.from_doc(item)
            self._seen[(it.event_id, it.route)] = it.ts
            self._seen_order.append((it.event_id, it.route))
            self.buffer.push(it.ts, f"{it.event_id}\0{it.route}", it)
        self.combined_watermark.restore(doc["marks"])
        for name, taken in doc["origins"].items():
            self._origins[InputPartition.parse(name)] = (int(taken["offset"]), set(taken["routes"]))
        released_before = doc["released_before"]
        if released_before is not None:
            self.released_before = float(released_before)
        return dict(doc["meta"])


def _from_version_2(doc: dict[str, Any]) -> dict[str, Any]:
    """A snapshot of release 0.9.0 (positional lists) in the named form, so that an upgrade
    keeps what the state held (open windows, pending absences, dedup, suppression)."""
    fields = RoutedItem._fields[:-1]
    return {
        **doc,
        "v": STAGE_SNAPSHOT_VERSION,
        "buffer": [
            {
                **dict(zip(fields, item[:-1], strict=True)),
                "origin": dict(zip(Origin._fields, item[-1], strict=True)),
            }
            for item in doc["buffer"]
        ],
        "marks": {
            name: {"watermark": watermark, "idle": idle}
            for name, (watermark, idle) in doc["marks"].items()
        },
        "origins": {
            name: {"offset": offset, "routes": routes}
            for name, (offset, routes) in (doc.get("origins") or {}).items()
        },
        "released_before": doc.get("released_before"),
        "meta": doc.get("meta") or {},
    }
