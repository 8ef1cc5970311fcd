"""Peers on one workload: how fast do other Python stream consumers run the same simple rule?

    .venv/bin/python bench/peers.py [--events 200000] [--peers aiokafka,faust,quix,quix-nochangelog]

A dedicated broker (deploy/kafka/broker.sh, free ports, its own folder .broker-peers/, 1 GiB
heap) is started, one topic of 4 partitions is preloaded with N detection events (valid per
schemas/events.py: LPR reads of ~10,000 recurring plates in varying spellings, about 2 h of
event time, each partition in event-time order, keyed and partitioned by normalised plate), and
each peer then consumes the whole topic from the beginning with its own consumer group running
the single rule of bench/peer_rule.py: "5 or more reads of one plate within 10 minutes" (a count
per normalised plate in tumbling 10-minute windows of event time; an alert when a window's
count reaches 5). Peers, one after the other (never two at once):

  aiokafka          plain AIOKafkaConsumer (getmany) + orjson + a dict: the ceiling, in-process
  faust             a plain Faust agent (faust-streaming 0.15.3), dict state, subprocess
                    (bench/peer_faust_app.py)
  quix              Quix Streams 3.28.1 `tumbling_window(10 min).count().current()` with its
                    defaults (RocksDB state + changelog topic), subprocess (bench/peer_quix_app.py)
  quix-nochangelog  the same with use_changelog_topics=False (state in RocksDB only)

events/s = N / (wall time from the peer's first message to its N-th), measured inside the
consumer's process, so start-up and group joins are excluded (shown apart as "start-up").
CPU = the consumer process's CPU time over that interval (all its threads) per second.

Quix Streams 3.28.1 requires pydantic<2.14 and pydantic-settings<2.16, which this project's
pins (pydantic 2.14.4, pydantic-settings 2.16.3) exclude: it can be neither a `dev` extra
(`pip install -e '.[dev]'` would fail to resolve) nor installed into .venv (it would downgrade
pydantic under the pipeline). It runs from its own virtualenv instead, made on first use from
bench/requirements-quix.txt in ~/.cache/borderfusion/ (or FUSION_QUIX_PYTHON: an interpreter
that has it).

From another script on a broker it already runs (e.g. bench/e2e_bench.py, in the same run as
the pipeline's worker):

    from peers import preload, run_peers          # with bench/ on sys.path
    info = preload(bootstrap, topic, n=200_000)    # or `await apreload(...)` in async code
    results = run_peers(bootstrap, topic, n, expected_windows=info.expected_windows)
    # in async code: `await arun_peers(...)`; print(render_table(results, info))
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(REPO))

from peer_rule import RESULT_PREFIX, Clock, PlateWindows  # noqa: E402
from provenance import cpus_and_memory, tree_state  # noqa: E402

BROKER_SH = REPO / "deploy" / "kafka" / "broker.sh"
QUIX_VERSION = "3.28.1"
QUIX_REQUIREMENTS = BENCH / "requirements-quix.txt"
PLATE_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
ALL_PEERS = ("aiokafka", "faust", "quix", "quix-nochangelog")
PEER_TITLES = {
    "aiokafka": "plain aiokafka consumer + orjson + dict (ceiling)",
    "faust": "Faust agent (faust-streaming 0.15.3) + dict",
    "quix": f"Quix Streams {QUIX_VERSION}, tumbling window (RocksDB + changelog)",
    "quix-nochangelog": f"Quix Streams {QUIX_VERSION}, tumbling window (RocksDB, no changelog)",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return total - idle, total


def free_port(avoid: Sequence[int] = ()) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port


# -- the dedicated broker ----------------------------------------------------------------------


@dataclass
class BenchBroker:
    """A broker started by deploy/kafka/broker.sh on its own ports and folder."""

    port: int
    controller_port: int
    folder: Path
    heap: str = "1g"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "FUSION_BROKER_PORT": str(self.port),
            "FUSION_CONTROLLER_PORT": str(self.controller_port),
            "FUSION_BROKER_DIR": str(self.folder),
            "FUSION_BROKER_HEAP": self.heap,
            "FUSION_PYTHON": sys.executable,
        }

    def pid(self) -> int | None:
        try:
            pid = int((self.folder / "broker.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None


def start_broker(folder: Path = REPO / ".broker-peers", heap: str = "1g") -> BenchBroker:
    """Start a fresh broker on free ports in `folder` (wiped first). broker.sh start returns
    once the broker answers an admin request (it polls), so no sleep is needed here."""
    port = free_port()
    broker = BenchBroker(port, free_port(avoid=(port,)), folder, heap)
    # Wipe a folder left by an earlier run: its metadata names other controller ports.
    subprocess.run([str(BROKER_SH), "reset"], env=broker.env, check=True, stdout=subprocess.DEVNULL)
    log(f"starting a broker on {broker.bootstrap} (folder {folder}, heap {heap})")
    subprocess.run([str(BROKER_SH), "start"], env=broker.env, check=True, stdout=sys.stderr)
    return broker


def stop_broker(broker: BenchBroker, delete: bool = True) -> None:
    """Stop it; `delete` also removes its folder (`broker.sh reset`)."""
    log(f"stopping the broker on {broker.bootstrap}")
    cmd = "reset" if delete else "stop"
    subprocess.run([str(BROKER_SH), cmd], env=broker.env, check=False, stdout=sys.stderr)


# -- the workload: preloaded detections --------------------------------------------------------


@dataclass
class PreloadInfo:
    topic: str
    events: int
    partitions: int
    plates: int
    span_s: float
    expected_windows: int  # plate windows that reach 5 reads (the alerts every peer should find)
    bytes_total: int
    generate_s: float
    publish_s: float


def make_plates(count: int, rng: random.Random) -> list[str]:
    plates: set[str] = set()
    while len(plates) < count:
        plates.add("".join(rng.choices(PLATE_LETTERS, k=3)) + f"{rng.randint(0, 9999):04d}")
    return sorted(plates)


def spell(plate: str, r: float) -> str:
    """A spelling of a canonical plate as a reader may report it (normalises back to it)."""
    if r < 0.6:
        return f"{plate[:3]}-{plate[3:]}"
    if r < 0.8:
        return f"{plate[:3].lower()} {plate[3:]}"
    return plate


def make_detections(
    n: int,
    *,
    partitions: int = 4,
    plates: int = 10_000,
    span_s: float = 7200.0,
    seed: int = 7,
    end_ts: float | None = None,
) -> tuple[list[list[tuple[bytes, bytes, int]]], int, int]:
    """n LPR detections (key, value, timestamp ms) per partition, event time spread evenly over
    `span_s` up to `end_ts` (default: a 10-minute boundary), each plate's partition fixed by its
    normalised form. Returns (per-partition lists, windows reaching 5, total value bytes)."""
    from streams.tools.simulator import CROSSINGS, MX_AGENCIES, US_AGENCIES

    rng = random.Random(seed)
    pool = make_plates(plates, rng)
    part_of = {p: zlib.crc32(p.encode()) % partitions for p in pool}
    key_of = {p: p.encode() for p in pool}
    # Default end: the last 10-minute boundary at least a minute ago, so a seed always gives
    # the same windows (and the same expected count).
    end = end_ts if end_ts is not None else (time.time() - 60.0) // 600 * 600
    t0_ms = int((end - span_s) * 1000)
    step_ms = span_s * 1000 / n
    run = uuid.uuid4().hex[:6]
    out: list[list[tuple[bytes, bytes, int]]] = [[] for _ in range(partitions)]
    expected = PlateWindows()
    total = 0
    dumps = orjson.dumps
    for i in range(n):
        ts_ms = t0_ms + int(i * step_ms)
        plate = rng.choice(pool)
        name, lat, lon = rng.choice(CROSSINGS)
        country = "US" if rng.random() < 0.5 else "MX"
        ev = {
            "event_id": f"det-{run}-{i}",
            "event_type": "detection",
            "occurred_at": datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "source": {
                "agency": rng.choice(US_AGENCIES if country == "US" else MX_AGENCIES),
                "country": country,
            },
            "location": {
                "lat": round(lat + rng.uniform(-0.01, 0.01), 5),
                "lon": round(lon + rng.uniform(-0.01, 0.01), 5),
                "accuracy_m": round(rng.uniform(3, 30), 1),
            },
            "sensor_id": f"LPR-{name.replace(' ', '')}-{rng.randint(1, 12)}",
            "sensor_kind": "lpr",
            "subject_kind": "vehicle",
            "count": 1,
            "plate": spell(plate, rng.random()),
            "confidence": round(rng.uniform(0.7, 1.0), 2),
        }
        raw = dumps(ev)
        total += len(raw)
        out[part_of[plate]].append((key_of[plate], raw, ts_ms))
        expected.add(plate, ts_ms)
    return out, expected.fired, total


def validate_sample(parts: list[list[tuple[bytes, bytes, int]]], k: int = 500) -> None:
    """The first k events of each partition against the wire contract (pydantic)."""
    from schemas.events import Detection, normalize_plate

    for records in parts:
        for key, raw, _ in records[:k]:
            d = Detection.model_validate_json(raw)
            assert d.plate is not None and normalize_plate(d.plate) == key.decode()


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-peers")
    await admin.start()
    try:
        resp = await admin.create_topics([NewTopic(topic, partitions, 1)])
        for err in getattr(resp, "topic_errors", []) or []:
            if err[1] != 0:
                raise RuntimeError(f"creating topic {topic}: error {err}")
    finally:
        await admin.close()


async def apreload(
    bootstrap: str,
    topic: str,
    n: int = 200_000,
    partitions: int = 4,
    *,
    plates: int = 10_000,
    span_s: float = 7200.0,
    seed: int = 7,
) -> PreloadInfo:
    """Create `topic` and publish n detections into it (see `make_detections`)."""
    from aiokafka import AIOKafkaProducer

    t = time.perf_counter()
    parts, expected, total = make_detections(
        n, partitions=partitions, plates=plates, span_s=span_s, seed=seed
    )
    validate_sample(parts)
    gen_s = time.perf_counter() - t
    await create_topic(bootstrap, topic, partitions)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=50,
        max_batch_size=1024 * 1024,
        max_request_size=16 * 1024 * 1024,
    )
    await producer.start()
    try:
        t = time.perf_counter()
        futures: list[asyncio.Future[object]] = []
        for p, records in enumerate(parts):
            batch = producer.create_batch()
            for key, raw, ts_ms in records:
                if batch.append(key=key, value=raw, timestamp=ts_ms) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=p))
                    batch = producer.create_batch()
                    batch.append(key=key, value=raw, timestamp=ts_ms)
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*futures)
        pub_s = time.perf_counter() - t
    finally:
        await producer.stop()
    return PreloadInfo(topic, n, partitions, plates, span_s, expected, total, gen_s, pub_s)


def preload(
    bootstrap: str,
    topic: str,
    n: int = 200_000,
    partitions: int = 4,
    *,
    plates: int = 10_000,
    span_s: float = 7200.0,
    seed: int = 7,
) -> PreloadInfo:
    """Synchronous `apreload` (not from inside a running event loop: await apreload there)."""
    return asyncio.run(
        apreload(bootstrap, topic, n, partitions, plates=plates, span_s=span_s, seed=seed)
    )


# -- peers -------------------------------------------------------------------------------------


@dataclass
class PeerResult:
    name: str
    title: str
    events: int = 0
    seconds: float = 0.0  # first message -> n-th message
    eps: float = 0.0
    windows: int = 0  # windows that reached 5 (alerts emitted)
    cpu_cores: float = 0.0  # consumer process CPU over those seconds
    startup_s: float = 0.0  # consumer created / process spawned -> first message
    late: int = 0
    machine_busy: float = 0.0  # CPUs busy machine-wide while the peer ran (start-up included)
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error and self.events > 0


def _from_clock(res: PeerResult, data: dict[str, float], t_spawn: float) -> PeerResult:
    res.events = int(data["events"])
    res.seconds = float(data["seconds"])
    res.eps = res.events / res.seconds if res.seconds > 0 else 0.0
    res.windows = int(data["windows"])
    res.late = int(data.get("late", 0))
    res.cpu_cores = float(data["cpu_s"]) / res.seconds if res.seconds > 0 else 0.0
    res.startup_s = float(data["epoch_first"]) - t_spawn
    return res


async def peer_aiokafka(bootstrap: str, topic: str, n: int, limit_s: float) -> PeerResult:
    """The ceiling: one AIOKafkaConsumer in this process, getmany batches, orjson, a dict."""
    from aiokafka import AIOKafkaConsumer

    res = PeerResult("aiokafka", PEER_TITLES["aiokafka"])
    t_spawn = time.time()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"peers-aiokafka-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        rule = PlateWindows()
        clock = Clock(n)
        loads = orjson.loads
        on_event = rule.on_event
        tick = clock.tick
        deadline = time.monotonic() + limit_s
        while clock.count < n:
            if time.monotonic() > deadline:
                res.error = f"only {clock.count:,} of {n:,} events within {limit_s:.0f} s"
                return res
            batches = await consumer.getmany(timeout_ms=500, max_records=20_000)
            for records in batches.values():
                for r in records:
                    on_event(loads(r.value))
                    tick()
        return _from_clock(res, clock.result(rule.fired, rule.late), t_spawn)
    finally:
        await consumer.stop()


async def _child_peer(
    res: PeerResult,
    argv: list[str],
    env: dict[str, str],
    workdir: Path,
    limit_s: float,
    stop_with_sigterm: bool,
) -> PeerResult:
    """Run a peer process; its `PEER_RESULT {json}` line on stdout is the result."""
    log_path = workdir / f"{res.name}.log"
    t_spawn = time.time()
    with log_path.open("wb") as errlog:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=errlog,
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + limit_s
        data: dict[str, float] | None = None
        tail: list[str] = []
        try:
            while data is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    res.error = f"no result within {limit_s:.0f} s"
                    break
                try:
                    line = await asyncio.wait_for(proc.stdout.readline(), left)
                except TimeoutError:
                    continue
                if not line:  # exited without a result
                    await proc.wait()
                    res.error = f"exited with code {proc.returncode} without a result"
                    break
                text = line.decode(errors="replace").rstrip()
                if text.startswith(RESULT_PREFIX):
                    data = orjson.loads(text[len(RESULT_PREFIX) :])
                else:
                    tail = [*tail[-20:], text]
        finally:
            if proc.returncode is None:
                if stop_with_sigterm or data is None:
                    proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
                    res.notes.append("had to be killed after its result")
    if data is None:
        errtail = log_path.read_text(errors="replace")[-3000:]
        res.error += f"\nstdout tail:\n{chr(10).join(tail)}\nstderr tail:\n{errtail}"
        return res
    return _from_clock(res, data, t_spawn)


async def peer_faust(bootstrap: str, topic: str, n: int, limit_s: float) -> PeerResult:
    res = PeerResult("faust", PEER_TITLES["faust"])
    group = f"peers-faust-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PEER_BOOTSTRAP": bootstrap,
        "PEER_TOPIC": topic,
        "PEER_N": str(n),
        "PEER_GROUP": group,
        "PEER_WEB_PORT": str(free_port()),
    }
    with tempfile.TemporaryDirectory(prefix="peers-faust-") as d:
        argv = [sys.executable, str(BENCH / "peer_faust_app.py"), "worker", "-l", "warn"]
        return await _child_peer(res, argv, env, Path(d), limit_s, stop_with_sigterm=True)


def _requirements_digest() -> str:
    return hashlib.sha256(QUIX_REQUIREMENTS.read_bytes()).hexdigest()[:16]


def _has_quix(python: str) -> bool:
    out = subprocess.run(
        [python, "-c", "import quixstreams, orjson; print(quixstreams.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.returncode == 0 and out.stdout.strip() == QUIX_VERSION


def quix_python() -> str:
    """An interpreter with quixstreams==QUIX_VERSION: FUSION_QUIX_PYTHON, else a virtualenv in
    the user's cache made (once per requirements file) from bench/requirements-quix.txt."""
    explicit = os.environ.get("FUSION_QUIX_PYTHON")
    if explicit:
        if not _has_quix(explicit):
            raise RuntimeError(f"FUSION_QUIX_PYTHON={explicit} has no quixstreams {QUIX_VERSION}")
        return explicit
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "borderfusion"
    venv = cache / f"quixstreams-{QUIX_VERSION}-venv"
    python = venv / "bin" / "python"
    stamp = venv / ".requirements-sha256"
    want = _requirements_digest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == want:
        if _has_quix(str(python)):
            return str(python)
    log(f"making a virtualenv with quixstreams {QUIX_VERSION} in {venv} (once)")
    t = time.monotonic()
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(QUIX_REQUIREMENTS)], check=True)
    if not _has_quix(str(python)):
        raise RuntimeError(f"quixstreams {QUIX_VERSION} does not import in {venv}")
    stamp.write_text(want + "\n")
    log(f"  done in {time.monotonic() - t:.0f} s")
    return str(python)


