"""End-to-end benchmark through a local Kafka broker and real `fusion worker` processes.

    .venv/bin/python bench/e2e_bench.py [--events 100000] [--rates 1000,5000] [--duration 30]

Phases, each on fresh per-run topics (the FUSION_* variables the integration tests use):

  ceiling     N events of all four types are pre-published (aiokafka producer, flat out); a
              plain aiokafka consumer (no group, all partitions assigned, orjson.loads on each
              value) reads them back: the most any Python consumer of these topics could do.
  backlog     one `fusion worker` is started on those same pre-published events; sustained
              events/s = N / (first event ingested -> every stage's consumer-group offsets
              committed up to the end of its input). Per-stage lag is sampled every 0.5 s.
              py-spy (if installed) samples the worker meanwhile; its top frames are printed.
  rate R      a fresh worker, warmed up (--warmup events, until every stage-2/3 partition has
              loaded its state), then events published at R events/s for --duration seconds;
              the alert topics are read as alerts arrive. py-spy samples the highest rate.
              Event-to-alert latency = the alert's record timestamp (set by the worker's
              producer) - the wall-clock time the newest evidence event was handed to the
              producer (a dict event_id -> publish time kept here; the simulator backdates
              occurred_at, so event time is not used).
              Latency measured when this script read the alert is printed too.
  scale-out   like backlog with two workers (same app id, so one consumer group).

Worker CPU is utime+stime from /proc/<pid>/stat over the phase; peak memory is VmHWM from
/proc/<pid>/status. The broker (deploy/kafka/broker.sh, its own folder; free ports unless
--broker-port is given) is started unless one already answers there (one an earlier run left
up with --keep-broker is reused), and stopped at the end if this script started it. This
machine's CPU is shared by the broker, the worker(s) and this script (the producer and alert
reader): the machine-wide CPU use of every phase is printed so the figures can be judged
("other CPU" is what processes outside the benchmark used meanwhile).

Each phase's topics are deleted afterwards (--keep-topics keeps them); worker logs and py-spy
profiles go to a temporary folder, kept if the run fails (or --workdir). --worker-env KEY=VALUE
passes settings to the workers for experiments (FUSION_* settings, or Faust's own such as
PRODUCER_MAX_BATCH_SIZE).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from provenance import cpus_and_memory, tree_state  # noqa: E402
from streamgen import Item, generate  # noqa: E402

BROKER_SH = REPO / "deploy" / "kafka" / "broker.sh"
CLK_TCK = os.sysconf("SC_CLK_TCK")
EXTRA_WORKER_ENV: dict[str, str] = {}  # --worker-env KEY=VALUE (experiments)
PYTHON = sys.executable
INPUT_PARTITIONS = 4
INTERNAL_PARTITIONS = 4


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- /proc helpers ------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_mib(pid: int, field_name: str) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    m = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024 if m else 0.0


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return total - idle, total


def machine_description() -> str:
    java = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
        java = (out.stderr or out.stdout).splitlines()[0]
    return (
        f"{cpus_and_memory()}, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; {java}"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


class CpuWindow:
    """CPU used by some processes and by the whole machine between start() and stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = 0.0
        self.c0: dict[str, float] = {}
        self.m0 = (0, 0)
        self.wall = 0.0
        self.cpu: dict[str, float] = {}
        self.machine_busy = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = {k: proc_cpu_s(p) for k, p in self.pids.items()}
        self.m0 = machine_ticks()

    def stop(self) -> None:
        self.wall = time.monotonic() - self.t0
        self.cpu = {k: proc_cpu_s(p) - self.c0[k] for k, p in self.pids.items()}
        b, t = machine_ticks()
        db, dt = b - self.m0[0], t - self.m0[1]
        self.machine_busy = (os.cpu_count() or 1) * db / dt if dt else 0.0

    def share(self, name: str) -> float:
        """CPU of one process as a fraction of one core over the window."""
        return self.cpu.get(name, 0.0) / self.wall if self.wall else 0.0


# -- broker -------------------------------------------------------------------------------------


def kept_broker_port(folder: Path) -> int | None:
    """The client port of a broker an earlier run left up in `folder` (--keep-broker), if any."""
    try:
        pid = int((folder / "broker.pid").read_text().strip())
        props = (folder / "server.properties").read_text()
    except (OSError, ValueError):
        return None
    found = re.search(r"^advertised\.listeners=\w+://127\.0\.0\.1:(\d+)$", props, re.MULTILINE)
    return int(found.group(1)) if found and Path(f"/proc/{pid}").exists() else None


def broker_port(requested: int | None, folder: Path) -> int:
    """The broker's client port (the controller's is the next one): the one asked for, else
    that of a broker kept up in `folder`, else a free pair, chosen as the integration tests
    choose theirs."""
    if requested:
        return requested
    kept = kept_broker_port(folder)
    if kept:
        return kept
    sys.path.insert(0, str(REPO))
    from tests.integration.conftest import free_port_pair

    return free_port_pair()


