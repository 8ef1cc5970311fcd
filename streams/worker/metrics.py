"""Prometheus metrics of the worker: every metric declared (`Metrics`), the hot path's updates
held per batch (`PerBatch`), and what is read off the worker's state once a tick
(`StateExport`, `export_lag`). Labels stay low-cardinality: never an id, plate or person."""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

if TYPE_CHECKING:
    from engine.correlate import CorrelateStage

# From 5 ms to an hour: event-to-alert latency includes events reported late. Each bound is
# 16 series (two histograms, eight rules) in every scrape.
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
    30.0,
    60.0,
    300.0,
    3600.0,
)


Labels = tuple[str, ...]


def fold_observations(child: Histogram, values: Sequence[float]) -> None:
    """Into one labelled histogram, what `child.observe(v)` for each of `values` in turn
    does, with one increment per bucket rather than per value. For values that are not NaN,
    folded by the one thread that writes the histogram (the scrape thread only reads it)."""
    bounds = child._upper_bounds
    hits = [0] * len(bounds)
    total = child._sum.get()
    for v in values:
        hits[bisect_left(bounds, v)] += 1
        total += v  # in turn, as `observe` adds: the same float sum
    child._sum.set(total)
    for bucket, n in zip(child._buckets, hits, strict=True):
        if n:
            bucket.inc(n)


@dataclass(frozen=True, slots=True)
class HeldCounts:
    """A counter's increments by label values, held until `flush`."""

    counter: Counter
    held: defaultdict[Labels, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, labels: Labels, n: int = 1) -> None:
        self.held[labels] += n

    def flush(self) -> None:
        for labels, n in self.held.items():
            self.counter.labels(*labels).inc(n)
        self.held.clear()


@dataclass(frozen=True, slots=True)
class HeldObservations:
    """A histogram's observations by label values, held until `flush`."""

    histogram: Histogram
    held: defaultdict[Labels, list[float]] = field(default_factory=lambda: defaultdict(list))

    def observe(self, labels: Labels, value: float) -> None:
        self.held[labels].append(value)

    def flush(self) -> None:
        for labels, values in self.held.items():
            fold_observations(self.histogram.labels(*labels), values)
        self.held.clear()


@dataclass(frozen=True, slots=True)
class HeldValues:
    """A gauge's last value by label values, held until `flush`."""

    gauge: Gauge
    held: dict[Labels, float] = field(default_factory=dict)

    def set(self, labels: Labels, value: float) -> None:
        self.held[labels] = value

    def flush(self) -> None:
        for labels, value in self.held.items():
            self.gauge.labels(*labels).set(value)
        self.held.clear()


@dataclass(frozen=True, slots=True)
class PerBatch:
    """The updates the stages make per event, alert or routed message, held in plain dicts
    and folded into the metrics once per fetch (`Metrics.flush`): a metric's child costs a
    lock and a label lookup per update, and a scrape reads them all."""

    rejected: HeldCounts
    duplicates: HeldCounts
    late: HeldCounts
    out_of_order: HeldCounts
    alerts_raised: HeldCounts
    alert_versions: HeldCounts
    alerts_delivered: HeldCounts
    audit_records: HeldCounts
    event_to_alert: HeldObservations
    ingest_to_alert: HeldObservations
    reordered: HeldValues
    watermark_seconds: HeldValues

    @classmethod
    def of(cls, m: Metrics) -> PerBatch:
        return cls(
            HeldCounts(m.rejected),
            HeldCounts(m.duplicates),
            HeldCounts(m.late),
            HeldCounts(m.out_of_order),
            HeldCounts(m.alerts_raised),
            HeldCounts(m.alert_versions),
            HeldCounts(m.alerts_delivered),
            HeldCounts(m.audit_records),
            HeldObservations(m.event_to_alert),
            HeldObservations(m.ingest_to_alert),
            HeldValues(m.reordered),
            HeldValues(m.watermark_seconds),
        )

    def flush(self) -> None:
        for held in (
            self.rejected,
            self.duplicates,
            self.late,
            self.out_of_order,
            self.alerts_raised,
            self.alert_versions,
            self.alerts_delivered,
            self.audit_records,
            self.event_to_alert,
            self.ingest_to_alert,
            self.reordered,
            self.watermark_seconds,
        ):
            held.flush()


