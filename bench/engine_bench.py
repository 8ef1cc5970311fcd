"""Benchmark of the engine alone (no broker): events per second and memory, printed as tables.

    .venv/bin/python bench/engine_bench.py [--events 200000] [--keys 10000] [--profile]

A stream of all four event types is generated up front as JSON bytes (bench/streamgen.py:
the simulator's mix and scenarios, with `--keys` recurring plates, serials and person refs,
locations along the border, event time advancing at `--event-rate` events per second with the
simulator's jitter and late suspects/weapons). Then, in one run, each phase is timed over the
whole stream `--repeat` times (time.perf_counter; median and best reported):

  decode          orjson.loads only (the floor: what any consumer pays)
  validate        engine.ingest.validate (orjson + pydantic + partner and future checks)
  validate+engine validate, then Engine.process over the full default pack (one engine, all
                  rules, route=None), plus engine.advance(clock) every `--advance-every` events
                  as the worker's 1 s timer would (clock = newest event time - idle lag)
  engine only     Engine.process + advance on facts validated beforehand (untimed)
  worker CPU path the worker's three hops without Kafka or Faust: validate, batch to JSON,
                  decode, Fact.from_doc + dedup + late check + routing, batch to JSON, decode,
                  Fact.from_doc per route + Engine.process(route) on 4 partition engines, and
                  release + JSON of every alert for every recipient (with its audit record)
  release         (--release) every alert version raised over a stream, released with
                  `release_json` to both countries under the shipped sharing policy
                  (rules/policy.yaml, throwaway keys), in the order they were raised (with a
                  `ReleaseMemo` where the checkout has one: it was measured on a branch and
                  not kept, docs/performance.md): CPU µs per alert version (each run a fresh
                  policy and memo, the border and areas loaded beforehand, and the garbage
                  collector tuned as the worker tunes it, `streams.cli._tune_gc`). Two
                  streams: the generated one under `--rules`, and the single-rule backlog of
                  `make bench-e2e` (bench/peers.py's detections, `--release-backlog` of
                  them, and five reads of one plate within ten minutes)

Memory: the peak RSS of each phase (VmHWM, reset before the phase through
/proc/self/clear_refs), the RSS the phase leaves behind, and for validate+engine a separate,
untimed pass under tracemalloc (peak and retained Python allocations).

With --profile, validate+engine is run once more under cProfile and the top functions printed.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import math
import os
import pickle
import platform
import pstats
import re
import statistics
import sys
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from provenance import cpus_and_memory, tree_state  # noqa: E402
from streamgen import Item, generate  # noqa: E402

from engine.areas import default_areas  # noqa: E402
from engine.border import default_border  # noqa: E402
from engine.correlate import CorrelateStage  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.facts import Fact  # noqa: E402
from engine.hits import RawAlert  # noqa: E402
from engine.ingest import Rejection, validate  # noqa: E402
from engine.policy import Keyring, load_policy  # noqa: E402
from engine.release import InterimPolicy, recipients, release_json  # noqa: E402

try:  # a checkout from before the release memo times without it
    from engine.release import ReleaseMemo
except ImportError:
    ReleaseMemo = None  # type: ignore[assignment,misc]
from engine.routing import Origin, RoutedItem, Router, route_items  # noqa: E402
from engine.rulefiles import load_rules  # noqa: E402
from engine.rules import RuleSet  # noqa: E402
from engine.watermarks import InputPartition, SourceWatermarks  # noqa: E402
from schemas.alerts import alert_topic  # noqa: E402
from streams.cli import _tune_gc  # noqa: E402
from streams.keys import generate as generate_keys  # noqa: E402
from streams.worker.envelopes import decode_routed, encode_routed  # noqa: E402

PARTNERS = frozenset({"US", "MX"})
IDLE_LAG_S = 60.0  # the worker's default FUSION_IDLE_LAG_S


# -- process memory -----------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_mib() -> float:
    return _status_kb("VmRSS") / 1024


def peak_rss_mib() -> float:
    return _status_kb("VmHWM") / 1024


# -- phases ------------------------------------------------------------------------------------


class Result:
    def __init__(self, name: str) -> None:
        self.name = name
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.events = 0
        self.accepted = 0
        self.alerts = 0
        self.peak_rss = 0.0
        self.rss_before = 0.0
        self.rss_after = 0.0
        self.state: tuple[int, int, int] | None = None
        self.extra: dict[str, Any] = {}

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)


def phase_decode(items: list[Item], ctx: dict[str, Any]) -> dict[str, Any]:
    loads = orjson.loads
    n = 0
    for it in items:
        loads(it.raw)
        n += 1
    return {"accepted": n}


def phase_validate(items: list[Item], ctx: dict[str, Any]) -> dict[str, Any]:
    now = ctx["now"]
    acc = 0
    for it in items:
        r = validate(it.raw, it.etype, now=now, partners=PARTNERS)
        if not isinstance(r, Rejection):
            acc += 1
    return {"accepted": acc}


def _advance_clock(fact_ts_max: float) -> float:
    return fact_ts_max - IDLE_LAG_S


def phase_validate_engine(items: list[Item], ctx: dict[str, Any]) -> dict[str, Any]:
    now = ctx["now"]
    every = ctx["advance_every"]
    engine = Engine(ctx["ruleset"])
    acc = alerts = 0
    newest = -math.inf
    perf = time.perf_counter
    in_advance = 0.0
    for i, it in enumerate(items, 1):
        r = validate(it.raw, it.etype, now=now, partners=PARTNERS)
        if isinstance(r, Rejection):
            continue
        acc += 1
        if r.ts > newest:
            newest = r.ts
        alerts += len(engine.process(r))
        if i % every == 0:
            t = perf()
            alerts += len(engine.advance(_advance_clock(newest)))
            in_advance += perf() - t
    t = perf()
    alerts += len(engine.advance(_advance_clock(newest)))
    in_advance += perf() - t
    return {
        "accepted": acc,
        "alerts": alerts,
        "engine": engine,
        "extra": {"advance_s": in_advance},
    }


def prepare_facts(items: list[Item], ctx: dict[str, Any]) -> None:
    now = ctx["now"]
    facts = []
    for it in items:
        r = validate(it.raw, it.etype, now=now, partners=PARTNERS)
        facts.append(None if isinstance(r, Rejection) else r)
    ctx["facts"] = facts


def phase_engine_only(items: list[Item], ctx: dict[str, Any]) -> dict[str, Any]:
    facts: list[Fact | None] = ctx.pop("facts")
    every = ctx["advance_every"]
    engine = Engine(ctx["ruleset"])
    acc = alerts = 0
    newest = -math.inf
    for i, f in enumerate(facts, 1):
        if f is None:
            continue
        acc += 1
        if f.ts > newest:
            newest = f.ts
        alerts += len(engine.process(f))
        if i % every == 0:
            alerts += len(engine.advance(_advance_clock(newest)))
    alerts += len(engine.advance(_advance_clock(newest)))
    return {"accepted": acc, "alerts": alerts, "engine": engine}


def phase_worker_path(items: list[Item], ctx: dict[str, Any]) -> dict[str, Any]:
    """The worker's ingest -> correlate -> deliver, minus Kafka and Faust: validation and
    routing (engine.routing.route_items), the routed envelope encoded and decoded
    (streams.worker.envelopes), 4 partitions each with its engine.correlate.CorrelateStage fed
    the one source's marks, one batch per `advance_every` input events."""
    now0 = ctx["now"]
    ruleset: RuleSet = ctx["ruleset"]
    router = Router(ruleset)
    policy = InterimPolicy()
    nparts = 4
    batch = ctx["advance_every"]
    clocks = SourceWatermarks(0.0, 1.0, math.inf)
    source = InputPartition("bench", 0)
    stages = {p: CorrelateStage(ruleset, [source]) for p in range(nparts)}
    acc = alerts = routed_items = 0
    out_bytes = 0

    def deliver(a: Any) -> int:
        who = recipients(a, PARTNERS, policy)
        n = 0
        for dest in who:
            res = release_json(a, dest, who, policy, now=now0, topic=alert_topic(dest))
            if res is None:
                continue
            body, audit = res
            n += len(orjson.dumps(audit))
            n += len(orjson.dumps(body))
        return n

    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        routed: dict[int, list[RoutedItem]] = defaultdict(list)
        for off, it in enumerate(chunk, start):
            r = validate(it.raw, it.etype, now=now0, partners=PARTNERS)
            if isinstance(r, Rejection):
                continue
            acc += 1
            clocks.observe(source, r.ts, now0)
            origin = Origin("bench", 0, off)
            for q, item in route_items(r, router, ruleset.rules_taking(r), nparts, now0, origin):
                routed[q].append(item)
        marks = clocks.marks(now0)
        for p in range(nparts):
            batch_in = decode_routed(encode_routed(routed.get(p, []), marks))
            routed_items += len(batch_in.items)
            out = stages[p].take(batch_in.items, batch_in.marks)
            for a, _ in out.alerts:
                alerts += 1
                out_bytes += deliver(a)
    return {
        "accepted": acc,
        "alerts": alerts,
        "engines": {p: st.engine for p, st in stages.items()},
        "extra": {"routed_items": routed_items, "alert_bytes": out_bytes},
    }