class Broker:
    def __init__(self, port: int, folder: Path, heap: str, bootstrap: str | None) -> None:
        self.external = bootstrap
        self.port = port
        self.folder = folder
        self.env = {
            **os.environ,
            "FUSION_BROKER_PORT": str(port),
            "FUSION_CONTROLLER_PORT": str(port + 1),
            "FUSION_BROKER_DIR": str(folder),
            "FUSION_BROKER_HEAP": heap,
            "FUSION_PYTHON": PYTHON,
        }
        self.started = False

    @property
    def bootstrap(self) -> str:
        return self.external or f"127.0.0.1:{self.port}"

    def ensure(self) -> None:
        if self.external:
            log(f"using the broker at {self.external}")
            return
        st = subprocess.run(
            [str(BROKER_SH), "status"], env=self.env, capture_output=True, text=True, check=False
        )
        if st.returncode == 0:
            log(f"reusing the broker already up on 127.0.0.1:{self.port}")
            return
        log(f"starting a broker on 127.0.0.1:{self.port} (folder {self.folder})")
        subprocess.run([str(BROKER_SH), "start"], env=self.env, check=True, stdout=sys.stderr)
        self.started = True

    def pid(self) -> int | None:
        if self.external:
            return None
        try:
            pid = int((self.folder / "broker.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def stop(self) -> None:
        if self.started:
            log("stopping the broker this script started")
            subprocess.run([str(BROKER_SH), "stop"], env=self.env, check=False, stdout=sys.stderr)


# -- a run: topics and workers -------------------------------------------------------------------


class Topics:
    """Fresh per-run topic names and the worker environment that selects them."""

    def __init__(self, bootstrap: str, label: str) -> None:
        suffix = f"bench-{label}-{uuid.uuid4().hex[:6]}"
        self.bootstrap = bootstrap
        self.suffix = suffix
        self.app_id = f"fusion-{suffix}"
        self.inputs = {
            "detection": f"events.detections.{suffix}",
            "suspect": f"events.suspects.{suffix}",
            "weapon": f"events.weapons.{suffix}",
            "track": f"events.tracking.{suffix}",
        }
        self.alerts = [f"alerts.{suffix}.us", f"alerts.{suffix}.mx"]
        self.validated = f"fusion.validated.{suffix}"
        self.routed = f"fusion.routed.{suffix}"
        self.others = [
            f"events.deadletter.{suffix}",
            f"audit.sharing.{suffix}",
            f"fusion.state.dedup.{suffix}",
            f"fusion.state.engine.{suffix}",
            f"{self.app_id}-__assignor-__leader",
        ]
        self.env = {
            **os.environ,
            "FUSION_BOOTSTRAP_SERVERS": bootstrap,
            "FUSION_APP_ID": self.app_id,
            "FUSION_TOPIC_DETECTIONS": self.inputs["detection"],
            "FUSION_TOPIC_SUSPECTS": self.inputs["suspect"],
            "FUSION_TOPIC_WEAPONS": self.inputs["weapon"],
            "FUSION_TOPIC_TRACKING": self.inputs["track"],
            "FUSION_TOPIC_DEADLETTER": self.others[0],
            "FUSION_TOPIC_AUDIT": self.others[1],
            "FUSION_ALERT_TOPIC_PREFIX": f"alerts.{suffix}.",
            "FUSION_TOPIC_VALIDATED": self.validated,
            "FUSION_TOPIC_ROUTED": self.routed,
            "FUSION_TOPIC_STATE_DEDUP": self.others[2],
            "FUSION_TOPIC_STATE_ENGINE": self.others[3],
            "FUSION_INPUT_PARTITIONS": str(INPUT_PARTITIONS),
            "FUSION_INTERNAL_PARTITIONS": str(INTERNAL_PARTITIONS),
            "FUSION_LOG_LEVEL": "info",
        }

    def all(self) -> list[str]:
        return [*self.inputs.values(), *self.alerts, self.validated, self.routed, *self.others]

    def create(self) -> None:
        subprocess.run(
            [PYTHON, "-m", "streams.cli", "topics"],
            env=self.env,
            cwd=REPO,
            check=True,
            capture_output=True,
        )

    def delete(self) -> None:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="bench-cleanup")
        try:
            existing = set(admin.list_topics())
            mine = [t for t in self.all() if t in existing]
            if mine:
                admin.delete_topics(mine, raise_errors=False)
        finally:
            admin.close()


def pseudonym_keys_env(workdir: Path) -> dict[str, str]:
    """Throw-away pseudonymisation keys for the workers (as the tests and the demo make), if
    this tree has a keyring and none is configured already."""
    if os.environ.get("FUSION_PSEUDONYM_KEYS_FILE") or os.environ.get("FUSION_PSEUDONYM_KEYS"):
        return {}
    try:
        from streams.keys import generate as generate_keys
        from streams.keys import write_keys
    except ImportError:
        return {}
    path = workdir / "pseudonym-keys.json"
    if not path.exists():
        write_keys(path, generate_keys(key_id="kbench"))
    return {"FUSION_PSEUDONYM_KEYS_FILE": str(path)}


class Worker:
    """A `fusion worker` process (cwd: a scratch folder, so Faust's data dir lands there)."""

    def __init__(self, topics: Topics, workdir: Path, name: str) -> None:
        self.name = name
        self.web_port = free_port()
        self.metrics_port = free_port()
        env = {
            **topics.env,
            **pseudonym_keys_env(workdir),
            **EXTRA_WORKER_ENV,
            "FUSION_WEB_PORT": str(self.web_port),
            "FUSION_METRICS_PORT": str(self.metrics_port),
        }
        self.log_path = workdir / f"{topics.suffix}-{name}.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "streams.cli", "worker"],
            env=env,
            cwd=workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.started = time.monotonic()
        self.ready_after: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _get(self, port: int, path: str) -> tuple[int, bytes]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return int(r.status), bytes(r.read())

    def ready(self) -> bool:
        try:
            return self._get(self.web_port, "/health/ready")[0] == 200
        except OSError:
            return False

    async def wait_ready(self, limit_s: float = 120.0) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.tail()}")
            if await asyncio.to_thread(self.ready):
                self.ready_after = time.monotonic() - self.started
                return
            await asyncio.sleep(0.25)
        raise RuntimeError(f"worker {self.name} not ready after {limit_s} s:\n{self.tail()}")

    def metrics(self) -> dict[str, float]:
        """Every sample of the Prometheus endpoint, summed over labels, by metric name."""
        try:
            body = self._get(self.metrics_port, "/metrics")[1].decode()
        except OSError:
            return {}
        out: dict[str, float] = defaultdict(float)
        for line in body.splitlines():
            if not line or line.startswith("#"):
                continue
            name_part, _, value = line.rpartition(" ")
            name = name_part.split("{", 1)[0]
            with contextlib.suppress(ValueError):
                out[name] += float(value)
        return out

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def peak_rss_mib(self) -> float:
        return proc_status_mib(self.pid, "VmHWM")

    _READY = re.compile(
        r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\].*?(Worker ready|(dedup|engine) partition "
        r"(\d+) ready)",
        re.M,
    )

    def state_loads(self) -> tuple[float | None, dict[str, float]]:
        """(time the worker said ready, {"dedup 0": time its state was loaded, ...}) from its log,
        as epoch seconds."""
        self._log.flush()
        ready: float | None = None
        loads: dict[str, float] = {}
        for m in self._READY.finditer(self.log_path.read_text(errors="replace")):
            t = time.mktime(time.strptime(m.group(1)[:19], "%Y-%m-%d %H:%M:%S"))
            t += int(m.group(1)[20:]) / 1000
            if m.group(2) == "Worker ready":
                ready = t
            else:
                loads[f"{m.group(3)} {m.group(4)}"] = t
        return ready, loads

    def tail(self, n: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# -- progress: consumer-group offsets per stage -------------------------------------------------


@dataclass
class Sample:
    t: float
    received: float
    rejected: float
    alerts_raised: float
    lag: dict[str, int]  # stage -> messages not yet committed by the group
    ends: dict[str, int]  # stage -> end offsets summed
    cpu: float  # worker CPU seconds (all workers)


class Progress:
    """Committed offsets of the app's consumer group against the end of each stage's input."""

    def __init__(self, topics: Topics) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

        self.topics = topics
        self.admin = KafkaAdminClient(
            bootstrap_servers=topics.bootstrap, client_id="bench-progress"
        )
        self.consumer = KafkaConsumer(
            bootstrap_servers=topics.bootstrap, group_id=None, enable_auto_commit=False
        )
        self.stage_of: dict[str, str] = {t: "ingest" for t in topics.inputs.values()}
        self.stage_of[topics.validated] = "dedup"
        self.stage_of[topics.routed] = "correlate"
        self.tps = [
            TopicPartition(t, p)
            for t in self.stage_of
            for p in range(
                INPUT_PARTITIONS if self.stage_of[t] == "ingest" else INTERNAL_PARTITIONS
            )
        ]

    def lag(self) -> tuple[dict[str, int], dict[str, int]]:
        ends = self.consumer.end_offsets(self.tps)
        try:
            committed = self.admin.list_group_offsets(self.topics.app_id).get(
                self.topics.app_id, {}
            )
        except Exception:
            committed = {}
        lag: dict[str, int] = dict.fromkeys(("ingest", "dedup", "correlate"), 0)
        total: dict[str, int] = dict.fromkeys(("ingest", "dedup", "correlate"), 0)
        for tp in self.tps:
            end = ends.get(tp, 0) or 0
            c = committed.get(tp)
            done = c.offset if c is not None and c.offset is not None and c.offset >= 0 else 0
            stage = self.stage_of[tp.topic]
            lag[stage] += max(0, end - done)
            total[stage] += end
        return lag, total

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()


async def sample(progress: Progress, workers: list[Worker], t0: float) -> Sample:
    ms = await asyncio.gather(*(asyncio.to_thread(w.metrics) for w in workers))
    lag, ends = await asyncio.to_thread(progress.lag)
    return Sample(
        t=time.monotonic() - t0,
        received=sum(m.get("fusion_events_received_total", 0.0) for m in ms),
        rejected=sum(m.get("fusion_events_rejected_total", 0.0) for m in ms),
        alerts_raised=sum(m.get("fusion_alerts_raised_total", 0.0) for m in ms),
        lag=lag,
        ends=ends,
        cpu=sum(w.cpu_s() for w in workers),
    )


def caught_up(s: Sample, n: int) -> bool:
    return (
        s.received + s.rejected >= n and s.ends["dedup"] > 0 and all(v == 0 for v in s.lag.values())
    )


# -- Kafka clients of the benchmark --------------------------------------------------------------


async def publish_all(bootstrap: str, topics: Topics, items: list[Item]) -> float:
    """Publish every item as fast as one aiokafka producer can; seconds taken."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks=1
    )
    await producer.start()
    try:
        t = time.perf_counter()
        send = producer.send
        names = topics.inputs
        for i, it in enumerate(items):
            await send(names[it.etype], it.raw)
            if i % 5000 == 0:
                await asyncio.sleep(0)
        await producer.flush()
        return time.perf_counter() - t
    finally:
        await producer.stop()


async def read_ceiling(bootstrap: str, topics: Topics, n: int) -> tuple[float, int]:
    """A plain consumer: no group, all input partitions, orjson.loads each value."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(t, p) for t in topics.inputs.values() for p in range(INPUT_PARTITIONS)
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        loads = orjson.loads
        count = 0
        t = time.perf_counter()
        deadline = time.monotonic() + 300
        while count < n and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=20_000)
            for records in batches.values():
                for r in records:
                    loads(r.value)
                    count += 1
        return time.perf_counter() - t, count
    finally:
        await consumer.stop()


