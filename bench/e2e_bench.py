"""End-to-end benchmark: the peers and `fusion worker` on one broker, in one run.

    .venv/bin/python bench/e2e_bench.py [--quick] [--runs 3] [--scrape-every 1]
        [--phases peers,single,backlog,rates,scale]

One broker (peers.start_broker: free ports, folder .broker-e2e/, wiped at the end). The phases
run --runs times (3; --quick 1), run after run, each run on fresh topics and consumer groups;
the report gives each figure as the median of the runs and their spread (min-max).

  peers    one topic of 4 partitions preloaded with N detections (peers.apreload, a fresh
           topic each run); a plain aiokafka consumer, a Faust agent and Quix Streams run the
           rule "5 or more reads of one plate within 10 minutes" over it (peers.arun_peers).
  single   one worker on that same topic with that rule only (FUSION_RULES_PATH: a temp dir).
  backlog  100,000 simulator events over the past 2 h on the input topics (4 partitions each,
           each in event-time order); one worker, the default rule pack.
  rates    a producer process publishes simulator events with occurred_at = now: a 5 s warm-up,
           then 1,000/s and 10,000/s for 60 s each; one worker, the default pack; then up to
           300 s for the worker to commit everything (alerts still count meanwhile).
  scale    the backlog phase's input (same seed) consumed by 1 worker, then on fresh topics by
           2 worker processes in one group, each time published once the group has settled
           (every worker ready, the partitions shared): committed events/s overall, and each
           worker's CPU cores and peak RSS.

Workers are started as a user starts one, `python -m streams.cli worker` (what `fusion worker`
runs), through the integration tests' harness (tests/integration/conftest.py: a Lab per phase
and run, its topics made by `streams.cli topics`, and its Worker processes), with every setting
at its default except these, which point it at this run's broker and topics (`user_env`; any
FUSION_ variable of the calling shell is dropped, and so are the tests' overrides, such as
their 0.5 s snapshot interval):

  FUSION_BOOTSTRAP_SERVERS          the broker this script started
  FUSION_APP_ID                     a group of its own per phase and run (fresh offsets)
  FUSION_TOPIC_*, FUSION_ALERT_TOPIC_PREFIX, FUSION_TRIAGE_TOPIC_PREFIX
                                    topics of their own per phase and run
  FUSION_PSEUDONYM_KEYS_FILE        keys written by the Lab: the policy pseudonymises, and a
                                    worker has no keys of its own (a user must configure some)
  FUSION_WEB_PORT, FUSION_METRICS_PORT  free ports (Lab.worker), so runs never collide
  FUSION_RULES_PATH                 the single phase only: a folder holding that one rule

While a worker runs, a thread scrapes its /metrics every --scrape-every seconds (1; 0: never)
as Prometheus would (bench/scrape.py): each scrape timed and sized, and its cost estimated as
the scrapes' summed time over the phase's. Compare throughput with --scrape-every 0.

committed events/s = events / (first input commit seen -> every input partition committed to
its end, then every fusion.routed partition to its end as of that moment; the group's offsets
polled every 0.2 s; the first commit follows the first fetch by up to the 1 s commit interval).
"to last alert" ends at the newest alert's record timestamp instead. Latency = the record
timestamp (set by the worker's producer) of an alert's first version - when the newest
evidence event was handed to the producer; rules that wait on an absence by design are given
apart. CPU = utime+stime from /proc/<pid>/stat over the same span (CPU µs/event = CPU seconds /
events; the peers measure their own the same way); peak RSS = VmHWM (backlogs) or the most
VmRSS sampled every 0.5 s (rate steps).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "bench"), str(REPO)]

from e2e_report import report  # noqa: E402
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition  # noqa: E402
from peers import (  # noqa: E402
    ALL_PEERS,
    PeerResult,
    PreloadInfo,
    apreload,
    arun_peers,
    log,
    machine_ticks,
    start_broker,
    stop_broker,
)
from scrape import Scraper, ScrapeStats, metric_sum  # noqa: E402

from streams.tools.simulator import Simulator  # noqa: E402
from tests.integration.conftest import INPUT_TOPIC_SETTINGS, Lab, Worker  # noqa: E402
from tests.integration.test_event_time import PLATE_RULE as SINGLE_RULE  # noqa: E402

PARTS = 4  # input and internal partitions (the settings' defaults)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PHASES = ("peers", "single", "backlog", "rates", "scale")
POINTERS = ("FUSION_BOOTSTRAP_SERVERS", "FUSION_APP_ID", "FUSION_PSEUDONYM_KEYS_FILE")
TOPIC_KEYS = ("FUSION_TOPIC_", "FUSION_ALERT_TOPIC_PREFIX", "FUSION_TRIAGE_TOPIC_PREFIX")
# Kept up: never more than this many seconds of input uncommitted (input + fusion.routed
# messages): each stage commits every 1 s, the correlate stage only after a snapshot (2 s
# apart by default).
KEPT_UP_S = 5.0
Plan = list[tuple[str, float, float]]  # (step, events/s, seconds)


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    f = raw[raw.rindex(")") + 2 :].split()
    return (int(f[11]) + int(f[12])) / CLK_TCK


def status_mib(pid: int, key: str) -> float:
    """A memory line of /proc/<pid>/status (VmRSS, VmHWM), MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Snap(NamedTuple):
    """The workers' and the broker's CPU, the machine's ticks, the workers' memory and lag."""

    t: float
    workers_cpu: tuple[float, ...]
    broker_cpu: float
    ticks: tuple[int, int]
    rss: float = 0.0  # of all the workers
    unread: float = 0.0  # Offsets.unread
    lag_metric: float = -1.0  # the workers' fusion_consumer_lag (-1: not scraped)

    @staticmethod
    def take(
        workers: Sequence[Worker], broker_pid: int, unread: float = 0.0, lag_metric: float = -1.0
    ) -> Snap:
        pids = [w.proc.pid for w in workers]
        rss = sum(status_mib(pid, "VmRSS") for pid in pids)
        cpu = tuple(cpu_s(pid) for pid in pids)
        return Snap(time.time(), cpu, cpu_s(broker_pid), machine_ticks(), rss, unread, lag_metric)

    def cores(self, later: Snap) -> list[float]:
        """Each worker's cores from this snap to `later`."""
        dt = max(later.t - self.t, 1e-9)
        return [(b - a) / dt for a, b in zip(self.workers_cpu, later.workers_cpu, strict=True)]

    def usage(self, later: Snap) -> tuple[float, float, float]:
        """The workers' cores, the broker's and CPUs busy machine-wide from this snap to
        `later`."""
        dt = max(later.t - self.t, 1e-9)
        busy, total = (later.ticks[i] - self.ticks[i] for i in (0, 1))
        broker = (later.broker_cpu - self.broker_cpu) / dt
        return sum(self.cores(later)), broker, (os.cpu_count() or 1) * busy / max(1, total)


