"""One real Kafka broker per session (started by the project's own script), and helpers to run
workers against per-test topics so tests never see each other's messages."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from streams.keys import generate, write_keys

REPO = Path(__file__).resolve().parents[2]
BROKER_SH = REPO / "deploy" / "kafka" / "broker.sh"
INPUT_TOPIC_SETTINGS = ("DETECTIONS", "SUSPECTS", "WEAPONS", "TRACKING", "TIPS")


LOG_TAIL_LINES = 150


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test's report carries the tails of the logs its processes wrote (workers,
    consoles, servers: every `*.log` in its temporary folder), so a failure in CI explains
    itself without the folder."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    tmp = funcargs.get("tmp_path")
    logs = sorted(tmp.rglob("*.log")) if isinstance(tmp, Path) else []
    broker = funcargs.get("broker_control")
    if isinstance(broker, BrokerControl):
        logs.append(broker.dir / "logs" / "server.log")
    for log in logs:
        if not log.is_file():
            continue
        lines = log.read_text(errors="replace").splitlines()
        tail = "\n".join(lines[-LOG_TAIL_LINES:])
        report.sections.append((f"{log} (last {LOG_TAIL_LINES} of {len(lines)} lines)", tail))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_pair(attempts: int = 500) -> int:
    """A port P with P and P + 1 both free on 127.0.0.1, for a broker and its controller.

    Taken below the kernel's ephemeral range, so that while the broker is down between a stop
    and a start no client's outgoing connection can hold the port (or connect to itself on it).
    """
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    top = ephemeral - 1 if ephemeral > 10001 else 65535
    for _ in range(attempts):
        port = random.randrange(10000, top)
        if _bindable(port) and _bindable(port + 1):
            return port
    raise RuntimeError(f"no two adjacent free ports on 127.0.0.1 in {attempts} tries")


def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait for a condition (polled), failing with `what` at the timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


class BrokerControl:
    """The session's local broker, which fault tests may stop and start again."""

    def __init__(self, port: int) -> None:
        self.bootstrap = f"127.0.0.1:{port}"
        self.dir = REPO / f".broker-test-{port}"
        self.env = {
            **os.environ,
            "FUSION_BROKER_PORT": str(port),
            "FUSION_CONTROLLER_PORT": str(port + 1),
            # One folder per session's broker: sessions running at once never share one.
            "FUSION_BROKER_DIR": str(self.dir),
            "FUSION_BROKER_HEAP": "640m",
            "FUSION_PYTHON": sys.executable,
        }

    def run(self, cmd: str, check: bool = True) -> None:
        subprocess.run([str(BROKER_SH), cmd], env=self.env, check=check)


@pytest.fixture(scope="session")
def broker_control() -> Iterator[BrokerControl | None]:
    """The local broker, or None when `FUSION_TEST_BOOTSTRAP` names an external one."""
    if os.environ.get("FUSION_TEST_BOOTSTRAP"):
        yield None
        return
    port = os.environ.get("FUSION_TEST_BROKER_PORT")
    ctl = BrokerControl(int(port) if port else free_port_pair())
    subprocess.run([str(BROKER_SH), "reset"], env=ctl.env, check=False, capture_output=True)
    ctl.run("start")
    try:
        yield ctl
    finally:
        ctl.run("reset", check=False)


@pytest.fixture(scope="session")
def broker(broker_control: BrokerControl | None) -> str:
    """Bootstrap servers of the session's broker."""
    if broker_control is None:
        return os.environ["FUSION_TEST_BOOTSTRAP"]
    return broker_control.bootstrap