@dataclass
class AlertSeen:
    rule_id: str
    record_ts: float
    read_at: float
    evidence: list[str]


class AlertReader:
    """Reads the alert topics from the beginning; first delivery of each alert id kept."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.seen: dict[str, AlertSeen] = {}
        self.deliveries = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(t, 0) for t in self.topics.alerts]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=100)
                now = time.time()
                for records in batches.values():
                    for r in records:
                        self.deliveries += 1
                        a = orjson.loads(r.value)
                        aid = a["alert_id"]
                        if aid in self.seen:
                            continue
                        self.seen[aid] = AlertSeen(
                            a["rule_id"],
                            r.timestamp / 1000.0,
                            now,
                            [e["event_id"] for e in a.get("evidence", [])],
                        )
        finally:
            await consumer.stop()

    def stop(self) -> None:
        self._stop.set()


# -- py-spy --------------------------------------------------------------------------------------


class PySpy:
    """`py-spy record` attached to a pid (non-blocking sampling), collapsed stacks to a file."""

    def __init__(self, pid: int, out: Path, rate: int, idle: bool = False) -> None:
        exe = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None
        if not Path(exe).exists():
            log("py-spy not found: no worker profile (pip install py-spy into the venv)")
            return
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--nonblocking",
                "--format",
                "raw",
                *(["--idle", "--threads"] if idle else []),
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def cpu_s(self) -> float:
        return proc_cpu_s(self.proc.pid) if self.proc is not None else 0.0

    def stop(self) -> str | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return None
        if not self.out.exists():
            log(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")
            return None
        return summarise_collapsed(self.out)


_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "/lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker.startswith("/lib"):
                path = "stdlib/" + path.split("/", 1)[1]
            break
    path = path.replace(str(REPO) + "/", "")
    line = m.group("line")
    return f"{m.group('fn')} ({path}:{line})" if line else f"{m.group('fn')} ({path})"


def _bucket(frame: str) -> str:
    """Which part of the stack a frame belongs to, for a coarse breakdown."""
    if "(engine/" in frame or "(schemas/" in frame:
        return "engine + schemas (project)"
    if "(streams/" in frame:
        return "streams (project worker code)"
    if "pydantic" in frame:
        return "pydantic"
    if "(faust/" in frame or "(mode/" in frame:
        return "faust / mode"
    if "(aiokafka/" in frame or "(kafka/" in frame:
        return "aiokafka"
    if "prometheus_client" in frame:
        return "prometheus_client"
    if "(asyncio/" in frame or "(selectors.py" in frame:
        return "asyncio + sockets"
    if "(socketserver.py" in frame or "(http/" in frame or "(wsgiref/" in frame:
        return "metrics HTTP server thread"
    if "(threading.py" in frame:
        return "threading"
    return "other"


def summarise_collapsed(path: Path, top: int = 25) -> str:
    """Top frames of a collapsed-stack profile: by own samples, and by inclusive samples."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    own_bucket: Counter[str] = Counter()
    project_incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += n
        leaf = frames[-1]
        own[leaf] += n
        # attribute the sample to the deepest project frame, else the leaf's library
        deepest_project = next(
            (
                f
                for f in reversed(frames)
                if "(engine/" in f or "(streams/" in f or "(schemas/" in f
            ),
            None,
        )
        own_bucket[_bucket(leaf)] += n
        for f in set(frames):
            incl[f] += n
        if deepest_project is not None:
            project_incl[deepest_project] += n
    if total == 0:
        return "(no samples)"
    lines = [f"{total} samples (non-idle unless --py-spy-idle: then every thread, waiting too)"]
    lines.append("")
    lines.append("own samples by library (where the CPU is actually spent):")
    for b, n in own_bucket.most_common():
        lines.append(f"  {n / total:6.1%}  {b}")
    lines.append("")
    lines.append(f"top {top} frames by own samples:")
    for f, n in own.most_common(top):
        lines.append(f"  {n / total:6.1%}  {f}")
    lines.append("")
    lines.append(f"top {top} frames by inclusive samples (on the stack):")
    for f, n in incl.most_common(top + 10)[: top + 10]:
        if f.startswith("<module>") or "runpy" in f:
            continue
        lines.append(f"  {n / total:6.1%}  {f}")
    lines.append("")
    lines.append("deepest project frame on the stack (project code and what it calls):")
    for f, n in project_incl.most_common(20):
        lines.append(f"  {n / total:6.1%}  {f}")
    return "\n".join(lines)