def user_env(lab_env: dict[str, str]) -> dict[str, str]:
    """This process's environment without any FUSION_ setting, plus those of the Lab that
    point a worker at its broker, group, topics and keys (the rest stays at its default)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUSION_")}
    return env | {k: v for k, v in lab_env.items() if k in POINTERS or k.startswith(TOPIC_KEYS)}


@dataclass(frozen=True)
class Bench:
    """What every phase runs on: the broker, a folder, the limits, the scrape interval."""

    bootstrap: str
    broker_pid: int
    tmp: Path
    timeout: float
    scrape_every: float  # seconds; 0: no scrapes

    def lab(self, name: str, **env: str) -> Lab:
        """The tests' Lab (its topics made by `streams.cli topics`, its folder new), its
        workers given only `user_env` and `env`."""
        lab = Lab(self.bootstrap, Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.tmp)), name)
        lab.env = user_env(lab.env) | env
        return lab

    def scrapers(self, workers: Sequence[Worker]) -> list[Scraper]:
        """A scraper of each worker's /metrics, started (none with scrapes off)."""
        if self.scrape_every <= 0:
            return []
        out = [Scraper(w.metrics_port, self.scrape_every) for w in workers]
        for s in out:
            s.start()
        return out


def stop_scrapers(scrapers: list[Scraper]) -> ScrapeStats | None:
    """The scrapes of a phase's workers together (None with scrapes off); idempotent."""
    return ScrapeStats.merge([s.stop() for s in scrapers]) if scrapers else None