class Worker:
    """A `fusion worker` process."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log_path = log
        self.web_port = int(env["FUSION_WEB_PORT"])
        self.metrics_port = int(env["FUSION_METRICS_PORT"])
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.web_port}/health/ready"
            with urllib.request.urlopen(url, timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}):\n{self.logs()}")
            if self.ready():
                return
            time.sleep(0.25)
        raise AssertionError(f"worker not ready after {timeout} s:\n{self.logs()}")

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as r:
            return str(r.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples matching the labels (0 if none)."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class IdReader:
    """The alert ids on some topics, read on from where the last call stopped."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.topics = topics
        self.ids: set[str] = set()
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
        )
        self.assigned: set[TopicPartition] = set()

    def read(self, ends: dict[TopicPartition, int]) -> set[str]:
        """Every id up to `ends` (the topics' end offsets as of now)."""
        ends = {tp: end for tp, end in ends.items() if end > 0}
        new = set(ends) - self.assigned
        if new:
            self.assigned |= new
            self.consumer.assign(sorted(self.assigned))
            self.consumer.seek_to_beginning(*new)
        deadline = time.monotonic() + 180
        c = self.consumer
        while any(c.position(tp) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, f"could not read {self.topics} to their end"
            for recs in c.poll(timeout_ms=500).values():
                self.ids.update(orjson.loads(r.value)["alert_id"] for r in recs)
        return set(self.ids)

    def close(self) -> None:
        self.consumer.close()


class Lab:
    """Per-test topics (suffixed), a producer, readers, and workers."""

    def __init__(self, bootstrap: str, tmp: Path, name: str) -> None:
        self.bootstrap = bootstrap
        self.tmp = tmp
        suffix = f"{name[:20]}-{uuid.uuid4().hex[:6]}".replace("_", "-")
        self.suffix = suffix
        self.topics = {
            "detection": f"events.detections.{suffix}",
            "suspect": f"events.suspects.{suffix}",
            "weapon": f"events.weapons.{suffix}",
            "track": f"events.tracking.{suffix}",
            "tip": f"events.tips.{suffix}",
            "authorization-us": f"events.authorizations.{suffix}.us",
            "authorization-mx": f"events.authorizations.{suffix}.mx",
            "deadletter": f"events.deadletter.{suffix}",
            "audit": f"audit.sharing.{suffix}",
            "US": f"alerts.{suffix}.us",
            "MX": f"alerts.{suffix}.mx",
            "triage_audit": f"audit.triage.{suffix}",
            "triage.US": f"triage.{suffix}.us",
            "triage.MX": f"triage.{suffix}.mx",
            "inbound.US": f"triage.{suffix}.us.inbound",
            "inbound.MX": f"triage.{suffix}.mx.inbound",
        }
        self.env = {
            **os.environ,
            "FUSION_BOOTSTRAP_SERVERS": bootstrap,
            "FUSION_APP_ID": f"fusion-{suffix}",
            "FUSION_TOPIC_DETECTIONS": self.topics["detection"],
            "FUSION_TOPIC_SUSPECTS": self.topics["suspect"],
            "FUSION_TOPIC_WEAPONS": self.topics["weapon"],
            "FUSION_TOPIC_TRACKING": self.topics["track"],
            "FUSION_TOPIC_TIPS": self.topics["tip"],
            "FUSION_TOPIC_AUTHORIZATIONS": f"events.authorizations.{suffix}",
            "FUSION_TOPIC_DEADLETTER": self.topics["deadletter"],
            "FUSION_TOPIC_AUDIT": self.topics["audit"],
            "FUSION_ALERT_TOPIC_PREFIX": f"alerts.{suffix}.",
            "FUSION_TRIAGE_TOPIC_PREFIX": f"triage.{suffix}.",
            "FUSION_TOPIC_TRIAGE_AUDIT": self.topics["triage_audit"],
            "FUSION_TOPIC_ROUTED": f"fusion.routed.{suffix}",
            "FUSION_TOPIC_CHANGELOG": f"fusion.correlate.changelog.{suffix}",
            "FUSION_LOG_LEVEL": "info",
            "FUSION_SNAPSHOT_INTERVAL_S": "0.5",
            "FUSION_PSEUDONYM_KEYS_FILE": str(tmp / "pseudonym-keys.json"),
        }
        write_keys(tmp / "pseudonym-keys.json", generate(key_id="ktest"))
        subprocess.run(
            [sys.executable, "-m", "streams.cli", "topics"],
            env=self.env,
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
        self.workers: list[Worker] = []
        self._probe: tuple[KafkaConsumer, KafkaAdminClient] | None = None
        self._id_readers: dict[str, IdReader] = {}

    def worker(self, **env: str) -> Worker:
        e = {
            **self.env,
            "FUSION_WEB_PORT": str(free_port()),
            "FUSION_METRICS_PORT": str(free_port()),
            **env,
        }
        w = Worker(e, self.tmp / f"worker-{len(self.workers)}.log")
        self.workers.append(w)
        return w

    def run_env(self, name: str) -> dict[str, str]:
        """Settings for a separate run over the same input topics: its own group, internal
        topics and outputs (create them with `create_run_topics`)."""
        tag = f"{self.suffix}-{name}"
        return {
            "FUSION_APP_ID": f"fusion-{tag}",
            "FUSION_TOPIC_ROUTED": f"fusion.routed.{tag}",
            "FUSION_TOPIC_CHANGELOG": f"fusion.correlate.changelog.{tag}",
            "FUSION_TOPIC_DEADLETTER": f"events.deadletter.{tag}",
            "FUSION_TOPIC_AUDIT": f"audit.sharing.{tag}",
            "FUSION_ALERT_TOPIC_PREFIX": f"alerts.{tag}.",
        }

    def create_run_topics(self, env: dict[str, str]) -> None:
        subprocess.run(
            [sys.executable, "-m", "streams.cli", "topics"],
            env={**self.env, **env},
            cwd=REPO,
            check=True,
            capture_output=True,
        )

    def send(
        self,
        etype: str,
        value: dict[str, Any] | bytes,
        key: bytes | None = None,
        topic: str | None = None,
    ) -> None:
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        self.producer.send(topic or self.topic_for(etype, value), raw, key=key)

    def topic_for(self, etype: str, value: dict[str, Any] | bytes) -> str:
        """The topic of an event type; an authorization goes to its issuer's own topic."""
        if etype == "authorization" and isinstance(value, dict):
            return self.topics[f"authorization-{value['source']['country'].lower()}"]
        return self.topics[etype]

    def flush(self) -> None:
        self.producer.flush()

    def read(
        self, what: str, n: int, timeout: float = 30.0, settled: bool = False
    ) -> list[dict[str, Any]]:
        """At least n messages of a topic (at the timeout, what there is). `settled`: then
        every message on it once the lab's workers have committed all their input, so that
        whatever that input produced is there (alerts still held for the watermark aside)."""
        topic = self.topics.get(what, what)
        c = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            consumer_timeout_ms=200,
        )
        parts = c.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in parts]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and len(out) < n:
                for msg in c:
                    out.append(orjson.loads(msg.value))
        finally:
            c.close()
        if not settled:
            return out
        self.wait_committed(workers=tuple(w for w in self.workers if w.proc.poll() is None))
        return self.read_all(topic)

    def _probes(self) -> tuple[KafkaConsumer, KafkaAdminClient]:
        """A consumer (no group) and an admin client, made once, for offsets."""
        if self._probe is None:
            self._probe = (
                KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None),
                KafkaAdminClient(bootstrap_servers=self.bootstrap),
            )
        return self._probe

    def end_offsets(self, topics: list[str]) -> dict[TopicPartition, int]:
        """Each partition's end offset (the next offset to be written), for every topic."""
        c, _ = self._probes()
        tps = [TopicPartition(t, p) for t in topics for p in (c.partitions_for_topic(t) or ())]
        return dict(c.end_offsets(tps)) if tps else {}

    def committed(self, group: str) -> dict[TopicPartition, int]:
        """The offsets `group` has committed (partitions it never committed are absent)."""
        _, admin = self._probes()
        offsets = admin.list_group_offsets({group: None}).get(group, {})
        return {tp: om.offset for tp, om in offsets.items() if om.offset >= 0}

    def wait_committed(
        self,
        env: dict[str, str] | None = None,
        timeout: float = 120.0,
        workers: tuple[Worker, ...] = (),
    ) -> None:
        """Wait until the workers of a run (`env`: its settings, this lab's by default) have
        committed every input partition to its end, and then `fusion.routed` to where it
        ended at that moment: everything published so far has gone through both stages,
        and what it raised has been flushed to the alert topics (a correlate partition's
        input is committed only after its snapshot, and a snapshot only after its output).
        Alerts still held for the watermark are not covered: wait for those by id."""
        e = {**self.env, **(env or {})}
        group = e["FUSION_APP_ID"]
        inputs = [e[f"FUSION_TOPIC_{t}"] for t in INPUT_TOPIC_SETTINGS]
        inputs += [f"{e['FUSION_TOPIC_AUTHORIZATIONS']}.{cc}" for cc in ("us", "mx")]
        deadline = time.monotonic() + timeout
        for topics in (inputs, [e["FUSION_TOPIC_ROUTED"]]):
            want = {tp: end for tp, end in self.end_offsets(topics).items() if end > 0}
            while True:
                try:
                    done = self.committed(group)
                except KafkaError:  # the coordinator loading after a broker restart: ask again
                    done = {}
                behind = {
                    tp: (done.get(tp, 0), end) for tp, end in want.items() if done.get(tp, 0) < end
                }
                if not behind:
                    break
                for w in workers:
                    assert w.proc.poll() is None, f"worker exited:\n{w.logs()}"
                assert time.monotonic() < deadline, (
                    f"group {group} has not committed, after {timeout} s "
                    f"(partition: committed, end): {sorted(behind.items())[:12]}"
                )
                time.sleep(0.2)

    def alert_ids(self, prefix: str | None = None) -> set[str]:
        """Every alert id on a run's two alert topics (this lab's by default), read to the end
        (by one reader per run that carries on from where it was: topics of many versions
        are not read again from the start)."""
        prefix = prefix or self.env["FUSION_ALERT_TOPIC_PREFIX"]
        reader = self._id_readers.get(prefix)
        if reader is None:
            reader = self._id_readers[prefix] = IdReader(
                self.bootstrap, [f"{prefix}{cc}" for cc in ("us", "mx")]
            )
        return reader.read(self.end_offsets(reader.topics))

    def read_all(self, what: str) -> list[dict[str, Any]]:
        """Every message of a topic up to its end offsets as of now."""
        topic = self.topics.get(what, what)
        ends = {tp: end for tp, end in self.end_offsets([topic]).items() if end > 0}
        if not ends:
            return []
        c = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False)
        out: list[dict[str, Any]] = []
        try:
            c.assign(list(ends))
            c.seek_to_beginning(*ends)
            deadline = time.monotonic() + 180
            while any(c.position(tp) < end for tp, end in ends.items()):
                assert time.monotonic() < deadline, f"could not read {topic} to its end"
                for tp, recs in c.poll(timeout_ms=500).items():
                    out.extend(orjson.loads(r.value) for r in recs if r.offset < ends[tp])
        finally:
            c.close()
        return out

    def wait_alerts(
        self,
        expected: set[str],
        env: dict[str, str] | None = None,
        timeout: float = 240.0,
        workers: tuple[Worker, ...] = (),
    ) -> set[str]:
        """The alert ids on a run's topics once every expected one is there and the run has
        committed all its input (so nothing that input raised is still on its way); at the
        timeout, what is there (the caller's comparison then names what is missing)."""
        e = {**self.env, **(env or {})}
        prefix = e["FUSION_ALERT_TOPIC_PREFIX"]
        deadline = time.monotonic() + timeout
        got = self.alert_ids(prefix)
        while not expected <= got and time.monotonic() < deadline:
            for w in workers:
                assert w.proc.poll() is None, f"worker exited:\n{w.logs()}"
            time.sleep(0.5)
            got = self.alert_ids(prefix)
        self.wait_committed(env, timeout=max(30.0, deadline - time.monotonic()), workers=workers)
        return self.alert_ids(prefix)

    def close(self) -> None:
        try:
            for w in self.workers:
                w.stop()
        finally:
            self.producer.close()
            if self._probe is not None:
                for client in self._probe:
                    client.close()
            for reader in self._id_readers.values():
                reader.close()


@pytest.fixture
def lab(broker: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    lab = Lab(broker, tmp_path, request.node.name)
    try:
        yield lab
    finally:
        lab.close()
