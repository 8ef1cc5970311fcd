"""Alerts to TAK on the real broker: a worker sends each country's alerts as Cursor on Target
events to that country's TAK server, a real one (taky 0.10 from PyPI, installed by the
`taky` fixture into its own venv under ~/.cache/borderfusion), read back by a TAK client that
identifies itself to the server like ATAK does. A TAK server that is down or goes away neither
blocks nor crashes the worker."""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.geo import haversine_km
from streams.settings import Settings
from streams.worker.metrics import Metrics
from streams.worker.tak import TakOutput
from tests.integration.conftest import Lab, free_port
from tests.integration.test_pipeline import NOGALES_MX, NOGALES_US, SONORA, crossing, event
from tests.unit.test_cot import watchlist_alert

pytestmark = pytest.mark.integration

TAKY_VERSION = "0.10"
TUCSON = (32.2226, -110.9747)  # ~95 km inside the US: generalised for Mexico
CONSOLE = "https://ops-{cc}.example.org/"


@pytest.fixture(scope="session")
def taky() -> Path:
    """The `taky` command: taky from PyPI in its own venv (its Flask 2 and lxml pins stay out
    of the project's), made once and cached beside the Kafka jars."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = cache / "borderfusion" / f"taky-{TAKY_VERSION}"
    exe = venv / "bin" / "taky"
    if not exe.exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, f"taky=={TAKY_VERSION}"], check=True, timeout=600)
    return exe


class TakServer:
    """A taky CoT server on 127.0.0.1 (plain TCP), which a test may stop and start again."""

    def __init__(self, exe: Path, port: int) -> None:
        self.exe = exe
        self.port = port
        self.url = f"tcp://127.0.0.1:{port}"
        self.root = Path(tempfile.mkdtemp(prefix="taky-"))  # short: it holds a unix socket
        (self.root / "taky.conf").write_text(
            "[taky]\nhostname = localhost\nbind_ip = 127.0.0.1\nroot_dir = .\n"
            f"[cot_server]\nport = {port}\n[ssl]\nenabled = false\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.clients: list[TakClient] = []
        self._log = (self.root / "taky.log").open("ab")

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(self.exe), "-c", str(self.root / "taky.conf"), "-l", "info"],
            cwd=self.root,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"taky exited:\n{self.logs()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                time.sleep(0.1)
            else:
                return
        raise AssertionError(f"taky not listening after 30 s:\n{self.logs()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def logs(self) -> str:
        self._log.flush()
        return (self.root / "taky.log").read_text(errors="replace")[-4000:]

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.kill()
        self._log.close()
        shutil.rmtree(self.root, ignore_errors=True)


class TakClient:
    """A TAK client on one server: announces itself (so the server also hands it the markers
    it holds) and parses every CoT event it receives."""

    def __init__(self, server: TakServer, name: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        server.clients.append(self)
        self.sock.settimeout(0.2)
        self.parser = ET.XMLPullParser(events=("end",))
        self.parser.feed(b"<stream>")
        self.events: dict[str, ET.Element] = {}
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        self.sock.sendall(
            f'<event version="2.0" uid="pytest-{name}" type="a-f-G-U-C" how="h-e" time="{now}" '
            f'start="{now}" stale="2099-01-01T00:00:00.000Z"><point lat="0" lon="0" hae="0" '
            'ce="9999999" le="9999999"/><detail><takv os="test" device="pytest" version="1" '
            f'platform="pytest"/><contact callsign="{name}" endpoint="*:-1:stcp"/>'
            '<__group name="Cyan" role="Team Member"/></detail></event>'.encode()
        )

    def collect(
        self, done: Callable[[dict[str, ET.Element]], bool], timeout: float = 30.0
    ) -> dict[str, ET.Element]:
        """Read until `done(events by uid)` holds; the events received so far either way."""
        deadline = time.monotonic() + timeout
        while not done(self.events) and time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            self.parser.feed(data)
            for _, elem in self.parser.read_events():
                if elem.tag == "event" and elem.get("uid", "").startswith("border-fusion."):
                    self.events[elem.get("uid", "")] = elem
        return dict(self.events)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def tak_servers(taky: Path) -> Iterator[Callable[[], TakServer]]:
    made: list[TakServer] = []

    def make() -> TakServer:
        server = TakServer(taky, free_port())
        made.append(server)
        server.start()
        return server

    yield make
    for server in made:
        server.close()


def uid(alert: dict[str, Any]) -> str:
    return f"border-fusion.{alert['alert_id']}.{alert['recipient'].lower()}"


def cot_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def check_event(cot: ET.Element, alert: dict[str, Any], cot_type: str) -> None:
    """The CoT event says what the alert on alerts.<cc> says."""
    assert cot.get("type") == cot_type
    assert cot.get("how") == "m-f"
    raised = cot_time(alert["raised_at"])
    assert abs((cot_time(cot.get("time", "")) - raised).total_seconds()) < 0.001
    stale_s = (cot_time(cot.get("stale", "")) - cot_time(cot.get("time", ""))).total_seconds()
    assert abs(stale_s - 900) < 0.01
    point = cot.find("point")
    assert point is not None
    loc = alert["location"]
    assert float(point.get("lat", "")) == pytest.approx(loc["lat"], abs=1e-6)
    assert float(point.get("lon", "")) == pytest.approx(loc["lon"], abs=1e-6)
    ce = float(point.get("ce", ""))
    if loc.get("precision_m"):  # the generalised cell's half diagonal
        assert ce == pytest.approx(loc["precision_m"] * math.sqrt(2) / 2, abs=0.1)
    elif alert["rule_id"] == "coordinated-crossing":  # a centroid: out to the farthest event
        farthest = max(
            haversine_km(loc["lat"], loc["lon"], e["location"]["lat"], e["location"]["lon"])
            for e in (ev["fields"] for ev in alert["evidence"])
        )
        assert ce == pytest.approx(farthest * 1000 + 50, abs=0.1)
    else:  # the sighting's own location, as reported
        assert ce == 50.0
    detail = cot.find("detail")
    assert detail is not None
    fusion = detail.find("__fusion")
    assert fusion is not None
    assert fusion.get("alert_id") == alert["alert_id"]
    assert fusion.get("tlp") == alert["tlp"]
    assert fusion.get("recipient") == alert["recipient"]
    cc = alert["recipient"].lower()
    link = detail.find("link")
    assert link is not None
    assert link.get("url") == f"https://ops-{cc}.example.org/#alert={alert['alert_id']}"
    remarks = detail.findtext("remarks") or ""
    assert remarks.startswith(f"{alert['tlp']} {alert['title']}")
    assert f"Severity {alert['severity']}, score {alert['score']}" in remarks
    for ev in alert["evidence"]:
        assert f"{ev['source']['agency']} ({ev['source']['country']})" in remarks
        for name in ("plate", "person_ref"):
            value = ev["fields"].get(name)
            if value is not None:  # as released: the pseudonyms, or the country's own value
                shown = " / ".join(value) if isinstance(value, list) else value
                assert f"{name}={shown}" in remarks


def watchlist_pair(plate: str, sighting_at: tuple[float, float]) -> list[dict[str, Any]]:
    suspect = event(
        "suspect", country="MX", at=-86400, where=NOGALES_MX, plate=plate, person_ref=f"MX-{plate}"
    )
    return [suspect, event("detection", country="US", at=-5, where=sighting_at, plate=plate)]


def send_all(lab: Lab, events: list[dict[str, Any]]) -> None:
    for e in events:
        lab.send(e["event_type"], e, key=uuid.uuid4().bytes)
    lab.flush()


def test_alerts_reach_each_countrys_tak_server_as_cot_events(
    lab: Lab, tak_servers: Callable[[], TakServer]
) -> None:
    us_tak, mx_tak = tak_servers(), tak_servers()
    us_client, mx_client = TakClient(us_tak, "us-field"), TakClient(mx_tak, "mx-field")
    w = lab.worker(
        FUSION_TAK_SERVERS=json.dumps({"US": us_tak.url, "MX": mx_tak.url}),
        FUSION_CONSOLE_PUBLIC_URL=CONSOLE,
        FUSION_COT_STALE_S="900",
    )
    w.wait_ready()
    # Both countries: a sighting inland in the US (generalised for Mexico) of a plate on
    # Mexico's watchlist; Mexico only: a crossing on its own territory.
    send_all(lab, [*watchlist_pair("RTX-502", TUCSON), *crossing(5, where=SONORA)])

    us = lab.read("US", 1, settled=True)
    mx = lab.read("MX", 2, settled=True)
    assert {a["rule_id"] for a in us} == {"watchlist-plate"}
    assert {a["rule_id"] for a in mx} == {"watchlist-plate", "coordinated-crossing"}
    us_events = us_client.collect(lambda got: len(got) >= len(us))
    mx_events = mx_client.collect(lambda got: len(got) >= len(mx))
    us_client.collect(lambda got: False, timeout=2)  # nothing more comes
    assert set(us_client.events) == {uid(a) for a in us}
    assert set(mx_events) == {uid(a) for a in mx}
    types = {"watchlist-plate": "a-h-G-E-V", "coordinated-crossing": "a-s-G"}
    for alert in us:
        check_event(us_events[uid(alert)], alert, types[alert["rule_id"]])
    for alert in mx:
        check_event(mx_events[uid(alert)], alert, types[alert["rule_id"]])
    mx_watch = next(a for a in mx if a["rule_id"] == "watchlist-plate")
    assert mx_watch["location"]["precision_m"] == 1000  # the US sighting, coarsened for Mexico
    assert str(TUCSON[0]) not in ET.tostring(mx_events[uid(mx_watch)]).decode()
    # Mexico's person reference reaches the US field team only as its pseudonym.
    (us_watch,) = us
    assert "MX-RTX-502" not in ET.tostring(us_events[uid(us_watch)]).decode()
    assert "MX-RTX-502" in ET.tostring(mx_events[uid(mx_watch)]).decode()
    assert w.metric("fusion_tak_events_sent_total", country="US") == 1
    assert w.metric("fusion_tak_events_sent_total", country="MX") == 2
    assert w.metric("fusion_tak_connected", country="MX") == 1
    assert w.metric("fusion_tak_events_dropped_total") == 0
    us_client.close()
    mx_client.close()


def test_a_tak_server_down_or_stopped_neither_blocks_nor_crashes_the_worker(
    lab: Lab, tak_servers: Callable[[], TakServer]
) -> None:
    mx_tak = tak_servers()
    nobody = free_port()  # nothing listens there: the US server is down from the start
    w = lab.worker(
        FUSION_TAK_SERVERS=json.dumps({"US": f"tcp://127.0.0.1:{nobody}", "MX": mx_tak.url}),
        FUSION_CONSOLE_PUBLIC_URL=CONSOLE,
        FUSION_COT_STALE_S="900",
        FUSION_TAK_BUFFER="2",
        FUSION_TAK_RECONNECT_MAX_S="1",
    )
    w.wait_ready()
    mx_client = TakClient(mx_tak, "mx-field")
    send_all(lab, watchlist_pair("AAA-100", NOGALES_US))
    (first,) = lab.read("MX", 1)
    assert set(mx_client.collect(lambda got: len(got) >= 1)) == {uid(first)}
    mx_client.close()

    mx_tak.kill()  # Mexico's TAK server goes away mid-run
    deadline = time.monotonic() + 10
    while w.metric("fusion_tak_connected", country="MX") != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert w.metric("fusion_tak_connected", country="MX") == 0
    plates = [f"BBB-{i:03d}" for i in range(5)]
    sent_at = time.monotonic()
    # Sightings 3 km apart, so that only the watchlist rule fires (not a crossing).
    spaced = [(NOGALES_US[0] + 0.03 * (i + 1), NOGALES_US[1]) for i in range(len(plates))]
    send_all(lab, [e for p, at in zip(plates, spaced, strict=True) for e in watchlist_pair(p, at)])
    us = lab.read("US", 6)
    mx = lab.read("MX", 6)
    took = time.monotonic() - sent_at
    assert len({a["alert_id"] for a in us}) == 6 and len({a["alert_id"] for a in mx}) == 6
    assert took < 20, f"alerts took {took:.1f} s to reach Kafka with the TAK servers down"
    assert w.proc.poll() is None and w.ready()

    # The US server never answered: of its 6 events, the newest 2 are held, 4 dropped.
    assert w.metric("fusion_tak_connected", country="US") == 0
    assert w.metric("fusion_tak_buffered", country="US") == 2
    assert w.metric("fusion_tak_events_dropped_total", country="US", reason="buffer_full") == 4
    assert w.metric("fusion_tak_events_sent_total", country="US") == 0
    # Mexico's: 1 sent before it went; of the 5 since, some dropped and at most 2 held.
    mx_dropped = w.metric("fusion_tak_events_dropped_total", country="MX", reason="buffer_full")
    mx_held = w.metric("fusion_tak_buffered", country="MX")
    mx_sent = w.metric("fusion_tak_events_sent_total", country="MX")
    assert mx_dropped >= 3 and mx_held == 2 and mx_sent == 1
    assert mx_sent + mx_dropped + mx_held == 6

    # Back up on the same port: the worker reconnects and sends what it held.
    later = {uid(a) for a in mx} - {uid(first)}
    mx_tak.start()
    mx_client = TakClient(mx_tak, "mx-field-2")
    got = mx_client.collect(lambda got: len(got) >= 2, timeout=30)
    assert len(got) == 2 and set(got) <= later, (got.keys(), later)
    deadline = time.monotonic() + 10
    while w.metric("fusion_tak_connected", country="MX") != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert w.metric("fusion_tak_events_sent_total", country="MX") == 3
    assert w.metric("fusion_tak_buffered", country="MX") == 0
    mx_client.close()
    assert w.proc.poll() is None


def make_certs(folder: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, with openssl."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca"),
        *("-keyout", "ca.key", "-out", "ca.pem"),
    )
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "")):
        openssl(
            *("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}"),
            *("-keyout", f"{name}.key", "-out", f"{name}.csr"),
        )
        (folder / f"{name}.ext").write_text(ext + "\n")
        openssl(
            *("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key"),
            *("-CAcreateserial", "-days", "1", "-out", f"{name}.pem"),
            *(("-extfile", f"{name}.ext") if ext else ()),
        )


def test_a_tls_tak_server_gets_the_events_from_a_client_certificate(tmp_path: Path) -> None:
    make_certs(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tmp_path / "ca.pem")
    server_tls.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    server_tls.verify_mode = ssl.CERT_REQUIRED  # like a TAK server's streaming port
    alert = watchlist_alert("US")

    async def main() -> tuple[dict[str, Any], bytes, Metrics]:
        received: asyncio.Queue[tuple[dict[str, Any], bytes]] = asyncio.Queue()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = b""
            while b"</event>" not in data:
                data += await reader.read(65536)
            received.put_nowait((writer.get_extra_info("peercert"), data))
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_tls)
        port = server.sockets[0].getsockname()[1]
        settings = Settings(
            tak_servers={"US": f"tls://127.0.0.1:{port}"},
            tak_ca_file=tmp_path / "ca.pem",
            tak_cert_file=tmp_path / "client.pem",
            tak_key_file=tmp_path / "client.key",
            console_public_url=CONSOLE,
        )
        metrics = Metrics()
        output = TakOutput(settings, metrics)
        running = asyncio.create_task(output.run())
        output.offer("US", alert)
        peer, data = await asyncio.wait_for(received.get(), 30)
        await output.stop()
        await running
        server.close()
        await server.wait_closed()
        return peer, data, metrics

    peer, data, metrics = asyncio.run(main())
    assert dict(x[0] for x in peer["subject"])["commonName"] == "client"
    event = ET.fromstring(data)
    assert event.get("uid") == uid(alert)
    link = event.find("detail/link")
    assert link is not None
    assert link.get("url") == f"https://ops-us.example.org/#alert={alert['alert_id']}"
    assert metrics.registry.get_sample_value("fusion_tak_events_sent_total", {"country": "US"}) == 1