# -- phases --------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    events: int = 0
    seconds: float = 0.0
    eps: float = 0.0
    target_rate: float | None = None
    kept_up: bool | None = None
    max_lag: dict[str, int] = field(default_factory=dict)
    lat_ts: list[float] = field(default_factory=list)
    lat_read: list[float] = field(default_factory=list)
    alerts: int = 0
    alerts_by_rule: Counter[str] = field(default_factory=Counter)
    worker_cpu_s: float = 0.0
    worker_cpu_share: float = 0.0  # cores
    worker_peak_rss: list[float] = field(default_factory=list)
    broker_share: float = 0.0
    bench_share: float = 0.0
    pyspy_share: float = 0.0
    drained: bool = True
    final: Sample | None = None
    eps_last_alert: float | None = None  # events / (start -> the last alert was raised)
    machine_busy: float = 0.0
    startup_s: float | None = None
    timeline: list[Sample] = field(default_factory=list)
    note: str = ""
    profile: str | None = None


def _lag_row(s: Sample) -> str:
    return (
        f"| {s.t:6.1f} | {s.received:>9,.0f} | {s.lag['ingest']:>8,} | {s.lag['dedup']:>6,} | "
        f"{s.lag['correlate']:>6,} | {s.ends['dedup']:>7,} | {s.ends['correlate']:>7,} | "
        f"{s.alerts_raised:>7,.0f} |"
    )


