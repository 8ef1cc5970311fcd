"""The transparency log's cost: the full default pack's backlog with the log off and on.

    .venv/bin/python bench/audit_log_bench.py [--backlog 30000] [--runs 3]

One broker (peers.start_broker, folder .broker-auditlog/, wiped at the end); `runs` pairs of
runs, interleaved (off, on, off, on, ...), each a fresh Lab (e2e_bench.bench_lab: its own
topics) preloaded with the same simulator backlog and drained by one worker
(e2e_bench.run_backlog: committed events/s). "on" sets FUSION_LOG_SIGNING_KEY_FILE (a key
made for the run) and per-run log topics. Prints each run and the median and spread of each
side, and the median's change.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "bench"), str(REPO)]

from e2e_bench import PARTS, Drain, bench_lab, run_backlog  # noqa: E402
from peers import log, start_broker, stop_broker  # noqa: E402

from streams.tools.simulator import Simulator  # noqa: E402
from streams.tools.transparency.keys import keygen  # noqa: E402


def backlog_events(n: int, seed: int) -> dict[str, list[bytes]]:
    """n simulator events over the past 2 h, per event type in event-time order (as the
    end-to-end benchmark's backlog)."""
    end, span, made = time.time() - 60.0, 7200.0, [0]
    by_type: dict[str, list[tuple[float, bytes]]] = {}
    for etype, ev in Simulator(seed=seed).stream(lambda: end - span + span * made[0] / n):
        ts = datetime.fromisoformat(ev["occurred_at"]).timestamp()
        by_type.setdefault(etype, []).append((ts, orjson.dumps(ev)))
        made[0] += 1
        if made[0] >= n:
            break
    return {
        etype: [raw for _, raw in sorted(items, key=lambda x: x[0])]
        for etype, items in by_type.items()
    }


def one_run(
    bootstrap: str, bpid: int, tmp: Path, name: str, events: dict[str, list[bytes]], on: bool
) -> Drain:
    env: dict[str, str] = {}
    if on:
        key = tmp / f"{name}.key"
        keygen("border-fusion-log-bench", key, witness=False)
        env = {
            "FUSION_LOG_SIGNING_KEY_FILE": str(key),
            "FUSION_TOPIC_LOG_LEAVES": f"audit.log.leaves.{name}",
            "FUSION_TOPIC_LOG_CHECKPOINTS": f"audit.log.checkpoints.{name}",
            "FUSION_TOPIC_LOG_COSIGNATURES": f"audit.log.cosignatures.{name}",
            "FUSION_TOPIC_ARCHIVE": f"audit.archive.{name}",
        }
    lab = bench_lab(bootstrap, tmp, name, **env)
    lab.create_run_topics(env)
    for etype, items in events.items():
        for j, raw in enumerate(items):
            lab.producer.send(lab.topics[etype], raw, partition=j % PARTS)
    lab.flush()
    return run_backlog(lab, bpid, f"{name} (log {'on' if on else 'off'})", 900.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--backlog", type=int, default=30_000, help="simulator events per run")
    ap.add_argument("--runs", type=int, default=3, help="runs with the log off, and on")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    events = backlog_events(args.backlog, args.seed)
    broker = start_broker(REPO / ".broker-auditlog")
    tmp = Path(tempfile.mkdtemp(prefix="auditlog-bench-"))
    results: dict[bool, list[Drain]] = {False: [], True: []}
    try:
        for i in range(args.runs):
            for on in (False, True):
                name = f"{'on' if on else 'off'}{i}"
                results[on].append(
                    one_run(broker.bootstrap, broker.pid() or 0, tmp, name, events, on)
                )
    finally:
        stop_broker(broker, delete=True)
    print(f"backlog of {args.backlog:,} simulator events, default pack, one worker")
    print("| log | runs (events/s committed) | median | spread (max-min) | alerts |")
    print("|---|---|---|---|---|")
    medians = {}
    for on in (False, True):
        eps = [d.eps for d in results[on]]
        medians[on] = statistics.median(eps)
        runs = ", ".join(f"{e:,.0f}" for e in eps)
        alerts = ", ".join(str(d.alerts) for d in results[on])
        spread = max(eps) - min(eps)
        label = "on" if on else "off"
        print(f"| {label} | {runs} | {medians[on]:,.0f} | {spread:,.0f} | {alerts} |")
    change = 100.0 * (medians[True] - medians[False]) / medians[False]
    print(f"median with the log on vs off: {change:+.1f} %")
    log(f"worker logs: {tmp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