async def peer_quix(
    bootstrap: str, topic: str, n: int, limit_s: float, *, changelog: bool, python: str
) -> PeerResult:
    name = "quix" if changelog else "quix-nochangelog"
    res = PeerResult(name, PEER_TITLES[name])
    group = f"peers-{name}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="peers-quix-") as d:
        env = {
            **os.environ,
            "PEER_BOOTSTRAP": bootstrap,
            "PEER_TOPIC": topic,
            "PEER_N": str(n),
            "PEER_GROUP": group,
            "PEER_STATE_DIR": str(Path(d) / "state"),
            "PEER_QUIX_CHANGELOG": "1" if changelog else "0",
        }
        argv = [python, str(BENCH / "peer_quix_app.py")]
        return await _child_peer(res, argv, env, Path(d), limit_s, stop_with_sigterm=False)


async def delete_peer_topics(bootstrap: str, marker: str = "peers-") -> None:
    """Topics the peers made themselves (Quix changelogs, Faust's leader topic): they carry
    their consumer group's name, which starts with `marker`."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-peers-cleanup")
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if marker in t]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


async def arun_peers(
    bootstrap: str,
    topic: str,
    n: int,
    *,
    peers: Sequence[str] = ALL_PEERS,
    expected_windows: int | None = None,
    limit_s: float = 180.0,
) -> list[PeerResult]:
    """Run each peer in turn over the whole of `topic` (n events, already published), each
    with a fresh consumer group from the earliest offset. A peer that fails is returned with
    `error` set; the others still run."""
    unknown = set(peers) - set(ALL_PEERS)
    if unknown:
        raise ValueError(f"unknown peers {sorted(unknown)}; known: {', '.join(ALL_PEERS)}")
    qpython: str | None = None
    qerror = ""
    if any(p.startswith("quix") for p in peers):
        try:
            qpython = await asyncio.to_thread(quix_python)
        except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
            qerror = f"Quix Streams unavailable: {exc}"
    results: list[PeerResult] = []
    for name in peers:
        log(f"peer {name}: {PEER_TITLES[name]}")
        m0 = machine_ticks()
        try:
            if name == "aiokafka":
                r = await peer_aiokafka(bootstrap, topic, n, limit_s)
            elif name == "faust":
                r = await peer_faust(bootstrap, topic, n, limit_s)
            elif qpython is None:
                r = PeerResult(name, PEER_TITLES[name], error=qerror)
            else:
                changelog = name == "quix"
                r = await peer_quix(
                    bootstrap, topic, n, limit_s, changelog=changelog, python=qpython
                )
        except Exception as exc:
            r = PeerResult(name, PEER_TITLES[name], error=f"{type(exc).__name__}: {exc}")
        m1 = machine_ticks()
        if m1[1] > m0[1]:
            r.machine_busy = (os.cpu_count() or 1) * (m1[0] - m0[0]) / (m1[1] - m0[1])
        if r.ok and r.events != n:
            r.notes.append(f"read {r.events:,} events, not {n:,}")
        if r.ok and expected_windows is not None and r.windows != expected_windows:
            r.notes.append(f"found {r.windows:,} windows, expected {expected_windows:,}")
        if r.ok:
            log(
                f"  {r.eps:,.0f} events/s ({r.events:,} in {r.seconds:.2f} s), "
                f"{r.windows:,} windows, start-up {r.startup_s:.1f} s"
            )
        else:
            log(f"  FAILED: {r.error[:2000]}")
        results.append(r)
    with contextlib.suppress(Exception):
        await delete_peer_topics(bootstrap)
    return results


def run_peers(
    bootstrap: str,
    topic: str,
    n: int,
    *,
    peers: Sequence[str] = ALL_PEERS,
    expected_windows: int | None = None,
    limit_s: float = 180.0,
) -> list[PeerResult]:
    """Synchronous `arun_peers` (from inside a running event loop, await arun_peers)."""
    return asyncio.run(
        arun_peers(
            bootstrap, topic, n, peers=peers, expected_windows=expected_windows, limit_s=limit_s
        )
    )


# -- report ------------------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def machine_description() -> str:
    java = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
        java = (out.stderr or out.stdout).splitlines()[0]
    return (
        f"{cpus_and_memory()}, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; {java}"
    )


def render_table(results: Sequence[PeerResult], info: PreloadInfo | None = None) -> str:
    """The Markdown table: consumer | events/s | ratio to Quix | alerts/windows | ..."""
    quix = next((r for r in results if r.name == "quix" and r.ok), None)
    if quix is None:
        quix = next((r for r in results if r.name.startswith("quix") and r.ok), None)
    lines = [
        "| consumer | events/s | ratio to Quix | alerts/windows | first→last s | "
        f"consumer CPU (cores) | start-up s | machine busy (of {os.cpu_count()}) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if not r.ok:
            reason = r.error.splitlines()[0] if r.error else "no events"
            lines.append(f"| {r.title} | failed: {reason} | - | - | - | - | - | - |")
            continue
        ratio = f"{r.eps / quix.eps:.2f}x" if quix is not None and quix.eps else "-"
        windows = f"{r.windows:,}"
        if info is not None and r.name in ALL_PEERS and r.windows != info.expected_windows:
            windows += f" (expected {info.expected_windows:,})"
        lines.append(
            f"| {r.title} | {r.eps:,.0f} | {ratio} | {windows} | {r.seconds:.2f} | "
            f"{r.cpu_cores:.2f} | {r.startup_s:.1f} | {r.machine_busy:.2f} |"
        )
    notes = [f"- {r.name}: {'; '.join(r.notes)}" for r in results if r.notes]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def report(results: Sequence[PeerResult], info: PreloadInfo, total_s: float | None) -> str:
    out = [
        "## Peers on one rule (5 reads of one plate in 10 minutes)",
        "",
        f"- machine: {machine_description()}",
        f"- code: {tree_state()}",
        f"- clients: aiokafka {_version('aiokafka')}, faust-streaming "
        f"{_version('faust-streaming')}, orjson {_version('orjson')}; quixstreams {QUIX_VERSION} "
        "(own virtualenv, confluent-kafka/librdkafka)",
        f"- input: {info.events:,} LPR detections in one topic of {info.partitions} partitions "
        f"({info.bytes_total / info.events:.0f} B each), {info.plates:,} recurring plates in "
        f"varying spellings, {info.span_s / 3600:.1f} h of event time, each partition in "
        f"event-time order, keyed by normalised plate; "
        f"{info.expected_windows:,} plate windows reach 5 reads",
        f"- preload: generated and sampled-validated in {info.generate_s:.1f} s, published in "
        f"{info.publish_s:.1f} s ({info.events / info.publish_s:,.0f} events/s, aiokafka "
        "batches)",
        "- events/s = events / (first message -> last message), inside the consumer's process "
        "(start-up and group join excluded; start-up = creation or spawn -> first message); "
        "the broker shares the machine's CPUs with each consumer; peers run one at a time; "
        "machine busy = CPUs in use machine-wide over the peer's whole run (start-up included: "
        "the consumer, the broker and anything else on the machine)",
        "",
        render_table(results, info),
    ]
    if total_s is not None:
        out += ["", f"Whole run (broker start, preload, all peers, broker stop): {total_s:.0f} s"]
    return "\n".join(out)


# -- main --------------------------------------------------------------------------------------


async def _run(args: argparse.Namespace, bootstrap: str) -> tuple[list[PeerResult], PreloadInfo]:
    topic = f"peers.detections.{uuid.uuid4().hex[:6]}"
    log(f"preloading {args.events:,} detections into {topic} ({args.partitions} partitions)")
    info = await apreload(
        bootstrap,
        topic,
        args.events,
        args.partitions,
        plates=args.plates,
        span_s=args.span_min * 60.0,
        seed=args.seed,
    )
    log(
        f"  generated in {info.generate_s:.1f} s, published in {info.publish_s:.1f} s; "
        f"{info.expected_windows:,} windows reach 5"
    )
    try:
        results = await arun_peers(
            bootstrap,
            topic,
            args.events,
            peers=args.peers,
            expected_windows=info.expected_windows,
            limit_s=args.timeout,
        )
    finally:
        if args.bootstrap:  # a broker we did not start: leave no 200k-event topic behind
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            with contextlib.suppress(Exception):
                await admin.delete_topics([topic])
            await admin.close()
    return results, info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--plates", type=int, default=10_000)
    ap.add_argument("--span-min", type=float, default=120.0, help="minutes of event time")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--peers",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=list(ALL_PEERS),
        help=f"comma separated, from {','.join(ALL_PEERS)}",
    )
    ap.add_argument("--timeout", type=float, default=180.0, help="per peer, seconds")
    ap.add_argument("--bootstrap", help="use this broker instead of starting one")
    ap.add_argument("--broker-dir", type=Path, default=REPO / ".broker-peers")
    ap.add_argument("--broker-heap", default="1g")
    ap.add_argument("--keep-broker", action="store_true", help="leave the broker up (and data)")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    if any(p.startswith("quix") for p in args.peers):
        with contextlib.suppress(Exception):  # arun_peers reports the failure in the table
            quix_python()  # (a first-time install is not part of the run's figures)
    broker: BenchBroker | None = None
    if not args.bootstrap:
        broker = start_broker(args.broker_dir, args.broker_heap)
    bootstrap = args.bootstrap or (broker.bootstrap if broker else "")
    try:
        results, info = asyncio.run(_run(args, bootstrap))
    finally:
        if broker is not None and not args.keep_broker:
            stop_broker(broker, delete=True)
    print(report(results, info, time.monotonic() - t0))
    return 0 if all(r.ok and not r.notes for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