async def warm_up(
    args: argparse.Namespace,
    broker: Broker,
    topics: Topics,
    workers: list[Worker],
    progress: Progress,
) -> int:
    """Publish a few events and wait until every partition's stage state is loaded (stages 2
    and 3 load their snapshot on a partition's first message) and all is processed. Returns
    the number of warm-up events, which the phase's totals must include."""
    n = args.warmup
    items = generate(
        n,
        keys=args.keys,
        t0=time.time(),
        event_rate=1000.0,
        seed=args.seed + 99,
        scenario_share=args.scenario_share,
        run_id="warm" + uuid.uuid4().hex[:4],
    )
    await publish_all(broker.bootstrap, topics, items)
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    while time.monotonic() < deadline:
        loaded: set[str] = set()
        for w in workers:
            loaded |= set(w.state_loads()[1])
        s = await sample(progress, workers, t0)
        if len(loaded) >= 2 * INTERNAL_PARTITIONS and caught_up(s, n):
            return n
        await asyncio.sleep(0.5)
    raise RuntimeError(f"warm-up not done within {args.timeout} s:\n{workers[0].tail()}")


async def phase_backlog(
    args: argparse.Namespace,
    broker: Broker,
    topics: Topics,
    n: int,
    workdir: Path,
    nworkers: int,
    profile: bool,
) -> Result:
    """Workers started on N pre-published events; time until every stage has committed."""
    name = "backlog, 1 worker" if nworkers == 1 else f"backlog, {nworkers} workers"
    res = Result(name, events=n)
    progress = Progress(topics)
    workers = [Worker(topics, workdir, f"w{i}") for i in range(nworkers)]
    spy: PySpy | None = None
    try:
        pids = {f"w{i}": w.pid for i, w in enumerate(workers)}
        bpid = broker.pid()
        if bpid:
            pids["broker"] = bpid
        pids["bench"] = os.getpid()
        t0 = time.monotonic()
        cpu = CpuWindow(pids)
        first: Sample | None = None
        first_wall = 0.0
        last: Sample | None = None
        deadline = t0 + args.timeout
        ready_task = asyncio.gather(*(w.wait_ready(args.timeout) for w in workers))
        while time.monotonic() < deadline:
            for w in workers:
                if w.proc.poll() is not None:
                    raise RuntimeError(f"worker {w.name} exited:\n{w.tail()}")
            s = await sample(progress, workers, t0)
            if first is None and s.received > 0:
                first = s
                first_wall = time.time()
                cpu.start()
                if profile and args.py_spy:
                    out = workdir / f"{topics.suffix}-pyspy.txt"
                    spy = PySpy(workers[0].pid, out, args.py_spy_rate, args.py_spy_idle)
            if first is not None:
                res.timeline.append(s)
                for k, v in s.lag.items():
                    res.max_lag[k] = max(res.max_lag.get(k, 0), v)
                if caught_up(s, n):
                    last = s
                    break
            await asyncio.sleep(0.5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ready_task, 1)
        if first is None or last is None:
            raise RuntimeError(f"{name}: not done within {args.timeout} s:\n{workers[0].tail()}")
        cpu.stop()
        # the first sample with events received is up to one interval late: start half a
        # sample interval earlier, on average
        res.seconds = last.t - first.t + 0.25
        res.eps = n / res.seconds
        res.worker_cpu_s = sum(cpu.cpu[f"w{i}"] for i in range(nworkers))
        res.worker_cpu_share = res.worker_cpu_s / cpu.wall
        res.worker_peak_rss = [w.peak_rss_mib() for w in workers]
        res.broker_share = cpu.share("broker")
        res.bench_share = cpu.share("bench")
        res.machine_busy = cpu.machine_busy
        res.alerts = int(last.alerts_raised)
        res.final = last
        t_alert = min(
            (x.t for x in res.timeline if x.alerts_raised >= last.alerts_raised), default=None
        )
        if t_alert is not None and t_alert > first.t:
            res.eps_last_alert = n / (t_alert - first.t + 0.25)
        ready = [w.ready_after for w in workers if w.ready_after is not None]
        res.startup_s = first.t
        res.note = f"first event ingested {first.t:.1f} s after the worker process started"
        loads: dict[str, float] = {}
        for w in workers:
            loads.update(w.state_loads()[1])
        if loads:
            res.note += (
                f"; stage 2/3 partition states ({len(loads)}) loaded between "
                f"{min(loads.values()) - first_wall:+.1f} s and "
                f"{max(loads.values()) - first_wall:+.1f} s from the first event ingested "
                "(stages 2 and 3 wait for them; stage 1 runs meanwhile)"
            )
        if spy is not None:
            res.pyspy_share = spy.cpu_s() / cpu.wall
            res.note += f"; py-spy used {res.pyspy_share:.0%} of a core meanwhile"
            res.profile = spy.stop()
            spy = None
        if ready:
            res.note = (res.note + "; " if res.note else "") + (
                f"worker ready after {max(ready):.1f} s"
            )
        return res
    finally:
        if spy is not None:
            spy.stop()
        for w in workers:
            w.stop()
        progress.close()


