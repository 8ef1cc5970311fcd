"""Cursor on Target: the converter over released alerts, and the TAK sender's buffer and loop
(its connections here are socket pairs, no network)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import socket
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from engine.facts import Fact
from engine.hits import RawAlert, alert_id
from engine.policy import Keyring, load_policy
from engine.release import release_json
from engine.ruletests import DEFAULT_START, build_event
from interop.cot import (
    DEFAULT_COT_TYPES,
    REPORTED_CE_M,
    CotError,
    alert_to_cot,
    cot_type,
    cot_types,
    cot_uid,
    remarks,
)
from streams.settings import Settings
from streams.worker.metrics import Metrics
from streams.worker.tak import TakOutput, TakSender, cot_converter, pytak_config

REPO = Path(__file__).resolve().parents[2]
KEYS = Keyring.parse(
    {
        kind: [{"id": "kcot", "secret": base64.b64encode(hashlib.sha256(kind.encode()).digest())}]
        for kind in ("plate", "person_ref", "serial")
    },
    source="test-keys",
)
POLICY = load_policy(REPO / "rules" / "policy.yaml", KEYS)
NOGALES_US = (31.3404, -110.9343)
SONORA = (30.90, -110.60)  # ~48 km inside Mexico: generalised across the border
LINK = "https://ops-us.example.org/#alert=abc"


def fact(**kw: Any) -> Fact:
    return build_event(kw, DEFAULT_START)


def released(
    *facts: Fact,
    dest: str,
    where: tuple[float, float] | None = None,
    rule_id: str = "watchlist-plate",
    severity: str = "high",
    title: str = "Watchlisted plate sighted",
) -> dict[str, Any]:
    lat, lon = where or (facts[-1].lat, facts[-1].lon)
    ts = [f.ts for f in facts]
    raw = RawAlert(
        alert_id=alert_id(rule_id, [f.event_id for f in facts]),
        rule_id=rule_id,
        title=title,
        severity=severity,
        score=80,
        raised_at=max(ts) + 1.5,
        first_seen=min(ts),
        last_seen=max(ts),
        lat=lat,
        lon=lon,
        evidence=tuple(facts),
        key=None,
        extra_recipients=(),
    )
    out = release_json(raw, dest, ["MX", "US"], POLICY, now=0.0, topic=f"alerts.{dest.lower()}")
    assert out is not None
    return out[0]


def watchlist_alert(dest: str, where: tuple[float, float] = NOGALES_US) -> dict[str, Any]:
    suspect = fact(
        id="sus-1",
        type="suspect",
        country="MX",
        lat=where[0],
        lon=where[1],
        person_ref="MX-P-1",
        plate="XKZ-481",
        at="-1d",
    )
    sighting = fact(id="det-1", type="detection", country="MX", lat=where[0], lon=where[1])
    return released(suspect, sighting, dest=dest)


def parse(xml: bytes) -> ET.Element:
    assert xml.startswith(b"<?xml")
    return ET.fromstring(xml)


def cot_dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- the converter ---------------------------------------------------------------------------


def test_an_alert_becomes_a_well_formed_cot_event_carrying_it():
    alert = watchlist_alert("MX")
    event = parse(alert_to_cot(alert, link=LINK, stale_s=600))

    assert event.tag == "event" and event.get("version") == "2.0"
    assert event.get("uid") == cot_uid(alert["alert_id"], "MX")
    assert alert["alert_id"] in event.get("uid", "")
    assert event.get("type") == "a-h-G-E-V"  # watchlist-plate, high: a hostile ground vehicle
    assert event.get("how") == "m-f"
    raised = cot_dt(alert["raised_at"])
    assert abs((cot_dt(event.get("time", "")) - raised).total_seconds()) < 0.001
    assert event.get("start") == event.get("time")
    point = event.find("point")
    assert point is not None
    assert float(point.get("lat", "")) == alert["location"]["lat"]
    assert float(point.get("lon", "")) == alert["location"]["lon"]
    assert float(point.get("hae", "")) == 9999999.0 and float(point.get("le", "")) == 9999999.0
    assert float(point.get("ce", "")) == REPORTED_CE_M  # as reported, at the sighting
    detail = event.find("detail")
    assert detail is not None
    remarks = detail.findtext("remarks") or ""
    assert remarks.startswith(f"{alert['tlp']} Watchlisted plate sighted")
    assert "Severity high, score 80" in remarks and "GN (MX)" in remarks
    assert "Evidence: 2 events" in remarks and alert["alert_id"] in remarks
    link = detail.find("link")
    assert link is not None and link.get("url") == LINK and link.get("uid") == alert["alert_id"]
    fusion = detail.find("__fusion")
    assert fusion is not None
    assert fusion.get("alert_id") == alert["alert_id"] and fusion.get("tlp") == alert["tlp"]
    assert fusion.get("recipient") == "MX" and fusion.get("score") == "80"
    assert [e.get("event_id") for e in fusion.iter("evidence")] == ["sus-1", "det-1"]
    contact = detail.find("contact")
    assert contact is not None and contact.get("callsign") == "Watchlisted plate sighted"


def test_stale_is_the_configured_span_after_the_alert():
    alert = watchlist_alert("MX")
    for stale_s in (60, 3600, 86400.5):
        event = parse(alert_to_cot(alert, link=LINK, stale_s=stale_s))
        span = cot_dt(event.get("stale", "")) - cot_dt(event.get("time", ""))
        assert abs(span - timedelta(seconds=stale_s)) < timedelta(milliseconds=2)
    with pytest.raises(CotError, match="stale_s must be positive"):
        alert_to_cot(alert, link=LINK, stale_s=0)


def test_type_table_rule_then_any_rule_and_overrides():
    assert cot_type(DEFAULT_COT_TYPES, "watchlist-plate", "medium") == "a-s-G-E-V"
    assert cot_type(DEFAULT_COT_TYPES, "coordinated-crossing", "medium") == "a-s-G"
    assert cot_type(DEFAULT_COT_TYPES, "some-new-rule", "low") == "a-u-G"
    table = cot_types({"coordinated-crossing": {"medium": "a-s-G-U-C"}, "*": {"low": "a-n-G"}})
    assert cot_type(table, "coordinated-crossing", "medium") == "a-s-G-U-C"
    assert cot_type(table, "coordinated-crossing", "high") == "a-h-G"  # falls back to "*"
    assert cot_type(table, "other", "low") == "a-n-G"
    assert cot_type(table, "watchlist-plate", "high") == "a-h-G-E-V"  # defaults kept
    alert = watchlist_alert("MX")
    event = parse(alert_to_cot(alert, link=LINK, stale_s=60, types=cot_types({})))
    assert event.get("type") == "a-h-G-E-V"
    event = parse(
        alert_to_cot(
            alert, link=LINK, stale_s=60, types=cot_types({"watchlist-plate": {"high": "a-h-G"}})
        )
    )
    assert event.get("type") == "a-h-G"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"*": {"severe": "a-h-G"}}, r"rule '\*': unknown severity 'severe'"),
        ({"watchlist-plate": {"high": "hostile"}}, r"'hostile' is not a CoT type"),
        ({"watchlist-plate": {"high": 'a-h-G"/>'}}, r"is not a CoT type"),
    ],
)
def test_bad_type_tables_are_refused_naming_rule_and_severity(overrides, message):
    with pytest.raises(CotError, match=message):
        cot_types(overrides)
    with pytest.raises(ValidationError, match=message):
        Settings(cot_types=overrides)


def test_ce_of_a_generalised_location_is_its_cell_half_diagonal():
    alert = watchlist_alert("US", where=SONORA)  # Mexican data outside the border zone
    precision = alert["location"]["precision_m"]
    assert precision == 1000
    point = parse(alert_to_cot(alert, link=LINK, stale_s=60)).find("point")
    assert point is not None
    assert float(point.get("ce", "")) == round(precision * math.sqrt(2) / 2, 1)
    # The point is the released cell centre, not where the events were.
    assert float(point.get("lat", "")) == alert["location"]["lat"] != SONORA[0]


def test_ce_of_a_centroid_reaches_the_farthest_evidence():
    facts = [
        fact(id=f"d-{i}", type="detection", country="US", lat=lat, lon=-110.93)
        for i, lat in enumerate((31.34, 31.345, 31.36))
    ]
    alert = released(*facts, dest="US", where=(31.35, -110.93), rule_id="coordinated-crossing")
    ce = float(parse(alert_to_cot(alert, link=LINK, stale_s=60)).find("point").get("ce", ""))
    assert 1110 + REPORTED_CE_M < ce < 1115 + REPORTED_CE_M  # 0.01 degree of latitude away
    # A proximity rule's point is a centroid even where it happens to fall on an event.
    alert["location"] = {"lat": 31.345, "lon": -110.93, "precision_m": None}
    ce = float(parse(alert_to_cot(alert, link=LINK, stale_s=60)).find("point").get("ce", ""))
    assert ce == REPORTED_CE_M
    alert["explanation"] = {"rule_type": "proximity"}
    ce = float(parse(alert_to_cot(alert, link=LINK, stale_s=60)).find("point").get("ce", ""))
    assert 1665 + REPORTED_CE_M < ce < 1670 + REPORTED_CE_M


def test_hostile_text_is_escaped_and_stays_text():
    alert = watchlist_alert("MX")
    hostile = 'Plate </remarks><script>alert("x")</script> & \x00\x1b<!--'
    alert["title"] = hostile
    alert["evidence"][0]["source"]["agency"] = '"><evil a="1"/>'
    alert["evidence"][0]["fields"]["watchlist"] = "]]><![CDATA[ <x/>"
    xml = alert_to_cot(alert, link='https://x/#alert="><evil/>', stale_s=60)
    event = parse(xml)
    assert not list(event.iter("script")) and not list(event.iter("evil"))
    detail = event.find("detail")
    assert detail is not None
    expected = hostile.replace("\x00", "\ufffd").replace("\x1b", "\ufffd")
    assert detail.find("contact").get("callsign") == expected
    remarks = detail.findtext("remarks") or ""
    assert expected in remarks and '"><evil a="1"/>' in remarks and "]]><![CDATA[ <x/>" in remarks
    assert detail.find("link").get("url") == 'https://x/#alert="><evil/>'


def test_pseudonyms_and_generalised_values_go_exactly_as_released():
    alert = watchlist_alert("US", where=SONORA)
    suspect = next(e for e in alert["evidence"] if e["event_type"] == "suspect")
    plate, person = suspect["fields"]["plate"], suspect["fields"]["person_ref"]
    assert plate[0].startswith("pn:plate:kcot:") and person[0].startswith("pn:person_ref:kcot:")
    xml = alert_to_cot(alert, link=LINK, stale_s=60)
    text = xml.decode()
    assert "XKZ-481" not in text and "MX-P-1" not in text
    assert str(SONORA[0]) not in text and str(SONORA[1]) not in text
    remarks = parse(xml).findtext("detail/remarks") or ""
    assert f"plate={' / '.join(plate)}" in remarks
    assert f"person_ref={' / '.join(person)}" in remarks


# -- the sender ------------------------------------------------------------------------------


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def refused() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    raise ConnectionRefusedError("nothing listening")


def test_buffer_is_bounded_dropping_the_oldest_and_counting():
    metrics = Metrics()
    sender = TakSender("MX", refused, lambda a: b"", metrics, capacity=3)
    for i in range(10):
        sender.offer({"alert_id": f"a{i}"})
    assert [a["alert_id"] for a in sender.buffer] == ["a7", "a8", "a9"]
    dropped = sample(metrics, "fusion_tak_events_dropped_total", country="MX", reason="buffer_full")
    assert dropped == 7
    assert sample(metrics, "fusion_tak_buffered", country="MX") == 3
    assert sender.discard() == 3
    assert sample(metrics, "fusion_tak_events_dropped_total", country="MX", reason="shutdown") == 3


def test_a_server_that_is_down_never_holds_offers_back():
    metrics = Metrics()
    calls: list[float] = []

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        calls.append(time.monotonic())
        return await refused()

    async def main() -> float:
        sender = TakSender("US", connect, lambda a: b"", metrics, capacity=5, reconnect_max_s=0.2)
        task = asyncio.create_task(sender.run())
        slowest = 0.0
        for i in range(200):
            began = time.perf_counter()
            sender.offer({"alert_id": f"a{i}"})
            slowest = max(slowest, time.perf_counter() - began)
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return slowest

    slowest = asyncio.run(main())
    assert slowest < 0.01
    assert len(calls) >= 3  # it keeps trying, with backoff
    assert sample(metrics, "fusion_tak_connected", country="US") == 0
    assert sample(metrics, "fusion_tak_buffered", country="US") == 5
    dropped = sample(metrics, "fusion_tak_events_dropped_total", country="US", reason="buffer_full")
    assert dropped == 195


def test_sends_over_the_connection_and_reconnects_when_the_server_goes():
    metrics = Metrics()

    def convert(alert: dict[str, Any]) -> bytes:
        if alert["alert_id"] == "bad":
            raise KeyError("location")
        return f'<event uid="{alert["alert_id"]}"/>'.encode()

    async def received(peer: socket.socket, n: int) -> list[str]:
        loop = asyncio.get_running_loop()
        peer.setblocking(False)
        data = b""
        while data.count(b"<event") < n:
            data += await asyncio.wait_for(loop.sock_recv(peer, 4096), 5)
        root = ET.fromstring(b"<root>" + data + b"</root>")
        return [e.get("uid", "") for e in root]

    async def main() -> tuple[list[str], list[str]]:
        peers: asyncio.Queue[socket.socket] = asyncio.Queue()

        async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            ours, theirs = socket.socketpair()
            peers.put_nowait(theirs)
            return await asyncio.open_connection(sock=ours)

        sender = TakSender("MX", connect, convert, metrics, capacity=10, reconnect_max_s=0.2)
        for name in ("a1", "bad", "a2"):
            sender.offer({"alert_id": name})
        task = asyncio.create_task(sender.run())
        peer = await asyncio.wait_for(peers.get(), 5)
        first = await received(peer, 2)
        assert sample(metrics, "fusion_tak_connected", country="MX") == 1
        peer.close()  # the server goes away
        peer = await asyncio.wait_for(peers.get(), 5)
        sender.offer({"alert_id": "a3"})
        second = await received(peer, 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        peer.close()
        return first, second

    first, second = asyncio.run(main())
    assert first == ["a1", "a2"] and second == ["a3"]
    assert sample(metrics, "fusion_tak_events_sent_total", country="MX") == 3
    assert sample(metrics, "fusion_tak_events_dropped_total", country="MX", reason="error") == 1
    assert sample(metrics, "fusion_tak_connected", country="MX") == 0


def test_output_offers_only_to_configured_countries_and_counts_what_shutdown_leaves():
    metrics = Metrics()
    settings = Settings(
        tak_servers={"mx": "tcp://127.0.0.1:9"}, console_public_url="https://ops-{cc}.example.org"
    )
    out = TakOutput(settings, metrics)
    assert set(out.senders) == {"MX"}
    alert = watchlist_alert("MX")
    out.offer("US", watchlist_alert("US"))
    out.offer("MX", alert)
    assert len(out.senders["MX"].buffer) == 1
    asyncio.run(out.stop(grace_s=0.1))
    assert sample(metrics, "fusion_tak_events_dropped_total", country="MX", reason="shutdown") == 1
    link = parse(cot_converter(settings, "MX")(alert)).find("detail/link")
    assert link is not None
    assert link.get("url") == f"https://ops-mx.example.org/#alert={alert['alert_id']}"


def test_tak_settings_are_checked_at_start():
    with pytest.raises(ValidationError, match="is not tcp://host:port or tls://host:port"):
        Settings(tak_servers={"MX": "http://127.0.0.1:8087"})
    with pytest.raises(ValidationError, match=r"tak_servers names \['CA'\], not partners"):
        Settings(tak_servers={"CA": "tcp://127.0.0.1:8087"})
    with pytest.raises(ValidationError, match="need FUSION_TAK_CERT_FILE"):
        Settings(tak_servers={"US": "tls://tak.example.org:8089"})
    s = Settings(
        tak_servers={"US": "tls://tak.example.org:8089"},
        tak_cert_file=Path("/etc/tak/client.pem"),
        tak_key_file=Path("/etc/tak/client.key"),
        tak_ca_file=Path("/etc/tak/ca.pem"),
    )
    assert pytak_config(s, s.tak_servers["US"]) == {
        "COT_URL": "tls://tak.example.org:8089",
        "PYTAK_TLS_CLIENT_CAFILE": "/etc/tak/ca.pem",
        "PYTAK_TLS_CLIENT_CERT": "/etc/tak/client.pem",
        "PYTAK_TLS_CLIENT_KEY": "/etc/tak/client.key",
    }
    with pytest.raises(ValueError, match=r"tls://tak\.example\.org:8089: cannot set up TLS"):
        TakOutput(s, Metrics())  # the certificate files do not exist: the worker stops at start


def test_the_jurisdiction_travels_in_remarks_and_detail():
    alert = watchlist_alert("MX")
    place = alert["jurisdiction"]
    assert place == {
        "country": "US",
        "area_id": "usbp-tca",
        "area_name": "Tucson Sector",
        "areas_version": place["areas_version"],
    }
    assert "Jurisdiction: Tucson Sector (US)" in remarks(alert)
    got = parse(alert_to_cot(alert, link=LINK, stale_s=60)).find("detail/__fusion/jurisdiction")
    assert got is not None and got.attrib == {**place, "areas_version": place["areas_version"]}