def raised_versions(
    items: list[Item], ctx: dict[str, Any], ruleset: RuleSet | None = None
) -> list[RawAlert]:
    """Every alert version validate+engine raises over the stream, in order (untimed)."""
    now = ctx["now"]
    every = ctx["advance_every"]
    engine = Engine(ruleset or ctx["ruleset"])
    out: list[RawAlert] = []
    newest = -math.inf
    for i, it in enumerate(items, 1):
        r = validate(it.raw, it.etype, now=now, partners=PARTNERS)
        if isinstance(r, Rejection):
            continue
        newest = max(newest, r.ts)
        out.extend(engine.process(r))
        if i % every == 0:
            out.extend(engine.advance(_advance_clock(newest)))
    out.extend(engine.advance(_advance_clock(newest)))
    return out


def single_rule_backlog(n: int, seed: int) -> tuple[list[Item], RuleSet]:
    """`make bench-e2e`'s single-rule backlog: `n` of bench/peers.py's detections of 10,000
    plates in event-time order, and its rule."""
    from peers import make_detections

    from engine.rulefiles import parse_rules_text
    from tests.integration.test_event_time import PLATE_RULE

    parts, _, _ = make_detections(n, seed=seed)
    records = sorted((r for part in parts for r in part), key=lambda r: r[2])
    items = [Item("detection", value, "", ts_ms / 1000) for _, value, ts_ms in records]
    return items, parse_rules_text(PLATE_RULE)