async def phase_rate(
    args: argparse.Namespace, broker: Broker, rate: float, workdir: Path, profile: bool
) -> Result:
    """A fresh worker; events at `rate`/s for --duration s; latency of the alerts they raise."""
    from aiokafka import AIOKafkaProducer

    topics = Topics(broker.bootstrap, f"r{int(rate)}")
    res = Result(f"rate {rate:,.0f}/s", target_rate=rate)
    n = int(rate * args.duration)
    topics.create()
    worker = Worker(topics, workdir, "w0")
    progress = Progress(topics)
    reader = AlertReader(broker.bootstrap, topics)
    reader_task: asyncio.Task[None] | None = None
    spy: PySpy | None = None
    try:
        await worker.wait_ready(args.timeout)
        res.startup_s = worker.ready_after
        warm = await warm_up(args, broker, topics, [worker], progress)
        log(
            f"  worker ready after {worker.ready_after:.1f} s, warmed up with {warm} events; "
            f"generating {n:,} events"
        )
        items = generate(
            n,
            keys=args.keys,
            t0=time.time(),
            event_rate=rate,
            seed=args.seed + int(rate),
            scenario_share=args.scenario_share,
            run_id=uuid.uuid4().hex[:6],
        )
        reader_task = asyncio.create_task(reader.run())
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5, acks=1)
        await producer.start()
        pids = {"w0": worker.pid, "bench": os.getpid()}
        bpid = broker.pid()
        if bpid:
            pids["broker"] = bpid
        cpu = CpuWindow(pids)
        published: dict[str, float] = {}
        t0 = time.monotonic()
        cpu.start()
        if profile and args.py_spy:
            spy = PySpy(
                worker.pid,
                workdir / f"{topics.suffix}-pyspy.txt",
                args.py_spy_rate,
                args.py_spy_idle,
            )
        sampler_stop = asyncio.Event()

        async def sampler() -> None:
            while not sampler_stop.is_set():
                s = await sample(progress, [worker], t0)
                res.timeline.append(s)
                for k, v in s.lag.items():
                    res.max_lag[k] = max(res.max_lag.get(k, 0), v)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sampler_stop.wait(), 1.0)

        sampler_task = asyncio.create_task(sampler())
        try:
            i = 0
            names = topics.inputs
            send = producer.send
            start = time.monotonic()
            while i < n:
                due = min(n, int((time.monotonic() - start) * rate) + 1)
                if due > i:
                    now = time.time()
                    for it in items[i:due]:
                        published[it.event_id] = now
                        await send(names[it.etype], it.raw)
                    i = due
                await asyncio.sleep(0.002)
            await producer.flush()
            pub_s = time.monotonic() - start
        finally:
            await producer.stop()
        # wait for the worker to finish what was published
        done_by = time.monotonic() + args.drain_timeout
        drained = False
        while time.monotonic() < done_by:
            s = await sample(progress, [worker], t0)
            if caught_up(s, n + warm):
                drained = True
                break
            await asyncio.sleep(0.5)
        caught = time.monotonic() - start
        cpu.stop()
        if spy is not None:
            res.pyspy_share = spy.cpu_s() / cpu.wall
            res.profile = spy.stop()
            spy = None
        sampler_stop.set()
        await sampler_task
        await asyncio.sleep(args.settle)
        reader.stop()
        await reader_task
        reader_task = None
        final = await sample(progress, [worker], t0)
        res.final = final
        t_alert = min(
            (x.t for x in res.timeline if x.alerts_raised >= final.alerts_raised), default=None
        )
        if t_alert:
            res.eps_last_alert = (final.received + final.rejected - warm) / t_alert
        res.events = n
        res.seconds = pub_s
        res.eps = (final.received + final.rejected - warm) / caught if caught else 0.0
        # the last commits trail processing by up to a snapshot interval + the commit interval
        res.kept_up = drained and caught <= pub_s + 10.0
        res.drained = drained
        done = (
            f"worker done {caught - pub_s:.1f} s after the last publish"
            if drained
            else f"worker NOT done {caught - pub_s:.0f} s after the last publish (gave up; "
            "sustained events/s is then stage 1's rate, an upper bound)"
        )
        res.note = (
            f"published {n:,} in {pub_s:.1f} s ({n / pub_s:,.0f}/s); {done}; "
            f"warm-up of {warm} events before, not counted"
        )
        if res.pyspy_share:
            res.note += f"; py-spy used {res.pyspy_share:.0%} of a core meanwhile"
        for a in reader.seen.values():
            ts = [published[e] for e in a.evidence if e in published]
            if len(ts) != len(a.evidence) or not ts:
                continue  # evidence from outside this phase (cannot happen on fresh topics)
            newest = max(ts)
            res.lat_ts.append(a.record_ts - newest)
            res.lat_read.append(a.read_at - newest)
            res.alerts_by_rule[a.rule_id] += 1
        res.alerts = len(reader.seen)
        res.worker_cpu_s = cpu.cpu["w0"]
        res.worker_cpu_share = cpu.share("w0")
        res.worker_peak_rss = [worker.peak_rss_mib()]
        res.broker_share = cpu.share("broker")
        res.bench_share = cpu.share("bench")
        res.machine_busy = cpu.machine_busy
        return res
    finally:
        if spy is not None:
            spy.stop()
        if reader_task is not None:
            reader.stop()
            with contextlib.suppress(Exception):
                await reader_task
        worker.stop()
        progress.close()
        if not args.keep_topics:
            with contextlib.suppress(Exception):
                topics.delete()


# -- report --------------------------------------------------------------------------------------


def fmt_lat(values: list[float], q: float) -> str:
    if not values:
        return "-"
    v = pct(values, q)
    return f"{v * 1000:,.0f} ms" if v < 10 else f"{v:,.1f} s"


