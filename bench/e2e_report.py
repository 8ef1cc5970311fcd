"""The Markdown report of bench/e2e_bench.py: each figure as the median of the runs and, with
more than one, their spread: `median (min-max)`."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from peers import PEER_TITLES, PeerResult, machine_description
from provenance import tree_state

if TYPE_CHECKING:
    from e2e_bench import Drain, Options, RateRow, Run
    from scrape import ScrapeStats

Show = Callable[[float], str]
WORKER = "fusion"
WORKER_TITLE = "this worker, the one rule, committed (`streams.cli worker`)"


def num(v: float) -> str:
    return f"{v:,.0f}"


def two(v: float) -> str:
    return f"{v:.2f}"


def one(v: float) -> str:
    return f"{v:.1f}"


def ratio(v: float) -> str:
    return f"{v:.2f}x"


def seconds(v: float) -> str:
    return f"{v:,.2f}"


def spread(values: Sequence[float], show: Show = num) -> str:
    """`median (min-max)`; the value alone for one run; `-` for none."""
    if not values:
        return "-"
    mid = show(statistics.median(values))
    return mid if len(values) == 1 else f"{mid} ({show(min(values))}-{show(max(values))})"


def pct(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))]


def runs_note(done: int, runs: int) -> str:
    return "" if done == runs else f" ({done} of {runs} runs)"


# -- one rule: the peers and the worker ---------------------------------------------------


class Fig(NamedTuple):
    """One consumer's figures in one run."""

    eps: float
    cpu_us: float  # CPU µs per event
    cores: float
    alerts: int
    startup_s: float


def peer_fig(r: PeerResult) -> Fig:
    return Fig(r.eps, r.cpu_cores * r.seconds / r.events * 1e6, r.cpu_cores, r.windows, r.startup_s)


def drain_fig(d: Drain) -> Fig:
    return Fig(d.eps, d.cpu_us_per_event, d.worker_cores, d.alerts, d.startup_s)


def run_figs(run: Run) -> dict[str, Fig]:
    figs = {r.name: peer_fig(r) for r in run.peers if r.ok}
    if run.single is not None:
        figs[WORKER] = drain_fig(run.single)
    return figs


def quix_of(figs: dict[str, Fig]) -> Fig | None:
    return figs.get("quix") or figs.get("quix-nochangelog")


