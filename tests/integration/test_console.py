"""The consoles of both countries on the real broker, with a real worker, in Debian's Chromium
cut off from every host but 127.0.0.1: an alert released only to Mexico reaches the MX console's
queue and map within 2 s of landing on alerts.mx and never the US console; a cross-border
alert's detail shows its evidence, redactions and explanation; the filters hide and show the
right rows. The test leaves docs/console.png, the README's screenshot."""

from __future__ import annotations

import contextlib
import gc
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from tests.browser import browser_page, chromium_available
from tests.integration.conftest import REPO, Lab, free_port, until
from tests.integration.test_pipeline import crossing, event

# The secure broker module's fixture: this module starts its own secure broker for this test.
from tests.integration.test_secure_broker import produce, run, secure  # noqa: F401

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not chromium_available(), reason="needs Debian's chromium"),
]

PHOENIX = (33.4484, -112.0740)  # Arizona, far from the border
HERMOSILLO = (29.0729, -110.9559)  # Sonora, far from the border: locations generalised
CHIHUAHUA = (28.6320, -106.0691)  # Chihuahua city, far from the border: another area
SCREENSHOT = REPO / "docs" / "console.png"


class ConsoleProcess:
    """A `fusion console CC` process on a free port."""

    def __init__(self, lab: Lab, country: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = lab.tmp / f"console-{country}.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "console", country, "--port", str(self.port)],
            env=lab.env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.url + "healthz", timeout=1) as r:
                return dict(orjson.loads(r.read()))
        except (OSError, urllib.error.HTTPError):
            return None

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"console exited:\n{self.logs()}"
            if self.health():
                return
            time.sleep(0.2)
        raise AssertionError(f"console not ready after {timeout} s:\n{self.logs()}")

    def alert_ids(self) -> set[str]:
        with urllib.request.urlopen(self.url + "api/alerts", timeout=5) as r:
            return {a["alert_id"] for a in orjson.loads(r.read())}

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def consoles(lab: Lab) -> Iterator[dict[str, ConsoleProcess]]:
    started = {cc: ConsoleProcess(lab, cc.lower()) for cc in ("MX", "US")}
    try:
        for c in started.values():
            c.wait_ready()
        yield started
    finally:
        for c in started.values():
            c.stop()


def on_topic(lab: Lab, country: str, alert_id: str, timeout: float = 10) -> tuple[dict, float]:
    """The alert as on the country's topic, and the record's timestamp (epoch seconds)."""
    topic = lab.topics[country]
    c = KafkaConsumer(bootstrap_servers=lab.bootstrap, group_id=None, consumer_timeout_ms=300)
    tps = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic) or {0}]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for msg in c:
                doc = orjson.loads(msg.value)
                if doc["alert_id"] == alert_id:
                    return doc, msg.timestamp / 1000
    finally:
        c.close()
    raise AssertionError(f"{alert_id} not on {topic}")


def rows(page: Any) -> dict[str, bool]:
    """Queue rows: alert id -> shown."""
    return dict(
        page.eval_on_selector_all(
            "#queue-body tr", "trs => trs.map(tr => [tr.dataset.alertId, !tr.hidden])"
        )
    )


def shown(page: Any) -> set[str]:
    return {a for a, visible in rows(page).items() if visible}


def markers(page: Any) -> set[str]:
    return set(
        page.eval_on_selector_all(
            "path.alert-marker", "ps => ps.map(p => p.getAttribute('data-alert-id'))"
        )
    )