def report(
    args: argparse.Namespace,
    results: list[Result],
    ceiling: tuple[float, int] | None,
    publish: tuple[float, int] | None,
) -> None:
    print()
    print("## End-to-end benchmark")
    print()
    print(f"- machine: {machine_description()}")
    print(f"- code: {args.code}")
    if EXTRA_WORKER_ENV:
        print(f"- extra worker environment: {EXTRA_WORKER_ENV}")
    print(
        f"- stream: bench/streamgen.py (the simulator's four event types and scenarios, "
        f"{args.keys:,} recurring plates / serials / person refs), scenario share "
        f"{args.scenario_share:g}; {INPUT_PARTITIONS} partitions per input topic, "
        f"{INTERNAL_PARTITIONS} per internal topic; worker settings at their defaults"
    )
    print(
        "- one machine for everything: broker JVM, worker(s), and this script's producer and "
        "alert reader share its cores (see the CPU columns)"
    )
    if publish is not None:
        print(
            f"- pre-publishing {publish[1]:,} events with one aiokafka producer: "
            f"{publish[1] / publish[0]:,.0f} events/s"
        )
    ceiling_eps = None
    if ceiling is not None:
        ceiling_eps = ceiling[1] / ceiling[0]
        print(
            f"- ceiling: plain aiokafka consumer (no group, all 16 input partitions, "
            f"orjson.loads each value) read {ceiling[1]:,} events in {ceiling[0]:.2f} s = "
            f"**{ceiling_eps:,.0f} events/s**"
        )
    print()
    print(
        "| phase | events | sustained events/s | to last alert | of ceiling | "
        "events per fusion.validated msg | "
        "routed msgs per validated msg | p50 | p95 | p99 | max | "
        "alerts | worker CPU (cores) | worker CPU µs/event | worker peak RSS MiB | "
        "broker CPU | bench CPU | other CPU | machine busy (of "
        f"{os.cpu_count()}) |"
    )
    print("|---|" + "---:|" * 18)
    for r in results:
        frac = f"{r.eps / ceiling_eps:.1%}" if ceiling_eps else "-"
        rss = " + ".join(f"{x:.0f}" for x in r.worker_peak_rss)
        per_ev = r.worker_cpu_s / r.events * 1e6 if r.events else 0.0
        other = max(
            0.0,
            r.machine_busy - r.worker_cpu_share - r.broker_share - r.bench_share - r.pyspy_share,
        )
        per_msg = per_routed = "-"
        if r.final is not None and r.final.ends["dedup"]:
            per_msg = f"{(r.final.received + r.final.rejected) / r.final.ends['dedup']:.1f}"
            per_routed = f"{r.final.ends['correlate'] / r.final.ends['dedup']:.2f}"
        eps = f"{r.eps:,.0f}" if r.drained else f"≤{r.eps:,.0f} (not drained)"
        to_alert = f"{r.eps_last_alert:,.0f}" if r.eps_last_alert else "-"
        print(
            f"| {r.name} | {r.events:,} | {eps} | {to_alert} | {frac} | {per_msg} | {per_routed} | "
            f"{fmt_lat(r.lat_ts, 50)} | "
            f"{fmt_lat(r.lat_ts, 95)} | {fmt_lat(r.lat_ts, 99)} | "
            f"{fmt_lat(r.lat_ts, 100)} | {r.alerts:,} | {r.worker_cpu_share:.2f} | "
            f"{per_ev:,.0f} | {rss} | {r.broker_share:.2f} | {r.bench_share:.2f} | "
            f"{other:.2f} | {r.machine_busy:.2f} |"
        )
    print()
    print(
        "'To last alert' divides by the time until the alert counter reached its final value "
        "instead: nearer the moment processing ended (commits trail it), if the last events "
        "raise no alert slightly optimistic. "
        "Latency = alert record timestamp (worker's producer) - publish time of the newest "
        "evidence. Rate phases: sustained events/s = events the worker ingested / (first publish "
        "-> every stage committed); backlog phases: N / (first event ingested -> every stage "
        "committed). Both end when the consumer group has committed everything, which trails "
        "processing by up to one snapshot interval (stages 2 and 3 ack only what a snapshot "
        "covers: at least 2 s, longer as state grows) plus the 1 s commit interval."
    )
    for r in results:
        print()
        print(f"### {r.name}")
        print()
        if r.note:
            print(f"- {r.note}")
        if r.lat_read:
            print(
                f"- latency when read by this script: p50 {fmt_lat(r.lat_read, 50)}, "
                f"p95 {fmt_lat(r.lat_read, 95)}, p99 {fmt_lat(r.lat_read, 99)}"
            )
        if r.alerts_by_rule:
            print(f"- alerts by rule: {dict(r.alerts_by_rule.most_common())}")
        if r.kept_up is not None:
            print(
                f"- kept up with the rate (drained within 10 s of the last publish): "
                f"{'yes' if r.kept_up else 'NO'}"
            )
        print(
            f"- largest lag seen (messages not committed): input events "
            f"{r.max_lag.get('ingest', 0):,}, fusion.validated batches "
            f"{r.max_lag.get('dedup', 0):,}, fusion.routed batches "
            f"{r.max_lag.get('correlate', 0):,}"
        )
        if r.timeline:
            print()
            print(
                "| t s | received | input lag | validated lag | routed lag | validated msgs | "
                "routed msgs | alerts raised |"
            )
            print("|---:|---:|---:|---:|---:|---:|---:|---:|")
            step = max(1, len(r.timeline) // 12)
            rows = r.timeline[::step]
            if rows[-1] is not r.timeline[-1]:
                rows.append(r.timeline[-1])
            for s in rows:
                print(_lag_row(s))
        if r.profile:
            print()
            print("py-spy of the worker during this phase:")
            print()
            print("```")
            print(r.profile)
            print("```")
    sys.stdout.flush()


# -- main ----------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, broker: Broker, workdir: Path) -> None:
    results: list[Result] = []
    ceiling: tuple[float, int] | None = None
    publish: tuple[float, int] | None = None
    n = args.events

    if not args.skip_backlog:
        topics = Topics(broker.bootstrap, "bl")
        topics.create()
        try:
            log(f"generating {n:,} events ({args.keys:,} keys)")
            items = generate(
                n,
                keys=args.keys,
                t0=time.time(),
                event_rate=args.backlog_event_rate,
                seed=args.seed,
                scenario_share=args.scenario_share,
                run_id=uuid.uuid4().hex[:6],
            )
            log("pre-publishing")
            secs = await publish_all(broker.bootstrap, topics, items)
            publish = (secs, n)
            log(f"  published {n:,} in {secs:.1f} s; ceiling read")
            ceiling = await read_ceiling(broker.bootstrap, topics, n)
            log(f"  ceiling: {ceiling[1]:,} in {ceiling[0]:.2f} s")
            log("backlog, 1 worker")
            r = await phase_backlog(args, broker, topics, n, workdir, 1, profile=True)
            log(f"  {r.eps:,.0f} events/s")
            results.append(r)
        finally:
            if not args.keep_topics:
                with contextlib.suppress(Exception):
                    topics.delete()

    for rate in args.rates:
        log(f"rate {rate:,.0f}/s for {args.duration:.0f} s")
        r = await phase_rate(args, broker, rate, workdir, profile=rate == max(args.rates))
        log(
            f"  {r.eps:,.0f} events/s, p50 {fmt_lat(r.lat_ts, 50)}, p99 {fmt_lat(r.lat_ts, 99)}, "
            f"{r.alerts} alerts"
        )
        results.append(r)

    if args.scale_out:
        topics = Topics(broker.bootstrap, "so")
        topics.create()
        try:
            items = generate(
                n,
                keys=args.keys,
                t0=time.time(),
                event_rate=args.backlog_event_rate,
                seed=args.seed + 1,
                scenario_share=args.scenario_share,
                run_id=uuid.uuid4().hex[:6],
            )
            log("scale-out: pre-publishing")
            await publish_all(broker.bootstrap, topics, items)
            log("backlog, 2 workers")
            r = await phase_backlog(args, broker, topics, n, workdir, 2, profile=False)
            r.note = (
                (r.note + "; " if r.note else "")
                + "both workers started together on the backlog: the group's first rebalance "
                "is included"
            )
            log(f"  {r.eps:,.0f} events/s")
            results.append(r)
        finally:
            if not args.keep_topics:
                with contextlib.suppress(Exception):
                    topics.delete()

    report(args, results, ceiling, publish)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000, help="backlog size (events)")
    ap.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",") if x.strip()],
        default=[1000.0, 5000.0],
        help="fixed publish rates, events/s, comma separated (empty: none)",
    )
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per fixed rate")
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--scenario-share", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument(
        "--backlog-event-rate",
        type=float,
        default=5000.0,
        help="event-time density of the backlog (events per second of occurred_at)",
    )
    ap.add_argument("--no-scale-out", dest="scale_out", action="store_false")
    ap.add_argument("--skip-backlog", action="store_true")
    ap.add_argument("--no-py-spy", dest="py_spy", action="store_false")
    ap.add_argument("--py-spy-rate", type=int, default=50)
    ap.add_argument(
        "--py-spy-idle",
        action="store_true",
        help="include idle samples and thread names (where the worker waits)",
    )
    ap.add_argument("--warmup", type=int, default=500, help="events before a rate phase")
    ap.add_argument(
        "--drain-timeout",
        type=float,
        default=120.0,
        help="after publishing at a rate, wait at most this long for the worker to finish",
    )
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to read alerts after")
    ap.add_argument("--timeout", type=float, default=600.0, help="per phase")
    ap.add_argument("--bootstrap", help="use this broker instead of starting one")
    ap.add_argument(
        "--broker-port", type=int, help="controller: port + 1 (default: two free ports)"
    )
    ap.add_argument("--broker-dir", type=Path, default=REPO / ".broker-bench")
    ap.add_argument("--broker-heap", default="1g")
    ap.add_argument("--keep-broker", action="store_true", help="leave a broker we started up")
    ap.add_argument("--keep-topics", action="store_true")
    ap.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the workers, e.g. FUSION_SNAPSHOT_INTERVAL_S=10 (repeatable)",
    )
    ap.add_argument("--workdir", type=Path, help="worker logs and Faust data (default: temp)")
    args = ap.parse_args(argv)

    for kv in args.worker_env:
        k, _, v = kv.partition("=")
        EXTRA_WORKER_ENV[k.strip()] = v
    args.code = tree_state()  # what the workers import: the tree may change while this runs
    port = broker_port(args.broker_port, args.broker_dir)
    broker = Broker(port, args.broker_dir, args.broker_heap, args.bootstrap)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fusion-e2e-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"worker logs in {workdir}")
    broker.ensure()
    ok = False
    try:
        asyncio.run(run(args, broker, workdir))
        ok = True
    finally:
        if not args.keep_broker:
            broker.stop()
        if ok and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not ok:
            log(f"kept worker logs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