def one_rule_section(runs: list[Run]) -> list[str]:
    info = next((r.info for r in runs if r.info is not None), None)
    if info is None or not any(r.peers or r.single for r in runs):
        return []
    per_run = [run_figs(r) for r in runs]
    names = list(dict.fromkeys(p.name for r in runs for p in r.peers))
    names += [WORKER] if any(r.single for r in runs) else []
    out = [
        "",
        f"### One rule: 5 reads of one plate within 10 minutes ({info.events:,} detections in "
        f"one topic of {info.partitions} partitions, the same for all)",
        "",
        "| consumer | events/s | ratio to Quix | CPU µs/event | CPU/event vs Quix | CPU cores "
        "| alerts/windows | start-up s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    out += [one_rule_row(name, per_run) for name in names]
    out += failures(runs)
    out += [
        "",
        "Ratios to Quix Streams (with its changelog) are taken within each run. Peers: first -> "
        "last message, in the consumer's process; they count tumbling 10-minute windows "
        f"({info.expected_windows:,} reach 5). The worker: first input commit -> every stage "
        "committed; its rule counts a sliding 10 minutes, suppressed 10 minutes per plate, so "
        "its alerts differ. CPU: the consumer's process over the same span.",
    ]
    return out + worker_vs_quix(per_run)


def one_rule_row(name: str, per_run: list[dict[str, Fig]]) -> str:
    figs = [f[name] for f in per_run if name in f]
    pairs = [(f[name], q) for f in per_run if name in f and (q := quix_of(f)) is not None]
    title = PEER_TITLES.get(name, WORKER_TITLE) + runs_note(len(figs), len(per_run))
    if not figs:
        return f"| {title} | failed | - | - | - | - | - | - |"
    return (
        f"| {title} | {spread([f.eps for f in figs])} "
        f"| {spread([f.eps / q.eps for f, q in pairs], ratio)} "
        f"| {spread([f.cpu_us for f in figs], one)} "
        f"| {spread([f.cpu_us / q.cpu_us for f, q in pairs if q.cpu_us], ratio)} "
        f"| {spread([f.cores for f in figs], two)} | {spread([f.alerts for f in figs])} "
        f"| {spread([f.startup_s for f in figs], one)} |"
    )


def failures(runs: list[Run]) -> list[str]:
    notes = [f"- {r.name}: {r.error.splitlines()[0]}" for run in runs for r in run.peers if r.error]
    notes += [f"- {r.name}: {'; '.join(r.notes)}" for run in runs for r in run.peers if r.notes]
    return ["", *dict.fromkeys(notes)] if notes else []


def worker_vs_quix(per_run: list[dict[str, Fig]]) -> list[str]:
    pairs = [(f[WORKER], q) for f in per_run if WORKER in f and (q := quix_of(f)) is not None]
    if not pairs:
        return []
    return [
        "",
        f"**The worker on the one rule vs Quix Streams:** "
        f"{spread([w.eps / q.eps for w, q in pairs], ratio)} its events/s, "
        f"{spread([w.cpu_us / q.cpu_us for w, q in pairs if q.cpu_us], ratio)} its CPU per event.",
    ]


# -- backlogs ------------------------------------------------------------------------------


def drain_row(label: str, drains: list[Drain]) -> str:
    cpus = os.cpu_count()
    return (
        f"| {label} | {spread([d.eps for d in drains])} "
        f"| {spread([d.eps_last_alert for d in drains])} | {spread([d.alerts for d in drains])} "
        f"| {spread([d.worker_cores for d in drains], two)} "
        f"| {spread([d.cpu_us_per_event for d in drains], one)} "
        f"| {spread([max(d.peak_rss_mib) for d in drains])} "
        f"| {spread([d.startup_s for d in drains], one)} "
        f"| {spread([d.usage[1] for d in drains], two)} "
        f"| {spread([d.usage[2] for d in drains], two)} of {cpus} |"
    )


DRAIN_HEAD = [
    "| input | committed events/s | to last alert, events/s | alerts | worker CPU cores | "
    "CPU µs/event | peak RSS MiB | start-up s | broker CPU cores | machine busy |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]


def backlog_section(runs: list[Run]) -> list[str]:
    drains = [r.backlog for r in runs if r.backlog is not None]
    if not drains:
        return []
    return [
        "",
        "### Full default pack, backlog, one worker",
        "",
        *DRAIN_HEAD,
        drain_row(drains[0].name + runs_note(len(drains), len(runs)), drains),
        "",
        "committed events/s: first input commit -> every input and fusion.routed partition "
        "committed to its end. To last alert: first input commit -> the newest alert's record.",
    ]


# -- 1 vs 2 workers ------------------------------------------------------------------------


def each_worker(drains: list[Drain], attr: str, show: Show) -> str:
    """Worker by worker (in the order they were started): each one's spread over the runs."""
    count = min(len(getattr(d, attr)) for d in drains)
    return "; ".join(spread([getattr(d, attr)[i] for d in drains], show) for i in range(count))


def scale_row(drains: list[Drain]) -> str:
    return (
        f"| {len(drains[0].cores)} | {spread([d.eps for d in drains])} "
        f"| {spread([d.eps_last_alert for d in drains if d.eps_last_alert])} "
        f"| {spread([d.alerts for d in drains])} "
        f"| {each_worker(drains, 'cores', two)} | {each_worker(drains, 'peak_rss_mib', num)} "
        f"| {spread([d.cpu_us_per_event for d in drains], one)} "
        f"| {spread([d.startup_s for d in drains], one)} "
        f"| {spread([d.usage[2] for d in drains], two)} of {os.cpu_count()} |"
    )


def scale_section(runs: list[Run]) -> list[str]:
    done = [r.scale for r in runs if len(r.scale) == 2]
    if not done:
        return []
    return [
        "",
        f"### 1 vs 2 workers in one group: the full-pack backlog of {done[0][0].events:,} events"
        + runs_note(len(done), len(runs)),
        "",
        "| workers | committed events/s | to last alert, events/s | alerts | CPU cores, each "
        "worker | peak RSS MiB, each worker | CPU µs/event, all workers | start-up s | machine "
        "busy |",
        "|---:|---:|---:|---:|---|---|---:|---:|---:|",
        scale_row([s[0] for s in done]),
        scale_row([s[1] for s in done]),
        "",
        f"2 workers / 1: {spread([s[1].eps / s[0].eps for s in done if s[0].eps], ratio)} "
        "the committed events/s, within each run. The same input for both (same seed), each on "
        "fresh topics, published once the group has settled (every worker ready, the routed "
        "partitions shared); start-up = spawn -> first input commit, so it includes that wait.",
        *alerts_differ(done),
    ]


def alerts_differ(done: list[list[Drain]]) -> list[str]:
    odd = [
        f"run {k + 1}: {one_.alerts:,} with 1 worker, {two_.alerts:,} with 2"
        for k, (one_, two_) in enumerate(done)
        if one_.alerts != two_.alerts
    ]
    if not odd:
        return []
    return [
        "",
        f"**Other alerts from the same input: {'; '.join(odd)}.** The workers read the backlog "
        "while it is published, so events reach them out of event-time order across "
        "partitions, and rules may then decide otherwise than on a preloaded backlog.",
    ]


# -- fixed rates ---------------------------------------------------------------------------


def kept(rows: list[RateRow]) -> str:
    yes = sum(r.kept_up for r in rows)
    return "yes" if yes == len(rows) else "no" if not yes else f"{yes} of {len(rows)} runs"


def lat(rows: list[RateRow], absent: bool, q: float) -> str:
    per_run = [r.lat_absent if absent else r.lat for r in rows]
    return spread([pct(v, q) for v in per_run if v], seconds)


def rate_row(rows: list[RateRow]) -> str:
    cpus = os.cpu_count()
    event_driven = " | ".join(lat(rows, False, q) for q in (50, 95, 99))
    absent = " | ".join(lat(rows, True, q) for q in (50, 99))
    return (
        f"| {rows[0].tag} | {spread([r.achieved for r in rows])} "
        f"| {spread([len(r.lat) for r in rows])} | {event_driven} "
        f"| {spread([len(r.lat_absent) for r in rows])} | {absent} "
        f"| {spread([r.usage[0] for r in rows], two)} "
        f"| {spread([r.cpu_us_per_event for r in rows], one)} "
        f"| {spread([r.peak_rss_mib for r in rows])} "
        f"| {spread([r.unread_end for r in rows])} / {spread([r.unread_most for r in rows])} "
        f"| {spread([r.lag_metric_most for r in rows if r.lag_metric_most >= 0])} | {kept(rows)} "
        f"| {spread([r.producer_cores for r in rows], two)} "
        f"| {spread([r.usage[1] for r in rows], two)} "
        f"| {spread([r.usage[2] for r in rows], two)} of {cpus} |"
    )


def rates_section(runs: list[Run], absent_rules: Sequence[str]) -> list[str]:
    done = [r.rates for r in runs if r.rates is not None]
    if not done:
        return []
    drained = [d.drained_s for d in done if d.drained_s is not None]
    out = [
        "",
        "### Fixed rates, default pack, one worker: event-to-alert latency"
        + runs_note(len(done), len(runs)),
        "",
        "| rate | achieved events/s | alerts | p50 s | p95 s | p99 s | waiting on an absence: "
        "alerts | their p50 s | their p99 s | worker CPU cores | CPU µs/event | peak RSS MiB "
        "| uncommitted at end / most | lag metric, most | kept up | producer CPU cores "
        "| broker CPU cores | machine busy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    out += [rate_row([d.rows[i] for d in done]) for i in range(len(done[0].rows))]
    return [
        *out,
        "",
        "Latency: the first version of each alert, its record's timestamp - when its newest "
        "evidence event was handed to the producer. p50/p95/p99 count every rule but those "
        f"that wait on an absence by design ({', '.join(absent_rules)}: a sequence with an "
        "absent step decides once the watermark has passed its `within`), given apart. "
        f"The worker committed everything {spread(drained, one)} s after the last send"
        + ("" if len(drained) == len(done) else f"; within 300 s in {len(drained)} of {len(done)}")
        + f". Kept up = never more than {done[0].kept_up_s:g} s of input uncommitted (input and "
        "fusion.routed messages, from the group's committed offsets, sampled every 0.5 s; each "
        "stage commits every 1 s, the correlate stage only after a snapshot). Lag metric: the "
        "worker's own fusion_consumer_lag in its last scrape (what is on the broker past its "
        "last fetch: it does not see a backlog its fetches have not reached).",
    ]


# -- scrapes -------------------------------------------------------------------------------


def scraped(runs: list[Run]) -> dict[str, list[ScrapeStats]]:
    """Per phase, each run's scrapes (of all its workers)."""
    out: dict[str, list[ScrapeStats]] = {}
    for run in runs:
        for phase, result in (("single", run.single), ("backlog", run.backlog)):
            if result is not None and result.scrape is not None:
                out.setdefault(phase, []).append(result.scrape)
        if run.rates is not None and run.rates.scrape is not None:
            out.setdefault("rates", []).append(run.rates.scrape)
        for d in run.scale:
            if d.scrape is not None:
                out.setdefault(f"scale, {len(d.cores)} worker(s)", []).append(d.scrape)
    return out


def scrape_row(phase: str, stats: list[ScrapeStats]) -> str:
    last = [s.largest for s in stats if s.largest is not None]
    return (
        f"| {phase} | {spread([len(s.scrapes) for s in stats])} "
        f"| {spread([s.failed for s in stats])} | {spread([s.median_ms for s in stats], one)} "
        f"| {spread([s.max_ms for s in stats], one)} | {spread([x.size for x in last])} "
        f"| {spread([x.series for x in last])} "
        f"| {spread([s.share * 100 for s in stats], two)} % |"
    )


def scrape_section(runs: list[Run], every: float) -> list[str]:
    if every <= 0:
        return ["", "No scrapes of /metrics (--scrape-every 0)."]
    out = [
        "",
        f"### The cost of a Prometheus scrape of /metrics every {every:g} s",
        "",
        "| phase | scrapes | failed | median ms | max ms | bytes | series | share of the "
        "worker's time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    out += [scrape_row(phase, stats) for phase, stats in scraped(runs).items()]
    return [
        *out,
        "",
        "Per worker: bytes and series of its last scrape, the larger of two workers' (series: "
        "lines that are not comments); share = the scrapes' summed wall time / the phase's, "
        "an upper bound (a scrape also waits for the worker's interpreter lock). Throughput "
        "without scrapes: run again with --scrape-every 0.",
    ]


# -- the whole -----------------------------------------------------------------------------


def report(
    o: Options, runs: list[Run], absent_rules: Sequence[str], total_s: float, own_cpu_s: float
) -> str:
    scrapes = f"every {o.scrape_every:g} s" if o.scrape_every > 0 else "none"
    out = [
        "## End to end (bench/e2e_bench.py" + (" --quick)" if o.quick else ")"),
        "",
        f"- machine: {machine_description()}",
        f"- code: {tree_state()}",
        f"- {len(runs)} run(s) of the phases {', '.join(o.phases)}, each on fresh topics and "
        f"groups: the median (min-max) of the runs; whole benchmark {total_s:.0f} s; this "
        f"script's process (its readers, the scrapes, the aiokafka peer) used "
        f"{own_cpu_s / total_s:.2f} cores on average",
        f"- scrapes of each worker's /metrics: {scrapes}; the broker, the worker or peer, the "
        "producer and this script share the machine's CPUs",
    ]
    out += one_rule_section(runs)
    out += backlog_section(runs)
    out += rates_section(runs, absent_rules)
    out += scale_section(runs)
    out += scrape_section(runs, o.scrape_every)
    return "\n".join(out)