class Offsets:
    """The worker group's committed offsets against the ends of its input and routed topics."""

    def __init__(self, lab: Lab) -> None:
        self.group = lab.env["FUSION_APP_ID"]
        self.admin = KafkaAdminClient(bootstrap_servers=lab.bootstrap, client_id="e2e-offsets")
        self.consumer = KafkaConsumer(bootstrap_servers=lab.bootstrap, enable_auto_commit=False)
        inputs = [lab.env[f"FUSION_TOPIC_{v}"] for v in INPUT_TOPIC_SETTINGS]
        inputs += [f"{lab.env['FUSION_TOPIC_AUTHORIZATIONS']}.{cc}" for cc in ("us", "mx")]
        self.inputs = [TopicPartition(t, p) for t in inputs for p in range(PARTS)]
        self.routed = [TopicPartition(lab.env["FUSION_TOPIC_ROUTED"], p) for p in range(PARTS)]

    def committed(self) -> dict[TopicPartition, int]:
        try:
            got = self.admin.list_group_offsets(self.group).get(self.group, {})
        except Exception:  # no group yet, coordinator loading
            return {}
        return {tp: om.offset for tp, om in got.items() if om is not None and om.offset >= 0}

    def ends(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict(self.consumer.end_offsets(tps))

    def unread(self) -> float:
        """Messages of the input and routed topics the group has not committed yet."""
        c, ends = self.committed(), self.ends(self.inputs + self.routed)
        return float(sum(max(0, e - c.get(tp, 0)) for tp, e in ends.items()))

    def drain(
        self, workers: Sequence[Worker], broker_pid: int, timeout: float
    ) -> tuple[Snap, Snap]:
        """Wait until every input partition is committed to its end, then every routed
        partition to its end as of that moment: (snap at the first input commit, at the end)."""
        ends = self.ends(self.inputs)
        first: Snap | None = None
        target: dict[TopicPartition, int] | None = None
        deadline = time.monotonic() + timeout
        while True:
            for w in workers:
                if w.proc.poll() is not None:
                    raise RuntimeError(f"a worker exited:\n{w.logs()}")
            if time.monotonic() > deadline:
                logs = "\n".join(w.logs() for w in workers)
                raise TimeoutError(f"not all committed within {timeout:.0f} s:\n{logs}")
            c, snap = self.committed(), Snap.take(workers, broker_pid)
            if first is None and any(c.get(tp, 0) > 0 for tp in self.inputs):
                first = snap
            if target is None and all(c.get(tp, 0) >= e for tp, e in ends.items()):
                target = self.ends(self.routed)
            if target is not None and all(c.get(tp, 0) >= e for tp, e in target.items()):
                return first or snap, snap
            time.sleep(0.2)

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()


class Seen(NamedTuple):
    record_ts: float  # of the first delivery of its first version
    rule_id: str
    evidence: list[str]  # event ids


def absence_rules(folder: Path = REPO / "rules") -> frozenset[str]:
    """Rules that wait on an absence by design: a sequence with an `absent` step decides only
    once the watermark has passed the step's `within`, so its latency is that wait."""
    out: set[str] = set()
    for f in sorted(folder.glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if not isinstance(doc, dict) or doc.get("type") != "sequence":
                continue
            if any(step.get("absent") for step in doc.get("steps", [])):
                out.add(doc["id"])
    return frozenset(out)


def first_version(alert: dict[str, Any]) -> bool:
    return alert.get("version", 1) == 1 or alert.get("change") == "raised"


class Alerts(threading.Thread):
    """Reads both alert topics from the start: the first delivery of each alert's first
    version (its updates and withdrawals are not new alerts)."""

    def __init__(self, lab: Lab) -> None:
        super().__init__(daemon=True)
        self.bootstrap = lab.bootstrap
        self.topics = [lab.env["FUSION_ALERT_TOPIC_PREFIX"] + cc for cc in ("us", "mx")]
        self.seen: dict[str, Seen] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        c = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        tps = [TopicPartition(t, 0) for t in self.topics]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        while not self.halt.is_set():
            for records in c.poll(timeout_ms=100).values():
                for r in records:
                    a = orjson.loads(r.value)
                    if a["alert_id"] not in self.seen and first_version(a):
                        ev = [e["event_id"] for e in a["evidence"]]
                        self.seen[a["alert_id"]] = Seen(r.timestamp / 1000, a["rule_id"], ev)
        c.close()

    def finish(self, quiet: float = 3.0, most: float = 30.0) -> None:
        """Stop once no new alert has come for `quiet` seconds (or after `most`): alerts held
        for the watermark may follow the last commit."""
        deadline, count, since = time.monotonic() + most, len(self.seen), time.monotonic()
        while time.monotonic() - since < quiet and time.monotonic() < deadline:
            time.sleep(0.2)
            if len(self.seen) != count:
                count, since = len(self.seen), time.monotonic()
        self.halt.set()
        self.join()


# -- backlogs: committed events/s -----------------------------------------------------------


@dataclass
class Drain:
    name: str
    events: int
    eps: float = 0.0
    eps_last_alert: float = 0.0
    alerts: int = 0
    seconds: float = 0.0
    usage: tuple[float, float, float] = (0.0, 0.0, 0.0)  # workers, broker, machine
    cores: list[float] = field(default_factory=list)  # each worker's
    peak_rss_mib: list[float] = field(default_factory=list)  # each worker's
    startup_s: float = 0.0  # worker spawned -> first input commit seen
    scrape: ScrapeStats | None = None

    @property
    def worker_cores(self) -> float:
        return self.usage[0]

    @property
    def cpu_us_per_event(self) -> float:
        return self.worker_cores * self.seconds / self.events * 1e6 if self.events else 0.0


def run_backlog(
    b: Bench, lab: Lab, name: str, workers: int = 1, publish: Callable[[], None] | None = None
) -> Drain:
    """Workers (one group) on input already published, or published by `publish` once each
    holds its share of the partitions: until every stage has committed all of it."""
    off, alerts = Offsets(lab), Alerts(lab)
    alerts.start()
    t_spawn = time.time()
    ws = [lab.worker() for _ in range(workers)]
    scrapers = b.scrapers(ws)
    try:
        if publish is not None:
            wait_shared(ws)
            publish()
        d = Drain(name, sum(off.ends(off.inputs).values()))
        a, z = off.drain(ws, b.broker_pid, b.timeout)
        d.scrape = stop_scrapers(scrapers)
        d.seconds = max(z.t - a.t, 0.2)
        d.eps, d.usage, d.startup_s = d.events / d.seconds, a.usage(z), a.t - t_spawn
        d.cores, d.peak_rss_mib = a.cores(z), [status_mib(w.proc.pid, "VmHWM") for w in ws]
        alerts.finish()
        d.alerts = len(alerts.seen)
        last = max((s.record_ts for s in alerts.seen.values()), default=0.0)
        d.eps_last_alert = d.events / (last - a.t) if last > a.t else 0.0
        pids = ", ".join(str(w.proc.pid) for w in ws)
        log(f"  {name}: {d.eps:,.0f} events/s committed, {d.alerts:,} alerts (pids {pids})")
        return d
    finally:
        stop_scrapers(scrapers)
        alerts.halt.set()
        off.close()
        lab.close()


def wait_shared(ws: list[Worker], timeout: float = 60.0) -> None:
    """Until every worker is ready and holds some of the routed partitions, all of them
    between them (fusion_state_partitions): the group has settled."""
    for w in ws:
        w.wait_ready()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = [w.metric("fusion_state_partitions") for w in ws]
        if sum(held) == PARTS and min(held) > 0:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the workers did not share the {PARTS} partitions in {timeout:.0f} s")


def phase_single(b: Bench, topic: str) -> Drain:
    rules = b.tmp / "rules-single"
    rules.mkdir(parents=True, exist_ok=True)
    (rules / "plate-reads.yaml").write_text(SINGLE_RULE)
    env = {"FUSION_TOPIC_DETECTIONS": topic, "FUSION_RULES_PATH": str(rules)}
    lab = b.lab("single", **env)
    lab.create_run_topics(env)
    return run_backlog(b, lab, "single rule")


Backlog = list[tuple[float, str, bytes]]  # (event time, topic, event), in event-time order


def simulate(lab: Lab, n: int, seed: int) -> Backlog:
    """n simulator events over the past 2 h (the same for a seed), for the topics of `lab`."""
    end, span, made = time.time() - 60.0, 7200.0, [0]
    out: Backlog = []
    kinds: Counter[str] = Counter()
    for etype, ev in Simulator(seed=seed).stream(lambda: end - span + span * made[0] / n):
        ts = datetime.fromisoformat(ev["occurred_at"]).timestamp()
        out.append((ts, lab.topic_for(etype, ev), orjson.dumps(ev)))
        kinds[etype] += 1
        made[0] += 1
        if made[0] >= n:
            break
    log(f"  {n:,} simulator events: {dict(kinds)}")
    out.sort(key=lambda x: x[0])
    return out


def publish(lab: Lab, backlog: Backlog) -> None:
    """In event-time order across topics (a worker reading while it is published sees event
    time advance on every topic alike), each topic's events round robin over its partitions."""
    sent: Counter[str] = Counter()
    for _, topic, raw in backlog:
        lab.producer.send(topic, raw, partition=sent[topic] % PARTS)
        sent[topic] += 1
    lab.flush()


def phase_backlog(b: Bench, n: int, seed: int) -> Drain:
    """The backlog published, then one worker started on it."""
    lab = b.lab("backlog")
    publish(lab, simulate(lab, n, seed))
    return run_backlog(b, lab, f"backlog of {n:,}, default pack")


def phase_scale(b: Bench, n: int, seed: int) -> list[Drain]:
    """The same backlog for 1 worker, then on fresh topics for 2 in one group, each time
    published once the group has settled: the span measures the group at work, not a
    rebalance that moves partitions (and their state) mid-way."""
    out = []
    for workers in (1, 2):
        lab = b.lab(f"scale{workers}")
        name = f"backlog of {n:,}, {workers} worker(s)"
        backlog = partial(publish, lab, simulate(lab, n, seed))
        out.append(run_backlog(b, lab, name, workers, backlog))
    return out


# -- fixed rates: latency ------------------------------------------------------------------


def topic_for(topics: dict[str, str], etype: str, ev: dict[str, Any]) -> str:
    """Lab.topic_for's rule on the topic names alone: an authorization goes to its issuer's."""
    if etype == "authorization":
        return topics[f"authorization-{ev['source']['country'].lower()}"]
    return topics[etype]


def produce(bootstrap: str, topics: dict[str, str], plan: Plan, out: str) -> None:
    """The producer process (see `aproduce`)."""
    Path(out).write_bytes(orjson.dumps(asyncio.run(aproduce(bootstrap, topics, plan))))


async def aproduce(bootstrap: str, topics: dict[str, str], plan: Plan) -> dict[str, Any]:
    """Publish simulator events at each step's rate, steps back to back, with occurred_at =
    now (the simulator backdates suspects by up to 3 days and weapons by up to 1 day, which
    holds the watermark minutes behind), in aiokafka batches every ~5 ms (kafka-python's send
    costs ~50 µs of CPU a message here). Returns when each event was handed to the producer
    (event_id -> (time, step)) and each step's span and CPU seconds."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0)
    await producer.start()
    stream = Simulator(seed=11, run_id=f"r{uuid.uuid4().hex[:6]}").stream(time.time)
    sent: dict[str, tuple[float, int]] = {}
    spans: list[tuple[str, float, float, int, float]] = []
    rr = dict.fromkeys(topics.values(), 0)
    dumps, clock = orjson.dumps, time.time
    begin = clock() + 0.5
    for k, (tag, rate, seconds) in enumerate(plan):
        n, i, futures = int(rate * seconds), 0, []
        await asyncio.sleep(max(0.0, begin - clock()))
        start, cpu0 = clock(), time.process_time()
        while i < n:
            now = clock()
            stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
            batches: dict[tuple[str, int], Any] = {}
            for _ in range(min(n, int((now - begin) * rate) + 1) - i):
                etype, ev = next(stream)
                ev["occurred_at"] = stamp
                sent[ev["event_id"]] = (now, k)
                topic = topic_for(topics, etype, ev)
                p = rr[topic] = (rr[topic] + 1) % PARTS
                raw = dumps(ev)
                batch = batches.get((topic, p))
                if batch is None or batch.append(key=None, value=raw, timestamp=None) is None:
                    if batch is not None:
                        futures.append(await producer.send_batch(batch, topic, partition=p))
                    batch = batches[(topic, p)] = producer.create_batch()
                    batch.append(key=None, value=raw, timestamp=None)
                i += 1
            for (topic, p), batch in batches.items():
                futures.append(await producer.send_batch(batch, topic, partition=p))
            await asyncio.sleep(0.005)
        await asyncio.gather(*futures)
        spans.append((tag, start, clock(), n, time.process_time() - cpu0))
        begin += seconds
    await producer.stop()
    return {"sent": sent, "spans": spans}


@dataclass
class RateRow:
    tag: str
    target: float
    achieved: float = 0.0
    events: int = 0
    lat: list[float] = field(default_factory=list)  # every rule but those waiting on absence
    lat_absent: list[float] = field(default_factory=list)  # those (absence_rules)
    usage: tuple[float, float, float] = (0.0, 0.0, 0.0)  # worker, broker, machine
    producer_cores: float = 0.0
    peak_rss_mib: float = 0.0
    unread_end: float = 0.0  # input + fusion.routed not committed, at the step's end
    unread_most: float = 0.0  # ... the most sampled in the step
    lag_metric_most: float = -1.0  # the most fusion_consumer_lag scraped in the step
    kept_up: bool = False

    @property
    def cpu_us_per_event(self) -> float:
        return self.usage[0] / self.achieved * 1e6 if self.achieved else 0.0


@dataclass
class Rates:
    rows: list[RateRow]  # the warm-up left out
    drained_s: float | None  # last send -> everything committed (None: not within the limit)
    scrape: ScrapeStats | None
    kept_up_s: float = KEPT_UP_S


def phase_rates(b: Bench, plan: Plan, drain_timeout: float) -> Rates:
    """One worker, default pack; a producer process runs `plan` (its first step a warm-up)."""
    lab = b.lab("rates")
    off, probe, alerts, w = Offsets(lab), Offsets(lab), Alerts(lab), lab.worker()
    scrapers = b.scrapers([w])
    samples: list[Snap] = []
    halt = threading.Event()

    def sampler() -> None:
        """Every 0.5 s: CPU, memory, the group's uncommitted messages (`probe`: its own
        clients) and the worker's own lag metric as last scraped."""
        while not halt.wait(0.5):
            last = scrapers[0].latest if scrapers else ""
            metric = metric_sum(last, "fusion_consumer_lag") if last else -1.0
            samples.append(Snap.take([w], b.broker_pid, probe.unread(), metric))
            if len(samples) % 10 == 0:
                log(f"  uncommitted {samples[-1].unread:,.0f}, alerts {len(alerts.seen):,}")

    sampler_thread = threading.Thread(target=sampler, daemon=True)
    out = lab.tmp / "producer.json"
    try:
        w.wait_ready()
        alerts.start()
        sampler_thread.start()
        kinds = ("detection", "suspect", "weapon", "track", "authorization-us", "authorization-mx")
        topics = {e: lab.topics[e] for e in kinds}
        proc = multiprocessing.get_context("spawn").Process(
            target=produce, args=(b.bootstrap, topics, plan, str(out))
        )
        proc.start()
        proc.join(timeout=sum(s for _, _, s in plan) + 120)
        t_last = time.time()
        drained: float | None = None
        with contextlib.suppress(TimeoutError):
            drained = off.drain([w], b.broker_pid, drain_timeout)[1].t - t_last
        alerts.finish()
    finally:
        halt.set()
        alerts.halt.set()
        sampler_thread.join()
        scrape = stop_scrapers(scrapers)
        probe.close()
        off.close()
        lab.close()
    data = orjson.loads(out.read_bytes())
    rows, absent = [RateRow(tag, rate) for tag, rate, _ in plan], absence_rules()
    for a in alerts.seen.values():
        known = [data["sent"][e] for e in a.evidence if e in data["sent"]]
        if known:
            t, k = max(known)
            lat = rows[k].lat_absent if a.rule_id in absent else rows[k].lat
            lat.append(a.record_ts - t)
    for row, (_, t0, t1, n, cpu) in zip(rows, data["spans"], strict=True):
        row.events, row.achieved, row.producer_cores = n, n / (t1 - t0), cpu / (t1 - t0)
        win = [s for s in samples if t0 <= s.t <= t1]
        if len(win) >= 2:
            row.usage = win[0].usage(win[-1])
            row.peak_rss_mib = max(s.rss for s in win)
            row.unread_end, row.unread_most = win[-1].unread, max(s.unread for s in win)
            row.lag_metric_most = max(s.lag_metric for s in win)
            row.kept_up = row.unread_most <= row.target * KEPT_UP_S
    return Rates(rows[1:], drained, scrape)


# -- runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    phases: tuple[str, ...]
    peers: tuple[str, ...]
    runs: int
    events: int  # detections preloaded for the peers and the single rule
    backlog: int  # simulator events of the backlog phase
    plan: Plan
    seed: int
    scrape_every: float
    timeout: float  # per phase, seconds
    quick: bool


@dataclass
class Run:
    """One run of the phases, each on fresh topics and groups."""

    info: PreloadInfo | None = None
    peers: list[PeerResult] = field(default_factory=list)
    single: Drain | None = None
    backlog: Drain | None = None
    rates: Rates | None = None
    scale: list[Drain] = field(default_factory=list)  # 1 worker, then 2


def one_rule(b: Bench, o: Options, run: Run) -> None:
    """The peers, then the worker with the single rule, on one topic preloaded for them."""
    topic = f"e2e.detections.{uuid.uuid4().hex[:6]}"
    plates = min(10_000, o.events // 20)  # ~20 reads a plate over 2 h, whatever the count
    log(f"preloading {o.events:,} detections ({plates:,} plates) into {topic}")
    info = run.info = asyncio.run(
        apreload(b.bootstrap, topic, o.events, PARTS, plates=plates, seed=o.seed)
    )
    if "peers" in o.phases:
        expected, limit = info.expected_windows, b.timeout
        run.peers = asyncio.run(
            arun_peers(
                b.bootstrap,
                topic,
                o.events,
                peers=o.peers,
                expected_windows=expected,
                limit_s=limit,
            )
        )
    if "single" in o.phases:
        log("worker, the single rule, on the same topic")
        run.single = phase_single(b, topic)


def one_run(b: Bench, o: Options) -> Run:
    run = Run()
    if {"peers", "single"} & set(o.phases):
        one_rule(b, o, run)
    if "backlog" in o.phases:
        log(f"worker, default pack, backlog of {o.backlog:,}")
        run.backlog = phase_backlog(b, o.backlog, o.seed)
    if "rates" in o.phases:
        steps = ", ".join(tag for tag, _, _ in o.plan[1:])
        log(f"worker, default pack, {steps} for {o.plan[-1][2]:.0f} s each")
        run.rates = phase_rates(b, o.plan, 300.0)
    if "scale" in o.phases:
        log(f"1 worker, then 2 in one group, default pack, backlog of {o.backlog:,}")
        run.scale = phase_scale(b, o.backlog, o.seed)
    return run


def options(argv: list[str] | None) -> Options:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: small counts, 15 s steps")
    ap.add_argument("--runs", type=int, help="runs of the phases (3; quick 1)")
    ap.add_argument("--phases", default=",".join(PHASES), help="comma separated, of these")
    ap.add_argument("--peers", default=",".join(ALL_PEERS), help="comma separated, of these")
    ap.add_argument("--events", type=int, help="detections preloaded (200,000; quick 20,000)")
    ap.add_argument("--backlog", type=int, help="simulator events (100,000; quick 10,000)")
    ap.add_argument("--rates", default="1000,10000", help="events/s, one step each")
    ap.add_argument("--duration", type=float, help="seconds per rate (60; quick 15)")
    ap.add_argument("--timeout", type=float, default=900.0, help="per phase, seconds")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--scrape-every",
        type=float,
        default=1.0,
        help="seconds between scrapes of /metrics (0: none)",
    )
    a = ap.parse_args(argv)
    phases = tuple(p for p in PHASES if p in {x.strip() for x in a.phases.split(",")})
    unknown = {x.strip() for x in a.phases.split(",") if x.strip()} - set(PHASES)
    if unknown:
        ap.error(f"unknown phases {sorted(unknown)}; known: {','.join(PHASES)}")
    rates = [float(r) for r in a.rates.split(",")]
    duration = a.duration or (15.0 if a.quick else 60.0)
    plan = [("warm-up", rates[0], 5.0)] + [(f"{r:,.0f}/s", r, duration) for r in rates]
    return Options(
        phases=phases,
        peers=tuple(p.strip() for p in a.peers.split(",") if p.strip()),
        runs=a.runs or (1 if a.quick else 3),
        events=a.events or (20_000 if a.quick else 200_000),
        backlog=a.backlog or (10_000 if a.quick else 100_000),
        plan=plan,
        seed=a.seed,
        scrape_every=a.scrape_every,
        timeout=a.timeout,
        quick=a.quick,
    )


def main(argv: list[str] | None = None) -> int:
    o = options(argv)
    t_start = time.monotonic()
    broker = start_broker(REPO / ".broker-e2e")
    tmp = Path(tempfile.mkdtemp(prefix="e2e-bench-"))
    bench = Bench(broker.bootstrap, broker.pid() or 0, tmp, o.timeout, o.scrape_every)
    runs: list[Run] = []
    try:
        for k in range(o.runs):
            log(f"run {k + 1} of {o.runs}")
            runs.append(one_run(bench, o))
    finally:
        stop_broker(broker, delete=True)
    total_s = time.monotonic() - t_start
    print(report(o, runs, sorted(absence_rules()), total_s, time.process_time()))
    log(f"worker logs and producer output: {tmp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
