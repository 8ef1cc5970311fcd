"""The console without a broker: its alert store, `--since`, the map data, and the web side
(served on the loopback by aiohttp's test server, with alerts handed in as the feed would)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine.areas import default_areas
from engine.border import default_border
from schemas.alerts import Alert
from streams.settings import Settings
from streams.tools.console.feed import AlertFeed, FeedStatus
from streams.tools.console.mapdata import STATIC, border_feature, map_geojson
from streams.tools.console.server import Console, allowed_hosts, create_app
from streams.tools.console.since import parse_since
from streams.tools.console.store import AlertStore

REPO = Path(__file__).resolve().parents[2]
AREAS_FILE = REPO / "engine" / "data" / "areas.geojson"


def alert_doc(
    alert_id: str = "a1",
    *,
    rule_id: str = "coordinated-crossing",
    severity: str = "medium",
    tlp: str = "TLP:AMBER",
    raised_at: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    raised = raised_at or datetime.now(tz=UTC)
    doc: dict[str, Any] = {
        "alert_id": alert_id,
        "rule_id": rule_id,
        "title": "Coordinated crossing",
        "severity": severity,
        "score": 60,
        "raised_at": raised.isoformat(),
        "first_seen": (raised - timedelta(minutes=5)).isoformat(),
        "last_seen": raised.isoformat(),
        "location": {"lat": 30.9, "lon": -110.6, "precision_m": None},
        "recipient": "MX",
        "recipients": ["MX"],
        "tlp": tlp,
        "evidence": [
            {
                "event_id": "det-1",
                "event_type": "detection",
                "occurred_at": raised.isoformat(),
                "source": {"agency": "GN", "country": "MX"},
                "fields": {"sensor_id": "S-1", "plate": ["pn:plate:k1:" + "0" * 32]},
            }
        ],
        "redactions": [
            {
                "path": "evidence[0].fields.plate",
                "action": "pseudonymize",
                "policy_rule": "cross-border-identifiers (MLAT art. 7)",
            }
        ],
        "policy": {"id": "us-mx-border-sharing", "version": "2026.1", "sha256": "ab" * 32},
    }
    doc.update(extra)
    Alert.model_validate(doc)
    return doc


def keep(store: AlertStore, doc: dict[str, Any]) -> bool:
    return store.add(Alert.model_validate(doc), doc)


# --- the store ---------------------------------------------------------------------------


def test_store_is_newest_first_and_keeps_each_alert_once() -> None:
    store = AlertStore()
    now = datetime.now(tz=UTC)
    assert keep(store, alert_doc("old", raised_at=now - timedelta(hours=1)))
    assert keep(store, alert_doc("new", raised_at=now))
    assert keep(store, alert_doc("mid", raised_at=now - timedelta(minutes=1)))
    assert not keep(store, alert_doc("new", raised_at=now + timedelta(hours=1)))
    assert [a["alert_id"] for a in store.newest_first()] == ["new", "mid", "old"]
    assert [a["alert_id"] for a in store.newest_first(limit=1)] == ["new"]
    assert store.get("new")["raised_at"] == now.isoformat()  # type: ignore[index]
    assert len(store) == 3 and "mid" in store


def test_store_forgets_the_earliest_arrived_past_its_capacity() -> None:
    store = AlertStore(capacity=3)
    for i in range(5):
        keep(store, alert_doc(f"a{i}"))
    assert {a["alert_id"] for a in store.newest_first()} == {"a2", "a3", "a4"}
    assert store.evicted == 2
    with pytest.raises(ValueError, match="capacity must be at least 1, got 0"):
        AlertStore(capacity=0)


def test_equal_raised_times_list_the_latest_arrival_first() -> None:
    store = AlertStore()
    at = datetime.now(tz=UTC)
    keep(store, alert_doc("first", raised_at=at))
    keep(store, alert_doc("second", raised_at=at))
    assert [a["alert_id"] for a in store.newest_first()] == ["second", "first"]


# --- --since -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("24h", 86400), ("15m", 900), ("90s", 90), ("7d", 604800), ("1h30m", 5400), ("2w", 1209600)],
)
def test_since_reads_durations(text: str, seconds: float) -> None:
    assert parse_since(text) == seconds


def test_since_all_is_everything_and_nonsense_is_refused() -> None:
    assert parse_since("all") is None
    assert parse_since(" ALL ") is None
    for bad in ("", "24", "h", "yesterday", "-1h", "1h foo"):
        with pytest.raises(ValueError, match="give a duration such as 15m, 24h, 7d or 1h30m"):
            parse_since(bad)
    with pytest.raises(ValueError, match="more than zero"):
        parse_since("0h")


# --- the feed's handling of records ------------------------------------------------------


def test_feed_passes_alerts_on_and_counts_what_is_not_an_alert() -> None:
    got: list[str] = []
    feed = AlertFeed(Settings(), "alerts.mx", 3600, lambda a, d: got.append(a.alert_id))
    feed._take(orjson.dumps(alert_doc("ok")))
    feed._take(b"{not json")
    feed._take(orjson.dumps({"alert_id": "x"}))
    feed._take(None)
    assert got == ["ok"]
    assert (feed.status.read, feed.status.refused) == (1, 3)


# --- the map data ------------------------------------------------------------------------


def test_map_has_the_shipped_border_and_the_areas_that_decide_jurisdiction() -> None:
    geo = json.loads(map_geojson(AREAS_FILE))
    kinds = [f["properties"]["kind"] for f in geo["features"]]
    assert kinds[-1] == "border" and kinds.count("border") == 1
    areas = {f["properties"]["id"]: f for f in geo["features"] if f["properties"]["kind"] == "area"}
    assert set(areas) == {a.id for a in default_areas().areas}
    assert {f["properties"]["country"] for f in areas.values()} == {"US", "MX"}
    assert areas["usbp-tca"]["properties"]["name"] == "Tucson Sector"
    assert areas["mx-son"]["properties"]["area_kind"] == "state"
    # The border line is the engine's own, turned from [lat, lon] into GeoJSON [lon, lat].
    line = border_feature()["geometry"]["coordinates"]
    assert [(lat, lon) for lon, lat in line] == list(default_border().line)


def test_the_map_follows_the_areas_file_and_keeps_the_last_good_one(tmp_path: Path) -> None:
    path = tmp_path / "areas.geojson"
    square = [[[-111, 32], [-110.9, 32], [-110.9, 32.1], [-111, 32.1], [-111, 32]]]
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": square},
        "properties": {"id": "a", "name": "A", "country": "US", "kind": "sector"},
    }
    doc = {"type": "FeatureCollection", "version": "v1", "features": [feature]}
    path.write_text(json.dumps(doc))
    first = json.loads(map_geojson(path))
    assert [f["properties"].get("id") for f in first["features"]] == ["a", None]
    doc["version"], feature["properties"]["name"] = "v2", "B"
    path.write_text(json.dumps(doc))
    os.utime(path, ns=(1, 10**18))
    assert json.loads(map_geojson(path))["features"][0]["properties"]["name"] == "B"
    path.write_text("{")  # refused: the map keeps the last good file
    os.utime(path, ns=(1, 2 * 10**18))
    assert json.loads(map_geojson(path))["features"][0]["properties"]["name"] == "B"


def test_vendored_leaflet_is_the_pinned_version() -> None:
    leaflet = STATIC / "vendor" / "leaflet"
    pinned = next(
        line.split("=", 1)[1]
        for line in (REPO / "deploy" / "console" / "vendor.sh").read_text().splitlines()
        if line.startswith("LEAFLET_VERSION=")
    )
    assert (leaflet / "VERSION").read_text().strip() == pinned
    assert f'"{pinned}"' in (leaflet / "leaflet.js").read_text()
    assert (leaflet / "leaflet.css").is_file() and (leaflet / "LICENSE").is_file()


def test_the_page_loads_nothing_from_elsewhere() -> None:
    for name in ("index.html", "console.js", "console.css"):
        text = (STATIC / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
    # Alert text only goes into the page as text.
    assert "innerHTML" not in (STATIC / "console.js").read_text()


# --- the web side ------------------------------------------------------------------------


def serve(
    test: Callable[[TestClient[Any, Any], Console], Awaitable[None]],
    *docs: dict[str, Any],
    live: bool = True,
) -> None:
    async def main() -> None:
        status = FeedStatus(state="live" if live else "reading back")
        console = Console("MX", "alerts.mx", 86400.0, AlertStore(), status, heartbeat_s=0.2)
        for doc in docs:
            console.take(Alert.model_validate(doc), doc)
        hosts = allowed_hosts(Settings(), "127.0.0.1")
        async with TestClient(TestServer(create_app(console, hosts=hosts))) as client:
            await test(client, console)

    asyncio.run(main())


def test_alerts_are_served_newest_first_with_a_strict_content_policy() -> None:
    now = datetime.now(tz=UTC)

    async def check(client: TestClient[Any, Any], console: Console) -> None:
        r = await client.get("/api/alerts")
        assert r.status == 200
        assert [a["alert_id"] for a in await r.json()] == ["b", "a"]
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        r = await client.get("/api/alerts?limit=1")
        assert [a["alert_id"] for a in await r.json()] == ["b"]
        info = await (await client.get("/api/info")).json()
        assert info == {"country": "MX", "topic": "alerts.mx", "since_s": 86400.0, "capacity": 5000}

    serve(
        check, alert_doc("a", raised_at=now - timedelta(minutes=3)), alert_doc("b", raised_at=now)
    )


def test_a_request_naming_another_host_is_refused() -> None:
    """A page elsewhere cannot read the console through a DNS name rebound to 127.0.0.1."""

    async def check(client: TestClient[Any, Any], console: Console) -> None:
        r = await client.get("/api/alerts", headers={"Host": "attacker.example:8801"})
        assert r.status == 421
        r = await client.get("/api/alerts", headers={"Host": "localhost:8801"})
        assert r.status == 200

    serve(check, alert_doc("a"))


def test_page_static_files_and_map_are_served() -> None:
    async def check(client: TestClient[Any, Any], console: Console) -> None:
        page = await client.get("/")
        assert page.status == 200 and "static/console.js" in await page.text()
        for path in (
            "/static/console.js",
            "/static/console.css",
            "/static/vendor/leaflet/leaflet.js",
            "/static/vendor/leaflet/leaflet.css",
        ):
            assert (await client.get(path)).status == 200, path
        assert (await client.get("/static/../store.py")).status in (403, 404)
        geo = await client.get("/api/map")
        assert geo.content_type == "application/geo+json"
        assert len((await geo.json())["features"]) >= 11

    serve(check)


def test_healthz_says_ready_only_once_read_back() -> None:
    async def ready(client: TestClient[Any, Any], console: Console) -> None:
        r = await client.get("/healthz")
        body = await r.json()
        assert r.status == 200 and body["state"] == "live" and body["alerts"] == 1

    async def not_ready(client: TestClient[Any, Any], console: Console) -> None:
        r = await client.get("/healthz")
        assert r.status == 503 and (await r.json())["state"] == "reading back"

    serve(ready, alert_doc())
    serve(not_ready, live=False)


def test_stream_pushes_each_new_alert_once_with_a_heartbeat() -> None:
    async def check(client: TestClient[Any, Any], console: Console) -> None:
        r = await client.get("/api/stream")
        assert r.headers["Content-Type"] == "text/event-stream"
        seen: list[tuple[str, str]] = []

        async def read_events(n: int) -> None:
            event = ""
            while len(seen) < n:
                line = (await r.content.readline()).decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    seen.append((event, line[6:]))

        await asyncio.wait_for(read_events(1), 5)
        assert seen[0][0] == "ping" and json.loads(seen[0][1])["state"] == "live"
        doc = alert_doc("pushed")
        console.take(Alert.model_validate(doc), doc)
        console.take(Alert.model_validate(doc), doc)  # a repeat is not pushed again
        await asyncio.wait_for(read_events(3), 5)
        events = [e for e, _ in seen]
        assert events.count("alert") == 1 and events[-1] == "ping"
        pushed = next(json.loads(d) for e, d in seen if e == "alert")
        assert pushed["alert_id"] == "pushed"
        assert len(console.broadcast.queues) == 1
        r.close()

    serve(check)


def test_a_country_not_a_partner_is_refused() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", "console", "fr"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "FUSION_PARTNERS": "US,MX"},
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "'fr' is not a partner (FUSION_PARTNERS: US, MX)" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", "console", "mx", "--since", "soon"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert out.returncode == 2 and "--since 'soon'" in out.stderr


def test_the_store_holds_the_newest_version_with_its_history() -> None:
    store = AlertStore()
    first = alert_doc("a1")
    assert keep(store, first)
    update = {**first, "version": 2, "change": "updated",
              "revision": {"reason": "1 more events joined the match", "records": ["e9"],
                           "superseded_by": None}}  # fmt: skip
    withdrawal = {**first, "version": 3, "change": "withdrawn",
                  "revision": {"reason": "an inspection came", "records": ["i1"],
                               "superseded_by": None}}  # fmt: skip
    assert keep(store, withdrawal)
    assert not keep(store, withdrawal)  # a repeat
    assert not keep(store, update)  # older, late: history only
    held = store.get("a1")
    assert held is not None and held["change"] == "withdrawn" and len(store) == 1
    assert [(v["version"], v["change"]) for v in held["history"]] == [
        (1, "raised"),
        (2, "updated"),
        (3, "withdrawn"),
    ]
