"""What the worker's metrics cost: one scrape of its registry (rendered by the metrics thread
holding the GIL, then gzipped when asked), and the hot path's updates for a run of alerts,
per event as they were and held per batch then folded in as they are now.

    .venv/bin/python bench/metrics_bench.py [--renders 200] [--alerts 10000] [--per-batch 100]

The registry holds the series a busy worker has: every rule of `rules/`, two countries, four
partitions of every input topic and of `fusion.routed`, each label combination touched once.
It is rendered in both formats prometheus_client serves: the text format 0.0.4
(`generate_latest`) and OpenMetrics, which Prometheus 3 asks for first; with the `_created`
series and without them, as the worker serves it (`streams.worker.metrics.serve`).
"""

from __future__ import annotations

import argparse
import gzip
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import disable_created_metrics, enable_created_metrics, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from bench.provenance import cpus_and_memory, tree_state
from engine.rulefiles import load_rules
from streams.settings import Settings
from streams.worker.metrics import Metrics

PARTITIONS = 4
COUNTRIES = ("US", "MX")


def populated(rules: list[tuple[str, str]]) -> Metrics:
    """A registry with the series of a worker that has seen every kind of traffic."""
    settings = Settings()
    m = Metrics()
    inputs = settings.topic_event_types  # topic -> (event type, owner)
    for topic, (etype, _) in inputs.items():
        for cc in COUNTRIES:
            m.received.labels(topic, etype, cc).inc()
            m.late.labels(topic, etype, f"agency-{cc}").inc()
        for reason in ("schema", "late"):
            m.rejected.labels(topic, reason).inc()
        m.duplicates.labels(etype).inc()
        m.out_of_order.labels(topic).inc()
        for p in range(PARTITIONS):
            m.lag.labels(topic, str(p)).set(0)
            m.watermark_seconds.labels("ingest", topic, str(p)).set(time.time())
            m.input_idle.labels(topic, str(p)).set(0)
    for p in range(PARTITIONS):
        m.lag.labels(settings.topic_routed, str(p)).set(0)
        m.watermark_seconds.labels("correlate", settings.topic_routed, str(p)).set(time.time())
        m.reordered.labels(str(p)).set(0)
    for rule_id, severity in rules:
        m.alerts_raised.labels(rule_id, severity).inc()
        for change in ("updated", "withdrawn"):
            m.alert_versions.labels(rule_id, change).inc()
        for cc in COUNTRIES:
            m.alerts_delivered.labels(cc, rule_id).inc()
        m.event_to_alert.labels(rule_id).observe(0.1)
        m.ingest_to_alert.labels(rule_id).observe(0.05)
        for gauge in (m.state_keys, m.state_partials):
            gauge.labels(rule_id).set(1)
        for counter in (m.state_evictions, m.rule_late, m.suppressed, m.refuted_late):
            counter.labels(rule_id).inc()
    for cc in COUNTRIES:
        m.audit_records.labels(cc).inc()
    for what in ("rules", "policy", "areas"):
        m.reloads.labels(what, "success").inc()
    m.snapshots.labels("correlate").inc()
    m.snapshot_bytes.labels("correlate").set(1e6)
    m.state_partitions.set(PARTITIONS)
    m.dedup_ids.set(1e5)
    m.ready.set(1)
    return m