def release_runs(alerts: list[RawAlert], now: float, repeat: int) -> list[float]:
    """CPU seconds to release every alert to both countries, one fresh policy per run."""
    dests = sorted(PARTNERS)
    topics = {d: alert_topic(d) for d in dests}
    default_border()
    default_areas()

    def once() -> dict[str, Any]:
        policy = load_policy(
            REPO / "rules" / "policy.yaml", Keyring.parse(generate_keys(), source="bench")
        )
        memo = {} if ReleaseMemo is None else {"memo": ReleaseMemo()}
        gc.collect()
        _tune_gc()
        c = time.process_time()
        for a in alerts:
            for dest in dests:
                release_json(a, dest, dests, policy, now=now, topic=topics[dest], **memo)
        return {"cpu": time.process_time() - c}

    return [_in_child(once)["cpu"] for _ in range(repeat)]


# -- running -----------------------------------------------------------------------------------


def _summarise(out: dict[str, Any]) -> dict[str, Any]:
    """What a run reports back: counts, state size and per-rule stats (no live objects)."""
    res: dict[str, Any] = {
        "accepted": out.get("accepted", 0),
        "alerts": out.get("alerts", 0),
        "extra": out.get("extra", {}),
    }
    engines = [out["engine"]] if "engine" in out else list(out.get("engines", {}).values())
    if engines:
        keys = partials = evictions = 0
        per_rule: dict[str, list[int]] = defaultdict(lambda: [0] * 8)
        for e in engines:
            sizes = e.state_size()
            for rid in e.ruleset.by_id:
                k, n, ev = sizes[rid]
                keys += k
                partials += n
                evictions += ev
                st = e.stats.rules[rid]
                row = per_rule[rid]
                for i, v in enumerate(
                    (st.facts, st.late, st.hits, st.suppressed, st.alerts, k, n, ev)
                ):
                    row[i] += v
        res["state"] = (keys, partials, evictions)
        res["per_rule"] = dict(per_rule)
    return res