def test_consoles_show_each_country_its_alerts_live(
    lab: Lab, consoles: dict[str, ConsoleProcess]
) -> None:
    lab.worker().wait_ready()
    mx, us = consoles["MX"], consoles["US"]
    with browser_page(viewport=(1400, 1050)) as (page, log):
        page.goto(mx.url)
        page.wait_for_selector("body[data-loaded=true]")
        page.wait_for_selector("#map[data-loaded=true]")
        us_page = page.context.new_page()
        us_page.on("pageerror", lambda e: log.errors.append(f"US page error: {e}"))
        us_page.on(
            "console",
            lambda m: log.errors.append(f"US console: {m.text}") if m.type == "error" else None,
        )
        us_page.goto(us.url)
        us_page.wait_for_selector("body[data-loaded=true]")
        assert page.text_content("#country") == "MX" and us_page.text_content("#country") == "US"

        # Mexican agencies, well inside Mexico: an alert for Mexico only.
        for e in crossing(5, where=CHIHUAHUA):
            lab.send("detection", e, key=uuid.uuid4().bytes)
        lab.flush()
        row = page.wait_for_selector(
            '#queue-body tr[data-rule="coordinated-crossing"]', timeout=60_000
        )
        mx_only = row.get_attribute("data-alert-id")
        received = int(row.get_attribute("data-received-at")) / 1000
        doc, landed = on_topic(lab, "MX", mx_only)
        assert doc["recipients"] == ["MX"]
        print(f"alerts.mx to the MX page: {received - landed:.3f} s")
        assert received - landed <= 2.0, f"{received - landed:.2f} s from alerts.mx to the page"
        assert mx_only in markers(page)

        # A US listing of a plate sighted by Mexico far from the border: both countries.
        listed = event(
            "suspect", country="US", at=-86400, where=PHOENIX, plate="WLK-204", person_ref="US-P-9"
        )
        sighting = event(
            "detection", country="MX", at=-5, where=HERMOSILLO, plate="wlk 204", sensor_kind="lpr"
        )
        lab.send("suspect", listed)
        lab.send("detection", sighting)
        lab.flush()
        row = page.wait_for_selector('#queue-body tr[data-rule="watchlist-plate"]', timeout=60_000)
        both = row.get_attribute("data-alert-id")
        us_page.wait_for_selector(f'#queue-body tr[data-alert-id="{both}"]', timeout=10_000)
        on_us = {a["alert_id"] for a in lab.read("US", 1, settled=True)}
        until(lambda: set(rows(us_page)) == on_us, "the US page shows what alerts.us holds")
        assert mx_only not in rows(us_page) and mx_only not in markers(us_page)
        assert mx_only not in us.alert_ids() and both in us.alert_ids()
        assert set(rows(page)) == {mx_only, both} == mx.alert_ids()

        # Its detail: the evidence with each agency and country, and what the policy changed.
        wl, _ = on_topic(lab, "MX", both)
        assert wl["location"]["precision_m"] == 1000
        page.click(f'#queue-body tr[data-alert-id="{both}"]')
        page.wait_for_selector(f'#detail[data-alert-id="{both}"][data-state=shown]')
        assert page.evaluate("location.hash") == f"#alert={both}"
        evidence = page.eval_on_selector_all(
            "#detail-evidence li.ev",
            "lis => lis.map(li => [li.dataset.eventId, li.querySelector('.ev-source').textContent,"
            " li.querySelector('.ev-type').textContent])",
        )
        assert sorted(evidence) == sorted(
            [e["event_id"], f"{e['source']['agency']} ({e['source']['country']})", e["event_type"]]
            for e in wl["evidence"]
        )
        assert {
            tuple(r)
            for r in page.eval_on_selector_all(
                "#detail-redactions tbody tr",
                "trs => trs.map(tr => [...tr.cells].map(td => td.textContent))",
            )
        } == {(r["path"], r["action"], r["policy_rule"]) for r in wl["redactions"]}
        actions = {(r["path"].rsplit(".", 1)[-1], r["action"]) for r in wl["redactions"]}
        assert {("person_ref", "pseudonymize"), ("plate", "pseudonymize")} <= actions
        assert ("location", "generalize") in actions
        assert "cross-border-identifiers" in page.text_content("#detail-redactions")
        listed_plate = next(e for e in wl["evidence"] if e["event_type"] == "suspect")["fields"]
        assert listed_plate["plate"][0] in page.text_content("#detail-evidence")
        assert "WLK-204" not in page.text_content("#detail") and "US-P-9" not in page.content()
        policy = page.text_content("#detail-policy")
        assert wl["policy"]["version"] in policy and wl["policy"]["sha256"] in policy
        assert wl["tlp"] in page.text_content("#detail-tlp")
        # The generalised location is drawn as its grid cell.
        assert page.locator(f'path.alert-cell[data-alert-id="{both}"]').count() == 1
        if wl.get("explanation"):
            assert wl["explanation"]["summary"] in page.text_content("#detail-explanation")
            for condition in wl["explanation"]["conditions"]:
                assert condition in page.text_content("#detail-conditions")

        # An older alert (raised two hours ago) published by another producer, TLP:GREEN.
        old = {
            **doc,
            "alert_id": "older-" + uuid.uuid4().hex[:8],
            "tlp": "TLP:GREEN",
            "raised_at": (datetime.now(tz=UTC) - timedelta(hours=2)).isoformat(),
        }
        lab.producer.send(lab.topics["MX"], orjson.dumps(old))
        lab.flush()
        page.wait_for_selector(f'#queue-body tr[data-alert-id="{old["alert_id"]}"]')
        everything = {mx_only, both, old["alert_id"]}
        assert shown(page) == everything

        # Filters hide and show the right rows, and the map's markers with them.
        for select, value, expected in (
            ("#filter-rule", "watchlist-plate", {both}),
            ("#filter-rule", "coordinated-crossing", {mx_only, old["alert_id"]}),
            ("#filter-rule", "", everything),
            ("#filter-severity", "high", {both}),
            ("#filter-severity", "medium", everything),
            ("#filter-severity", "", everything),
            ("#filter-tlp", "TLP:GREEN", {old["alert_id"]}),
            ("#filter-tlp", wl["tlp"], {both}),
            ("#filter-tlp", "", everything),
            ("#filter-time", "3600", {mx_only, both}),
            ("#filter-time", "86400", everything),
            ("#filter-time", "", everything),
        ):
            page.select_option(select, value)
            assert shown(page) == expected, (select, value)
            assert markers(page) == expected, (select, value)

        # The map draws the areas that decide jurisdiction, and the area filter uses them.
        area_of = {
            mx_only: doc["jurisdiction"]["area_id"],
            old["alert_id"]: doc["jurisdiction"]["area_id"],
            both: wl["jurisdiction"]["area_id"],
        }
        assert wl["jurisdiction"]["area_name"] in page.text_content("#detail-area")
        assert None not in area_of.values() and len(set(area_of.values())) == 2, area_of
        for area in sorted(set(area_of.values())):
            assert page.locator(f'path.area-outline[data-area="{area}"]').count() == 1
            page.select_option("#filter-area", area)
            expected = {a for a, v in area_of.items() if v == area}
            assert shown(page) == expected == markers(page), area
        page.select_option("#filter-area", "")
        assert shown(page) == everything

        # A deep link opens an alert's detail, on a fresh load and on a change of link.
        page.goto("about:blank")
        page.goto(f"{mx.url}#alert={mx_only}")
        page.wait_for_selector(f'#detail[data-alert-id="{mx_only}"][data-state=shown]')
        assert len(page.query_selector_all("#detail-evidence li.ev")) == 5
        page.goto(f"{mx.url}#alert={both}")
        page.wait_for_selector(f'#detail[data-alert-id="{both}"][data-state=shown]')
        page.wait_for_selector("#map[data-loaded=true]")
        page.wait_for_timeout(300)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))

        assert log.blocked == [], log.blocked
        assert log.errors == [], log.errors
    assert Path(SCREENSHOT).stat().st_size > 10_000


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Unclosed clients show up in the test that leaked them, not in a later one."""
    yield
    gc.collect()


def test_console_reads_its_own_alerts_on_the_secure_broker(secure: Any) -> None:  # noqa: F811
    """As `ops-mx` the console reads alerts.mx; as `ops-us` it is refused alerts.mx, and says
    so in its status rather than showing anything."""
    import asyncio

    from schemas.alerts import Alert
    from streams.tools.console.feed import AlertFeed
    from tests.unit.test_console import alert_doc

    doc = alert_doc("secure-" + uuid.uuid4().hex[:8])
    run(produce(secure.client("fusion"), "alerts.mx", orjson.dumps(doc)))

    async def read_as(user: str) -> tuple[list[Alert], AlertFeed]:
        got: list[Alert] = []
        feed = AlertFeed(secure.settings(user), "alerts.mx", 3600, lambda a, d: got.append(a))
        task = asyncio.create_task(feed.run())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not feed.status.error:
            if feed.status.live and got:
                break
            await asyncio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return got, feed

    got, feed = run(read_as("ops-mx"))
    assert [a.alert_id for a in got] == [doc["alert_id"]] and feed.status.live
    got, feed = run(read_as("ops-us"))
    assert got == [] and feed.status.state == "waiting for topic"
    assert feed.status.error == "topic alerts.mx does not exist or user ops-us may not read it"