class Metrics:
    """Every metric the worker exports, registered in one registry; `batch` holds the hot
    path's updates until `flush`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.received = Counter(
            "fusion_events_received",
            "Input messages read, by topic, event type and source country.",
            ["topic", "event_type", "country"],
            registry=r,
        )
        self.rejected = Counter(
            "fusion_events_rejected",
            "Input messages dead-lettered, by topic and reason.",
            ["topic", "reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "fusion_events_duplicate",
            "Events dropped as duplicates of an event_id seen within 24 h.",
            ["event_type"],
            registry=r,
        )
        self.late = Counter(
            "fusion_events_late",
            "Events dead-lettered as too late for every rule that could use them, "
            "by input topic, event type and source agency.",
            ["topic", "event_type", "agency"],
            registry=r,
        )
        self.alerts_raised = Counter(
            "fusion_alerts_raised",
            "Alerts raised by the engine, by rule and severity.",
            ["rule", "severity"],
            registry=r,
        )
        self.alerts_delivered = Counter(
            "fusion_alerts_delivered",
            "Alerts written to a country's alert topic.",
            ["destination", "rule"],
            registry=r,
        )
        self.audit_records = Counter(
            "fusion_audit_records",
            "Audit records written to the sharing audit topic.",
            ["destination"],
            registry=r,
        )
        self.event_to_alert = Histogram(
            "fusion_event_to_alert_seconds",
            "From the newest evidence's event time to the alert's delivery.",
            ["rule"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ingest_to_alert = Histogram(
            "fusion_ingest_to_alert_seconds",
            "From the pipeline reading the newest evidence to the alert's delivery.",
            ["rule"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.state_keys = Gauge(
            "fusion_state_keys", "Correlation keys held, per rule.", ["rule"], registry=r
        )
        self.state_partials = Gauge(
            "fusion_state_partial_matches",
            "Facts held towards partial matches, per rule.",
            ["rule"],
            registry=r,
        )
        self.state_evictions = Counter(
            "fusion_state_evictions",
            "Facts evicted because a state cap was hit, per rule.",
            ["rule"],
            registry=r,
        )
        self.rule_late = Counter(
            "fusion_rule_late_events",
            "Events a rule skipped as later than its allowed lateness.",
            ["rule"],
            registry=r,
        )
        self.suppressed = Counter(
            "fusion_alerts_suppressed",
            "Rule matches that joined an alert already raised (an update, or nothing new).",
            ["rule"],
            registry=r,
        )
        self.alert_versions = Counter(
            "fusion_alert_versions",
            "Alert versions released after the first, by rule and change (updated, withdrawn).",
            ["rule", "change"],
            registry=r,
        )
        self.refuted_late = Counter(
            "fusion_alerts_refuted_late",
            "Records that refute an alert, taken after its corrections span: the alert stands.",
            ["rule"],
            registry=r,
        )
        self.reloads = Counter(
            "fusion_rule_reloads",
            "Rule, policy and areas reloads, by what (rules, policy, areas) and result.",
            ["what", "result"],
            registry=r,
        )
        self.snapshots = Counter(
            "fusion_state_snapshots", "State snapshots written, by stage.", ["stage"], registry=r
        )
        self.snapshot_bytes = Gauge(
            "fusion_state_snapshot_bytes",
            "Size of the last snapshot, by stage.",
            ["stage"],
            registry=r,
        )
        self.state_partitions = Gauge(
            "fusion_state_partitions",
            "Partitions of fusion.routed whose correlate state this worker holds (across "
            "the group, each partition is held once).",
            registry=r,
        )
        self.dedup_ids = Gauge(
            "fusion_dedup_ids", "Event ids remembered for duplicate detection.", registry=r
        )
        self.lag = Gauge(
            "fusion_consumer_lag",
            "Messages not yet read, by topic and partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.internal_errors = Counter(
            "fusion_internal_errors",
            "Messages a stage failed on (a bug: see the worker log).",
            ["stage"],
            registry=r,
        )
        self.ready = Gauge(
            "fusion_worker_ready", "1 once every input topic has partitions assigned.", registry=r
        )
        self.watermark_seconds = Gauge(
            "fusion_watermark_seconds",
            "Event-time watermark (epoch seconds), by stage: ingest per input topic partition, "
            "correlate per internal partition of the routed topic.",
            ["stage", "topic", "partition"],
            registry=r,
        )
        self.input_idle = Gauge(
            "fusion_input_idle",
            "1 while an input partition is idle (caught up and quiet) and so not holding the "
            "watermark back.",
            ["topic", "partition"],
            registry=r,
        )
        self.reordered = Gauge(
            "fusion_reorder_buffered",
            "Events waiting in the correlate stage's event-time buffer for the watermark.",
            ["partition"],
            registry=r,
        )
        self.out_of_order = Counter(
            "fusion_events_behind_watermark",
            "Events that arrived behind the correlate stage's watermark but within some rule's "
            "lateness: taken, but out of event-time order.",
            ["topic"],
            registry=r,
        )
        self.tak_sent = Counter(
            "fusion_tak_events_sent",
            "Cursor on Target events written to a partner's TAK server.",
            ["country"],
            registry=r,
        )
        self.tak_dropped = Counter(
            "fusion_tak_events_dropped",
            "Cursor on Target events not sent to a partner's TAK server, by reason: "
            "buffer_full (the oldest held while the server was slow or down), shutdown "
            "(still held when the worker stopped), error (the event could not be made).",
            ["country", "reason"],
            registry=r,
        )
        self.tak_connected = Gauge(
            "fusion_tak_connected",
            "1 while connected to a partner's TAK server.",
            ["country"],
            registry=r,
        )
        self.tak_buffered = Gauge(
            "fusion_tak_buffered",
            "Cursor on Target events held for a partner's TAK server.",
            ["country"],
            registry=r,
        )
        self.batch = PerBatch.of(self)

    def flush(self) -> None:
        """Fold what the stages held during a batch into the metrics."""
        self.batch.flush()


class StateExport:
    """The state of the correlate partitions held here, exported once a tick: gauges set to
    what the stages hold, and counters grown by what their engines counted since the last
    export."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._seen: dict[str, dict[str, int]] = {
            "evictions": {},
            "late": {},
            "suppressed": {},
            "refuted_late": {},
        }

    def export(self, stages: Collection[CorrelateStage], rule_ids: Iterable[str]) -> None:
        """`stages`: one per partition held here; `rule_ids`: the rules in force."""
        metrics = self.metrics
        keys: defaultdict[str, int] = defaultdict(int)
        partials: defaultdict[str, int] = defaultdict(int)
        counted: dict[str, defaultdict[str, int]] = {
            name: defaultdict(int) for name in ("evictions", "late", "suppressed", "refuted_late")
        }
        for stage in stages:
            engine = stage.engine
            for rule_id, (held_keys, held_partials, evicted) in engine.state_size().items():
                keys[rule_id] += held_keys
                partials[rule_id] += held_partials
                counted["evictions"][rule_id] += evicted
            for rule_id, rule_stats in engine.stats.rules.items():
                counted["late"][rule_id] += rule_stats.late
                counted["suppressed"][rule_id] += rule_stats.suppressed
                counted["refuted_late"][rule_id] += rule_stats.refuted_late
        metrics.state_partitions.set(len(stages))
        metrics.dedup_ids.set(sum(stage.dedup_ids for stage in stages))
        counters = {
            "evictions": metrics.state_evictions,
            "late": metrics.rule_late,
            "suppressed": metrics.suppressed,
            "refuted_late": metrics.refuted_late,
        }
        for rule_id in rule_ids:
            metrics.state_keys.labels(rule_id).set(keys.get(rule_id, 0))
            metrics.state_partials.labels(rule_id).set(partials.get(rule_id, 0))
            for name, counter in counters.items():
                seen = self._seen[name]
                total = counted[name].get(rule_id, 0)
                if total > seen.get(rule_id, 0):
                    counter.labels(rule_id).inc(total - seen.get(rule_id, 0))
                seen[rule_id] = total


def serve(metrics: Metrics, port: int) -> None:
    """Serve `/metrics` on `port` from a thread, which renders holding the GIL. Without the
    `_created` series (when each series was first made, read by no dashboard or alert): a
    fifth of the series of a scrape."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    start_http_server(port, addr="0.0.0.0", registry=metrics.registry)  # noqa: S104


def export_lag(metrics: Metrics, lags: Mapping[tuple[str, int], int]) -> None:
    """Per (topic, partition) assigned here, the messages on the broker not read yet."""
    for (topic, partition), lag in lags.items():
        metrics.lag.labels(topic, str(partition)).set(lag)