def _in_child(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run fn in a forked child (same memory image, nothing left behind) and return its dict.

    Every run starts from the same heap, so its time and peak RSS are not skewed by what an
    earlier run left (garbage, fragmentation, a retained engine)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(r)
            data = pickle.dumps(fn())
            with os.fdopen(w, "wb") as f:
                f.write(data)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        raise RuntimeError(f"benchmark child failed (status {status})")
    result: dict[str, Any] = pickle.loads(data)
    return result


def run_phase(
    name: str,
    fn: Callable[[list[Item], dict[str, Any]], dict[str, Any]],
    items: list[Item],
    ctx: dict[str, Any],
    repeat: int,
    prepare: Callable[[list[Item], dict[str, Any]], None] | None = None,
) -> Result:
    res = Result(name)
    res.events = len(items)

    def once() -> dict[str, Any]:
        if prepare is not None:
            prepare(items, ctx)
        gc.collect()
        before = rss_mib()
        reset_peak_rss()
        t = time.perf_counter()
        c = time.process_time()
        out = fn(items, ctx)
        cpu = time.process_time() - c
        dt = time.perf_counter() - t
        peak = peak_rss_mib()
        summary = _summarise(out)
        engines = [out["engine"]] if "engine" in out else list(out.get("engines", {}).values())
        if engines:  # what one whole-state snapshot costs (the worker writes them periodically)
            t = time.perf_counter()
            size = sum(len(e.snapshot({"applied": 0})) for e in engines)
            summary["snapshot"] = (time.perf_counter() - t, size)
        del engines
        summary.update(seconds=dt, cpu=cpu, rss_before=before, peak_rss=peak, rss_after=rss_mib())
        return summary

    for _ in range(repeat):
        out = _in_child(once)
        res.times.append(out["seconds"])
        res.cpu.append(out["cpu"])
        res.rss_before = out["rss_before"]
        res.peak_rss = max(res.peak_rss, out["peak_rss"])
        res.rss_after = out["rss_after"]
        res.accepted = out["accepted"]
        res.alerts = out["alerts"]
        res.extra = out["extra"]
        res.state = out.get("state")
        if "per_rule" in out:
            res.extra["per_rule"] = out["per_rule"]
        if "snapshot" in out:
            res.extra["snapshot"] = out["snapshot"]
        print(f"  {name}: {out['seconds']:.2f} s", file=sys.stderr, flush=True)
    return res


def traced_pass(items: list[Item], ctx: dict[str, Any]) -> tuple[float, float]:
    """(peak, retained) MiB of Python allocations during validate+engine, under tracemalloc."""

    def once() -> dict[str, Any]:
        gc.collect()
        tracemalloc.start()
        out = phase_validate_engine(items, ctx)
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del out
        return {"peak": peak / 2**20, "current": current / 2**20}

    res = _in_child(once)
    return res["peak"], res["current"]


def profile_pass(items: list[Item], ctx: dict[str, Any], top: int, out: Path | None) -> str:
    """cProfile of one validate+engine pass: top functions by own and cumulative time."""

    def once() -> dict[str, Any]:
        prof = cProfile.Profile()
        gc.collect()
        prof.enable()
        phase_validate_engine(items, ctx)
        prof.disable()
        if out is not None:
            prof.dump_stats(str(out))
        buf = io.StringIO()
        st = pstats.Stats(prof, stream=buf)
        st.sort_stats("tottime").print_stats(top)
        st.sort_stats("cumulative").print_stats(top)
        st.sort_stats("tottime").print_callers(8)
        return {"text": buf.getvalue()}

    text: str = _in_child(once)["text"]
    text = text.replace(str(REPO) + "/", "")
    return re.sub(r"\S*/(site-packages|lib/python3\.\d+)/", "", text)


def machine() -> str:
    return (
        f"{cpus_and_memory()}; "
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"orjson {orjson.__version__}, pydantic {_version('pydantic')}"
    )


def _version(mod: str) -> str:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:
        return "?"


def fmt_int(n: float) -> str:
    return f"{n:,.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--keys", type=int, default=10_000, help="active plates/serials/person refs")
    ap.add_argument(
        "--event-rate",
        type=float,
        default=50.0,
        help="events per second of event time (200k events at 50/s = 67 min of event time)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per phase")
    ap.add_argument("--advance-every", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--scenario-share", type=float, default=0.02)
    ap.add_argument("--rules", type=Path, default=REPO / "rules")
    ap.add_argument(
        "--engine-only", action="store_true", help="also time the engine on pre-validated facts"
    )
    ap.add_argument(
        "--worker-path",
        action="store_true",
        help="also time the worker's three hops without Kafka (slow: ~4x validate+engine)",
    )
    ap.add_argument(
        "--tracemalloc", action="store_true", help="one more validate+engine pass, traced"
    )
    ap.add_argument(
        "--release",
        action="store_true",
        help="also time releasing every alert version to both countries under the policy",
    )
    ap.add_argument(
        "--release-backlog",
        type=int,
        default=200_000,
        help="detections in the single-rule backlog that --release also times",
    )
    ap.add_argument("--profile", action="store_true", help="cProfile validate+engine once")
    ap.add_argument("--profile-top", type=int, default=30)
    ap.add_argument("--profile-out", type=Path, help="write the cProfile stats here")
    ap.add_argument("--all", action="store_true", help="every optional phase and the profile")
    args = ap.parse_args(argv)
    if args.all:
        args.engine_only = args.worker_path = args.tracemalloc = args.release = args.profile = True

    code = tree_state()  # what was imported: the tree may change while this runs
    ruleset = load_rules([args.rules])
    now = time.time()
    span = args.events / args.event_rate
    t0 = now - span - 120.0  # the stream ends just before "now": nothing is in the future
    print(
        f"generating {args.events:,} events, {args.keys:,} keys, "
        f"{span / 60:.0f} min of event time...",
        file=sys.stderr,
        flush=True,
    )
    t = time.perf_counter()
    items = generate(
        args.events,
        keys=args.keys,
        t0=t0,
        event_rate=args.event_rate,
        seed=args.seed,
        scenario_share=args.scenario_share,
    )
    gen_s = time.perf_counter() - t
    by_type: dict[str, int] = defaultdict(int)
    for it in items:
        by_type[it.etype] += 1
    avg_bytes = sum(len(it.raw) for it in items) / len(items)
    ctx: dict[str, Any] = {"now": now, "ruleset": ruleset, "advance_every": args.advance_every}
    gc.collect()
    gc.freeze()  # the stream and modules: never scanned again by the collector
    base_rss = rss_mib()

    phases: list[Result] = []
    r = args.repeat
    phases.append(run_phase("decode (orjson.loads)", phase_decode, items, ctx, r))
    phases.append(run_phase("decode+validate", phase_validate, items, ctx, r))
    phases.append(run_phase("validate+engine (full pack)", phase_validate_engine, items, ctx, r))
    if args.engine_only:
        phases.append(
            run_phase(
                "engine only (pre-validated)",
                phase_engine_only,
                items,
                ctx,
                r,
                prepare=prepare_facts,
            )
        )
    if args.worker_path:
        phases.append(run_phase("worker CPU path, no Kafka", phase_worker_path, items, ctx, 1))
    traced = traced_pass(items, ctx) if args.tracemalloc else None
    released: dict[str, tuple[list[RawAlert], list[float]]] = {}
    if args.release:
        versions = raised_versions(items, ctx)
        released[f"generated stream, {len(ruleset)} rules"] = (
            versions,
            release_runs(versions, now, r),
        )
        single, plate_rule = single_rule_backlog(args.release_backlog, args.seed)
        versions = raised_versions(single, ctx, plate_rule)
        released["single-rule backlog"] = versions, release_runs(versions, now, r)

    # -- report --------------------------------------------------------------------------------
    print()
    print("## Engine benchmark")
    print()
    print(f"- machine: {machine()}")
    print(f"- code: {code}")
    types = ", ".join(f"{k} {v:,}" for k, v in sorted(by_type.items()))
    print(
        f"- stream: {len(items):,} events ({types}), {avg_bytes:.0f} B/event on average, "
        f"{args.keys:,} active plates / serials / person refs, {span / 60:.0f} min of event "
        f"time ({args.event_rate:g} events/s), scenario share {args.scenario_share:g}, "
        f"seed {args.seed}; generated in {gen_s:.1f} s"
    )
    print(
        f"- rules: {len(ruleset)} ({', '.join(r.id for r in ruleset.rules)}); advance every "
        f"{args.advance_every} events; {r} timed runs per phase"
        f"{' (worker path: 1)' if args.worker_path else ''}, each in a "
        "fresh fork of the same process; one core, single thread"
    )
    print(f"- RSS with the stream generated, before any phase: {base_rss:.0f} MiB")
    print()
    print(
        "| phase | events/s (median) | events/s (best) | µs/event (median) | CPU µs/event "
        "(median) | accepted | alerts | state: keys / facts held / evicted | peak RSS MiB | "
        "peak - start MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for p in phases:
        state = f"{p.state[0]:,} / {p.state[1]:,} / {p.state[2]:,}" if p.state else "-"
        print(
            f"| {p.name} | {fmt_int(p.events / p.median)} | {fmt_int(p.events / p.best)} | "
            f"{p.median / p.events * 1e6:.1f} | "
            f"{statistics.median(p.cpu) / p.events * 1e6:.1f} | {p.accepted:,} | {p.alerts:,} | "
            f"{state} | "
            f"{p.peak_rss:.0f} | {p.peak_rss - p.rss_before:.0f} |"
        )
    print()
    if traced is not None:
        print(
            f"tracemalloc over one validate+engine pass: peak {traced[0]:.0f} MiB of Python "
            f"allocations, {traced[1]:.0f} MiB still held at the end (the engine's state: "
            "facts with their pydantic models and JSON documents)."
        )
        print()
    dec, vd, ve = phases[0], phases[1], phases[2]
    print(
        f"Per event (medians): JSON decode {dec.median / dec.events * 1e6:.1f} µs, "
        f"pydantic validation and checks {(vd.median - dec.median) / vd.events * 1e6:.1f} µs, "
        f"engine {(ve.median - vd.median) / ve.events * 1e6:.1f} µs. "
        f"Target 100,000 events/s = 10 µs/event: validate+engine runs at "
        f"{ve.events / ve.median / 1000:.1f}k events/s "
        f"({ve.events / ve.median / 100_000:.0%} of target)."
    )
    adv = ve.extra.get("advance_s")
    if adv is not None:
        print(
            f"Of validate+engine (last run), engine.advance() (watermark, absence decisions and "
            f"the full-state expiry scan every 30 s of event time) took {adv:.2f} s "
            f"({adv / ve.times[-1]:.0%})."
        )
    snap = ve.extra.get("snapshot")
    if snap is not None:
        print(
            f"Engine.snapshot() of the final state: {snap[0]:.2f} s, {snap[1] / 2**20:.1f} MiB "
            "compressed: the cost of one whole-state snapshot at this state size (what the "
            "releases before the per-key changelog wrote; bench/changelog_bench.py compares)."
        )
    wp = next((p for p in phases if p.name.startswith("worker")), None)
    if wp is not None:
        routed = wp.extra.get("routed_items", 0)
        print(
            f"Worker CPU path: {routed:,} routed copies ({routed / max(1, wp.accepted):.2f} per "
            f"event), {wp.extra.get('alert_bytes', 0) / 2**20:.1f} MiB of released alerts and "
            "audit records."
        )
    if released:
        print()
        print(
            "Release of every alert version to both countries under rules/policy.yaml "
            f"({'with' if ReleaseMemo is not None else 'without'} the release memo):"
        )
        print()
        print("| stream | alert versions | evidence per version | CPU µs per version (median) "
              "| runs |")  # fmt: skip
        print("|---|---:|---:|---:|---|")
        for name, (versions, cpu) in released.items():
            n = max(1, len(versions))
            evidence = sum(len(a.evidence) for a in versions) / n
            runs = ", ".join(f"{c / n * 1e6:.1f}" for c in cpu)
            print(
                f"| {name} | {len(versions):,} | {evidence:.1f} | "
                f"{statistics.median(cpu) / n * 1e6:.1f} | {runs} |"
            )
        print()
    per_rule: dict[str, list[int]] | None = ve.extra.get("per_rule")
    if per_rule:
        print()
        print("Per rule, validate+engine (last run):")
        print()
        print("| rule | facts | late | hits | suppressed | alerts | keys | facts held | evicted |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for rid, row in per_rule.items():
            print(f"| {rid} | " + " | ".join(f"{v:,}" for v in row) + " |")
    print()
    import geo_bench  # bench/: the geography's cost per call (docs/performance.md)

    print(geo_bench.render(geo_bench.measure(), 20_000, len(default_border().line)))
    sys.stdout.flush()
    if args.profile:
        print()
        print("## cProfile of validate+engine (one pass; times inflated by the profiler)")
        print()
        print("```")
        print(profile_pass(items, ctx, args.profile_top, args.profile_out).rstrip())
        print("```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
