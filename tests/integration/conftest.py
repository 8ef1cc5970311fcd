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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.keys import generate, write_keys

REPO = Path(__file__).resolve().parents[2]
BROKER_SH = REPO / "deploy" / "kafka" / "broker.sh"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


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
            "deadletter": f"events.deadletter.{suffix}",
            "audit": f"audit.sharing.{suffix}",
            "US": f"alerts.{suffix}.us",
            "MX": f"alerts.{suffix}.mx",
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
            "FUSION_TOPIC_DEADLETTER": self.topics["deadletter"],
            "FUSION_TOPIC_AUDIT": self.topics["audit"],
            "FUSION_ALERT_TOPIC_PREFIX": f"alerts.{suffix}.",
            "FUSION_TOPIC_ROUTED": f"fusion.routed.{suffix}",
            "FUSION_TOPIC_STATE_ENGINE": f"fusion.state.engine.{suffix}",
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
            "FUSION_TOPIC_STATE_ENGINE": f"fusion.state.engine.{tag}",
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
        self.producer.send(topic or self.topics[etype], raw, key=key)

    def flush(self) -> None:
        self.producer.flush()

    def read(
        self, what: str, n: int, timeout: float = 30.0, settle: float = 0.0
    ) -> list[dict[str, Any]]:
        """At least n messages of a topic (all there are after `settle` more seconds)."""
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
        settle_until: float | None = None
        try:
            while time.monotonic() < deadline:
                for msg in c:
                    out.append(orjson.loads(msg.value))
                if len(out) >= n:
                    if settle_until is None:
                        settle_until = time.monotonic() + settle
                    if time.monotonic() >= settle_until:
                        break
        finally:
            c.close()
        return out

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        self.producer.close()


@pytest.fixture
def lab(broker: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    lab = Lab(broker, tmp_path, request.node.name)
    try:
        yield lab
    finally:
        lab.close()
