"""The worker's metrics held per batch (streams/worker/metrics.py): once flushed, the registry
shows exactly what updating the metrics per event would have shown."""

from __future__ import annotations

import math
import random

from prometheus_client import generate_latest

from streams.worker.metrics import LATENCY_BUCKETS, Metrics


def exposition(m: Metrics) -> list[bytes]:
    """The scrape, without the `_created` lines (when each series was made, not what it
    counts)."""
    return [
        line
        for line in generate_latest(m.registry).splitlines()
        if b"_created" not in line.split(b"{")[0].split(b" ")[0]
    ]


def latencies(rng: random.Random, n: int) -> list[float]:
    """Values on and either side of every bucket bound, and anywhere from 0 to past the
    last."""
    on = [*LATENCY_BUCKETS, 0.0, math.inf]
    near = [b * f for b in LATENCY_BUCKETS for f in (1 - 1e-12, 1 + 1e-12)]
    spread = [rng.expovariate(1 / 30) for _ in range(n)] + [rng.random() * 1e4 for _ in range(n)]
    values = on + near + spread
    rng.shuffle(values)
    return values


def test_histograms_folded_per_batch_expose_what_an_observe_per_value_does() -> None:
    rng = random.Random(3)
    per_event, per_batch = Metrics(), Metrics()
    for batch in range(5):
        for rule in ("r1", "r2"):
            values = latencies(rng, 200 + batch)
            for v in values:
                per_event.event_to_alert.labels(rule).observe(v)
                per_batch.batch.event_to_alert.observe((rule,), v)
        per_batch.flush()
        assert exposition(per_batch) == exposition(per_event)


def test_counters_and_gauges_held_until_the_flush() -> None:
    per_event, per_batch = Metrics(), Metrics()
    for i in range(50):
        rule, dest = f"r{i % 3}", ("US", "MX")[i % 2]
        per_event.alerts_delivered.labels(dest, rule).inc()
        per_batch.batch.alerts_delivered.add((dest, rule))
        per_event.late.labels("events.tips", "tip", "CBP").inc(2)
        per_batch.batch.late.add(("events.tips", "tip", "CBP"), 2)
        per_event.reordered.labels(str(i % 4)).set(i)
        per_batch.batch.reordered.set((str(i % 4),), i)
    sample = per_batch.registry.get_sample_value
    assert sample("fusion_alerts_delivered_total", {"destination": "US", "rule": "r0"}) is None
    per_batch.flush()
    assert exposition(per_batch) == exposition(per_event)
    per_batch.flush()  # nothing held: nothing counted twice
    assert exposition(per_batch) == exposition(per_event)
