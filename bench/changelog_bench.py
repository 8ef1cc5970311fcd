"""The cost of the correlate stage's snapshots: whole-state (the releases before the
changelog) against the per-key changelog (engine/changelog.py), on the same stream.

    .venv/bin/python bench/changelog_bench.py [--events 40000] [--every 2000] [--partitions 4]

The default pack over a generated stream (bench/streamgen.py, the engine benchmark's), through
validation, routing and one CorrelateStage per partition, as in `make bench`. Every `--every`
events (2 s of a worker at 1,000 events/s), each partition is
snapshotted both ways; each way's CPU time and bytes are summed separately (whole: the stage's
document, orjson and zlib level 1, as the worker wrote it; changelog: the changes since the
last snapshot, as the worker writes them, without compression). Printed: per snapshot and per
event, with the state held at the end, so the growth of each with the state shows.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import zlib
from collections import defaultdict
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "bench"), str(REPO)]

from provenance import cpus_and_memory, tree_state  # noqa: E402
from streamgen import generate  # noqa: E402

from engine.changelog import StateLog  # noqa: E402
from engine.correlate import CorrelateStage  # noqa: E402
from engine.ingest import Rejection, validate  # noqa: E402
from engine.routing import Origin, RoutedItem, Router, route_items  # noqa: E402
from engine.rulefiles import load_rules  # noqa: E402
from engine.watermarks import InputPartition, SourceWatermarks  # noqa: E402

PARTNERS = frozenset({"US", "MX"})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--every", type=int, default=2_000, help="events between snapshots")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--rate", type=float, default=20.0, help="events per second of event time")
    args = ap.parse_args(argv)

    ruleset = load_rules([REPO / "rules"])
    router = Router(ruleset)
    t0 = time.time() - args.events / args.rate - 3600
    items = generate(args.events, keys=2_000, t0=t0, event_rate=args.rate)
    now = time.time()
    source = InputPartition("bench", 0)
    clocks = SourceWatermarks(0.0, 1.0, math.inf)
    stages = {p: CorrelateStage(ruleset, [source]) for p in range(args.partitions)}
    logs = {p: StateLog() for p in stages}
    for stage in stages.values():
        stage.track()
    whole_s: list[float] = []
    whole_b: list[int] = []
    log_s: list[float] = []
    log_b: list[int] = []
    entries: list[int] = []
    for start in range(0, len(items), args.every):
        routed: dict[int, list[RoutedItem]] = defaultdict(list)
        for off, it in enumerate(items[start : start + args.every], start):
            r = validate(it.raw, it.etype, now=now, partners=PARTNERS)
            if isinstance(r, Rejection):
                continue
            clocks.observe(source, r.ts, now)
            origin = Origin("bench", 0, off)
            for q, item in route_items(
                r, router, ruleset.rules_taking(r), len(stages), now, origin
            ):
                routed[q].append(item)
        marks = clocks.marks(now)
        for p, stage in stages.items():
            stage.take(routed.get(p, []), marks)
            began = time.process_time()
            doc = stage.snapshot_doc({"applied": start})
            blob = zlib.compress(orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS), 1)
            whole_s.append(time.process_time() - began)
            whole_b.append(len(blob))
            began = time.process_time()
            changes = logs[p].changes(stage, {"applied": start})
            log_s.append(time.process_time() - began)
            log_b.append(sum(len(n) + len(v or b"") for n, v in changes))
            entries.append(len(changes))
    n = len(whole_s)
    held = sum(len(log.parts) + len(log.refs) for log in logs.values())
    print(f"# Snapshots: whole-state against the per-key changelog ({tree_state()})\n")
    print(
        f"{cpus_and_memory()}; {args.events:,} events, the default pack, {args.partitions} "
        f"partitions, a snapshot of each every {args.every:,} events ({n:,} in all); "
        f"entries held at the end: {held:,}\n"
    )
    print(
        "| | CPU ms per snapshot (median) | last 10 (median) | CPU µs per event | "
        "bytes per snapshot (median) | last 10 (median) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, secs, sizes in (("whole state", whole_s, whole_b), ("changelog", log_s, log_b)):
        print(
            f"| {name} | {1e3 * statistics.median(secs):.2f} | "
            f"{1e3 * statistics.median(secs[-10:]):.2f} | {1e6 * sum(secs) / args.events:.2f} | "
            f"{statistics.median(sizes):,.0f} | {statistics.median(sizes[-10:]):,.0f} |"
        )
    print(
        f"\nchangelog entries written per snapshot: median {statistics.median(entries):,.0f}, "
        f"most {max(entries):,}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