def render_figures(encode: Callable[[Metrics], bytes], m: Metrics, n: int) -> dict[str, float]:
    """ms per render (median, p99 of `n`), its bytes and series, ms to gzip it (median)."""
    body = encode(m)
    times, zipped = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        encode(m)
        times.append((time.perf_counter() - t0) * 1e3)
    for _ in range(max(1, n // 10)):
        t0 = time.perf_counter()
        gzip.compress(body)
        zipped.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p99_ms": times[min(n - 1, int(n * 0.99))],
        "bytes": len(body),
        "series": sum(
            1 for line in body.splitlines() if line and not line.startswith(b"#") and line != b"EOF"
        ),
        "gzip_ms": statistics.median(zipped),
    }


ENCODERS: dict[str, Callable[[Metrics], bytes]] = {
    "text 0.0.4": lambda m: generate_latest(m.registry),
    "OpenMetrics": lambda m: generate_openmetrics(m.registry),
}


Alert = tuple[str, str, float, float]  # rule, severity, event-to-alert s, ingest-to-alert s


def per_event(m: Metrics, alerts: list[Alert], per_batch: int) -> None:
    """Delivery's updates as they were: through the metric's child, per alert and copy."""
    for rule_id, severity, e2a, i2a in alerts:
        m.alerts_raised.labels(rule_id, severity).inc()
        for dest in COUNTRIES:
            m.audit_records.labels(dest).inc()
            m.alerts_delivered.labels(dest, rule_id).inc()
        m.event_to_alert.labels(rule_id).observe(e2a)
        m.ingest_to_alert.labels(rule_id).observe(i2a)


def per_batch(m: Metrics, alerts: list[Alert], per_batch: int) -> None:
    """Delivery's updates as they are: held in plain dicts, folded in once per batch."""
    held = m.batch
    for start in range(0, len(alerts), per_batch):
        for rule_id, severity, e2a, i2a in alerts[start : start + per_batch]:
            held.alerts_raised.add((rule_id, severity))
            for dest in COUNTRIES:
                held.audit_records.add((dest,))
                held.alerts_delivered.add((dest, rule_id))
            held.event_to_alert.observe((rule_id,), e2a)
            held.ingest_to_alert.observe((rule_id,), i2a)
        m.flush()


def update_cost(
    update: Callable[[Metrics, list[Alert], int], None],
    alerts: list[Alert],
    batch: int,
    repeat: int = 5,
) -> float:
    """CPU µs per alert, median of `repeat` runs on fresh registries."""
    runs = []
    for _ in range(repeat):
        m = Metrics()
        t0 = time.process_time()
        update(m, alerts, batch)
        runs.append((time.process_time() - t0) / len(alerts) * 1e6)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--renders", type=int, default=200)
    ap.add_argument("--alerts", type=int, default=10_000)
    ap.add_argument("--per-batch", type=int, default=100, help="alerts per fetch (flush)")
    args = ap.parse_args(argv)

    ruleset = load_rules([Path(__file__).resolve().parent.parent / "rules"])
    rules = [(r.id, r.severity) for r in ruleset.rules]
    m = populated(rules)
    print(f"{cpus_and_memory()}; Python {sys.version.split()[0]}; {tree_state()}\n")
    print(
        f"Scrape of the worker's registry ({len(rules)} rules, {len(COUNTRIES)} countries, "
        f"{PARTITIONS} partitions; {args.renders} renders each; one core's share at one "
        "scrape per second is the median render plus gzip):\n"
    )
    print(
        "| format | `_created` | render ms, median | render ms, p99 | bytes | series "
        "| gzip ms | one core at 1 scrape/s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for created in (True, False):
        (enable_created_metrics if created else disable_created_metrics)()
        for name, encode in ENCODERS.items():
            r = render_figures(encode, m, args.renders)
            print(
                f"| {name} | {'with' if created else 'without'} | {r['median_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {r['bytes']:,} | {r['series']:,} | {r['gzip_ms']:.2f} | "
                f"{(r['median_ms'] + r['gzip_ms']) / 1e3:.2%} |"
            )

    rng = random.Random(7)
    alerts = [
        (rid, sev, rng.expovariate(10.0), rng.expovariate(20.0))
        for rid, sev in (rng.choice(rules) for _ in range(args.alerts))
    ]
    print(
        f"\nDelivery's metric updates for {args.alerts:,} alerts raised, each released to "
        f"both countries (CPU µs per alert, median of 5):\n"
    )
    print("| updates | µs per alert |")
    print("|---|---:|")
    print(f"| per event (`.labels(...).inc()`, `.observe()`) | "
          f"{update_cost(per_event, alerts, args.per_batch):.2f} |")  # fmt: skip
    if hasattr(Metrics(), "batch"):
        print(f"| held per batch, folded every {args.per_batch} alerts | "
              f"{update_cost(per_batch, alerts, args.per_batch):.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
