"""Triage across the border on the real broker, with the relay and both consoles as processes,
in Debian's Chromium: an MX analyst acknowledges an alert, assigns it to a binational task
force, adds an MX-only and a shareable note, an MX lead closes it as a false positive; the US
console shows MX's state beside its own (never the MX-only note or a name) within 10 s, and
its own state is unchanged. A viewer sees no action and is refused a direct POST. Refusals:
no CSRF token, wrong password, the sixth failure (429), a stale revision, an expired
session. A restarted console shows the same state."""

from __future__ import annotations

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

from streams.settings import Settings
from streams.tools.accounts import add_user
from streams.tools.console.auth import SessionCodec
from streams.tools.console.server import cookie_name
from streams.tools.report.read import build_report
from tests.browser import browser_page, chromium_available
from tests.integration.conftest import REPO, Lab, free_port, until
from tests.integration.test_console import ConsoleProcess
from tests.unit.test_console import alert_doc

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not chromium_available(), reason="needs Debian's chromium"),
]

PASSWORD = "a long enough password"
SESSION_KEY = "k" * 40
FORCES = """
task_forces:
  - name: sonora-arizona
    title: Sonora-Arizona weapons
    members:
      - {user: ximena, country: MX}
      - {user: luis, country: MX}
      - {user: bob, country: US}
"""


class Relay:
    def __init__(self, lab: Lab) -> None:
        self.log_path = lab.tmp / "relay.log"
        self._log = self.log_path.open("ab")
        self.metrics_port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "relay"],
            env={**lab.env, "FUSION_RELAY_METRICS_PORT": str(self.metrics_port)},
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_live(self) -> None:
        until(lambda: "relay: live" in self.log_path.read_text(errors="replace"), "relay live", 30)

    def metric(self, name: str, **labels: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self._log.close()


@pytest.fixture
def triage_lab(lab: Lab) -> Iterator[Lab]:
    users = lab.tmp / "users.json"
    for name, country, role in (
        ("ximena", "MX", "analyst"),
        ("luis", "MX", "lead"),
        ("vera", "MX", "viewer"),
        ("bob", "US", "analyst"),
    ):
        add_user(users, name, country, role, PASSWORD)  # type: ignore[arg-type]
    forces = lab.tmp / "task-forces.yaml"
    forces.write_text(FORCES)
    lab.env.update(
        FUSION_USERS_FILE=str(users),
        FUSION_TASK_FORCES_FILE=str(forces),
        FUSION_CONSOLE_SESSION_KEY=SESSION_KEY,
    )
    yield lab


COOKIE = cookie_name("MX")


def http(
    url: str,
    body: dict[str, Any] | None = None,
    *,
    cookie: str | None = None,
    csrf: str | None = None,
) -> tuple[int, dict[str, Any], str | None]:
    """(status, JSON body, the session cookie set) of a GET, or a POST with a JSON body."""
    headers = {"Content-Type": "application/json"}
    if cookie:
        headers["Cookie"] = f"{COOKIE}={cookie}"
    if csrf:
        headers["X-CSRF-Token"] = csrf
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as r:
            status, raw, set_cookie = r.status, r.read(), r.headers.get("Set-Cookie")
    except urllib.error.HTTPError as e:
        status, raw, set_cookie = e.code, e.read(), e.headers.get("Set-Cookie")
    found = None
    if set_cookie and set_cookie.startswith(COOKIE + "="):
        found = set_cookie.split(";", 1)[0].split("=", 1)[1]
    return status, orjson.loads(raw), found


def login(console: ConsoleProcess, user: str) -> tuple[str, str]:
    status, doc, cookie = http(console.url + "api/login", {"user": user, "password": PASSWORD})
    assert status == 200 and cookie, doc
    return cookie, doc["csrf"]


def browser_login(page: Any, url: str, user: str) -> None:
    page.goto(url)
    page.wait_for_selector("#login-form:not([hidden])")
    page.fill("#login-user", user)
    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("body[data-session]:not([data-session=none])")
    page.wait_for_selector("body[data-loaded=true]")


def test_triage_across_the_border(triage_lab: Lab) -> None:
    lab = triage_lab
    alert_id = "triage-" + uuid.uuid4().hex[:8]
    old_id = "old-" + uuid.uuid4().hex[:8]
    old_raised = datetime.now(tz=UTC) - timedelta(days=3)
    for cc in ("MX", "US"):
        for aid, raised in ((alert_id, None), (old_id, old_raised)):
            doc = alert_doc(aid, raised_at=raised, recipient=cc, recipients=["MX", "US"])
            lab.producer.send(lab.topics[cc], orjson.dumps(doc), key=aid.encode())
    lab.flush()
    relay = Relay(lab)
    consoles = {cc: ConsoleProcess(lab, cc.lower()) for cc in ("MX", "US")}
    try:
        for c in consoles.values():
            c.wait_ready()
        relay.wait_live()
        mx, us = consoles["MX"], consoles["US"]
        with browser_page() as (page, log):
            # --- the MX analyst ---
            browser_login(page, mx.url, "ximena")
            page.goto(f"{mx.url}#alert={alert_id}")
            page.wait_for_selector(f'#detail[data-alert-id="{alert_id}"][data-state=shown]')
            page.click('#triage-actions button[data-action="acknowledge"]')
            page.wait_for_selector('#detail-triage[data-status="acknowledged"]')
            page.select_option("#triage-assignee", "task_force:sonora-arizona")
            page.click('#triage-actions button[data-action="assign"]')
            page.wait_for_selector('#detail-triage[data-revision="2"]')
            assert "task force sonora-arizona" in page.text_content("#triage-own")
            page.fill("#triage-note", "MX only: the informant is Juan")
            page.click('#triage-actions button[data-action="note"]')
            page.wait_for_selector('#detail-triage[data-revision="3"]')
            page.fill("#triage-note", "Plate seen twice at Nogales")
            page.check("#triage-shareable")
            page.click('#triage-actions button[data-action="note"]')
            page.wait_for_selector('#detail-triage[data-revision="4"]')
            # an analyst has no close button
            assert page.locator('#triage-actions button[data-action="close"]').count() == 0
            # --- the MX lead closes it ---
            page.click("#logout")
            page.wait_for_selector("#login-form:not([hidden])")
            browser_login(page, mx.url, "luis")
            page.goto(f"{mx.url}#alert={alert_id}")
            page.wait_for_selector('#detail-triage[data-revision="4"]')
            page.select_option("#triage-reason", "false_positive")
            page.click('#triage-actions button[data-action="close"]')
            page.wait_for_selector('#detail-triage[data-status="closed"]')
            assert "closed, false positive" in page.text_content("#triage-own")

            # the queue's triage filters, "my task forces" among them
            row = f'#queue-body tr[data-alert-id="{alert_id}"]'
            for select, value, visible in (
                ("#filter-taskforce", "@mine", True),
                ("#filter-status", "closed", True),
                ("#filter-status", "acknowledged", False),
                ("#filter-status", "", True),
                ("#filter-assignee", "@me", False),
                ("#filter-assignee", "", True),
            ):
                page.select_option(select, value)
                assert page.locator(row).is_visible() == visible, (select, value)
            # the other alert is assigned to no task force
            assert page.locator(f'#queue-body tr[data-alert-id="{old_id}"]').is_hidden()
            page.select_option("#filter-taskforce", "")
            assert page.locator(f'#queue-body tr[data-alert-id="{old_id}"]').is_visible()

            # --- the US console: MX's state beside its own, within 10 s ---
            us_page = page.context.new_page()
            browser_login(us_page, us.url, "bob")
            us_page.goto(f"{us.url}#alert={alert_id}")
            us_page.wait_for_selector(f'#detail[data-alert-id="{alert_id}"][data-state=shown]')
            us_page.wait_for_selector(
                "#triage-partner-MX:has-text('closed, false positive')", timeout=10_000
            )
            partner = us_page.text_content("#triage-partner-MX")
            assert "task force sonora-arizona" in partner
            assert us_page.text_content("#triage-own") == "US: new"
            notes = us_page.text_content("#triage-notes")
            assert "Plate seen twice at Nogales" in notes and "informant" not in notes
            content = us_page.content()
            assert "ximena" not in content and "luis" not in content and "Juan" not in content

            # an alert older than the console's span loads by id
            us_page.goto(f"{us.url}#alert={old_id}")
            us_page.wait_for_selector(f'#detail[data-alert-id="{old_id}"][data-state=shown]')

            # --- a viewer: no action buttons, a direct POST refused ---
            viewer = page.context.browser.new_context()
            vpage = viewer.new_page()
            browser_login(vpage, mx.url, "vera")
            vpage.goto(f"{mx.url}#alert={old_id}")
            vpage.wait_for_selector("#detail-triage")
            assert vpage.locator("#triage-actions button").count() == 0
            status = vpage.evaluate(
                """async ([id]) => {
                    const s = await (await fetch('api/session')).json();
                    const r = await fetch('api/triage/' + id, {method: 'POST',
                      headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf},
                      body: JSON.stringify({action: 'acknowledge', revision: 0})});
                    return r.status; }""",
                [old_id],
            )
            assert status == 403
            viewer.close()
            errors = [e for e in log.errors if "403" not in e]  # the viewer's refused POST
            assert log.blocked == [] and errors == [], (log.blocked, log.errors)

        # --- what is on the topics: MX's own, what crossed, its audit; nothing back ---
        mx_actions = lab.read_all(lab.topics["triage.MX"])
        assert [a["action"] for a in mx_actions] == [
            "acknowledge",
            "assign",
            "note",
            "note",
            "close",
        ]
        assert lab.read_all(lab.topics["triage.US"]) == []
        assert lab.read_all(lab.topics["inbound.MX"]) == []
        crossed = lab.read_all(lab.topics["inbound.US"])
        assert [s["action"] for s in crossed] == ["acknowledge", "assign", "note", "close"]
        assert "ximena" not in str(crossed) and "informant" not in str(crossed)
        audits = lab.read_all(lab.topics["triage_audit"])
        assert [(a["destination"], a["revision"]) for a in audits] == [
            ("US", s["revision"]) for s in crossed
        ]

        # --- refusals over HTTP ---
        cookie, csrf = login(mx, "luis")
        url = mx.url + f"api/triage/{old_id}"
        status, doc, _ = http(url, {"action": "acknowledge", "revision": 0}, cookie=cookie)
        assert status == 403 and "CSRF" in doc["error"]
        status, doc, _ = http(
            url, {"action": "acknowledge", "revision": 0}, cookie=cookie, csrf=csrf
        )
        assert status == 200 and doc["own"]["revision"] == 1
        status, doc, _ = http(url, {"action": "start", "revision": 0}, cookie=cookie, csrf=csrf)
        assert status == 409 and doc["code"] == "stale_revision"
        assert doc["current"]["status"] == "acknowledged"
        status, doc, _ = http(
            url, {"action": "note", "revision": 1, "note": "x" * 4001}, cookie=cookie, csrf=csrf
        )
        assert status == 413
        status, doc, _ = http(
            mx.url + "api/triage/nope",
            {"action": "acknowledge", "revision": 0},
            cookie=cookie,
            csrf=csrf,
        )
        assert status == 404 and "unknown alert nope" in doc["error"]
        expired = SessionCodec(SESSION_KEY.encode())
        stale = expired.new("luis", time.time() - 13 * 3600)
        stale = expired.touch(stale, time.time() - 60)
        status, doc, _ = http(mx.url + "api/triage", cookie=expired.encode(stale))
        assert status == 401 and "12 h after login" in doc["error"]
        for _ in range(5):
            status, doc, _ = http(mx.url + "api/login", {"user": "vera", "password": "wrong"})
            assert status == 401 and doc["error"] == "wrong user name or password"
        status, doc, _ = http(mx.url + "api/login", {"user": "vera", "password": PASSWORD})
        assert status == 429 and "too many failed logins" in doc["error"]

        # --- a withdrawal by the pipeline closes MX's triage, saying why ---
        withdrawn = alert_doc(
            old_id,
            raised_at=old_raised,
            recipient="MX",
            recipients=["MX", "US"],
            version=2,
            change="withdrawn",
            revision={
                "reason": "an inspection refutes the crossing",
                "records": ["insp-7"],
                "superseded_by": None,
            },
        )
        lab.producer.send(lab.topics["MX"], orjson.dumps(withdrawn), key=old_id.encode())
        lab.flush()

        def closed_by_pipeline() -> bool:
            own = http(mx.url + f"api/triage/{old_id}", cookie=cookie)[1]["own"]
            return bool(own["status"] == "closed" and own["reason"] == "automated_closure")

        until(closed_by_pipeline, "the withdrawal closes the triage", timeout=20)
        own = http(mx.url + f"api/triage/{old_id}", cookie=cookie)[1]["own"]
        assert "an inspection refutes the crossing" in own["notes"][-1]["text"]
        assert own["updated_by"]["role"] == "pipeline"

        # --- the command line acts as a named user, with the same checks ---
        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "streams.cli", "triage", *args, "--password-stdin"],
                env=lab.env,
                cwd=REPO,
                input=PASSWORD + "\n",
                capture_output=True,
                text=True,
                timeout=60,
            )

        done = cli(old_id, "note", "--user", "luis", "--note", "checked by phone")
        assert done.returncode == 0, done.stderr
        assert f"{old_id}: MX closed, automated_closure" in done.stdout
        refused = cli(old_id, "reopen", "--user", "vera")
        assert refused.returncode == 3 and "role viewer may not reopen" in refused.stderr
        stale = cli(old_id, "reopen", "--user", "luis", "--revision", "1")
        assert stale.returncode == 1 and "stale revision" in stale.stderr

        # --- the report's dispositions are what the triage topics hold ---
        audit = [
            {
                "alert_id": aid,
                "rule_id": "coordinated-crossing",
                "destination": cc,
                "topic": lab.topics[cc],
                "released_at": datetime.now(tz=UTC).isoformat(),
                "policy": {"id": "p", "version": "1", "sha256": "0" * 64},
                "actions": [],
            }
            for aid in (alert_id, old_id)
            for cc in ("MX", "US")
        ]
        for record in audit:
            lab.producer.send(lab.topics["audit"], orjson.dumps(record))
        lab.flush()
        settings = Settings(
            bootstrap_servers=lab.bootstrap,
            topic_audit=lab.topics["audit"],
            triage_topic_prefix=lab.env["FUSION_TRIAGE_TOPIC_PREFIX"],
            task_forces_file=lab.env["FUSION_TASK_FORCES_FILE"],
        )
        report = build_report(
            settings,
            datetime.now(tz=UTC) - timedelta(hours=1),
            datetime.now(tz=UTC) + timedelta(minutes=1),
            timeout=30,
        )
        expected: dict[str, dict[str, str]] = {}  # per alert, the reason of its last close
        for record in lab.read_all(lab.topics["triage.MX"]):
            if record["action"] == "close":
                expected.setdefault(record["alert_id"], {})["reason"] = record["reason"]
        reasons = [e["reason"] for e in expected.values()]
        assert [(d.country, d.rule_id, d.closed, d.open) for d in report.dispositions] == [
            ("MX", "coordinated-crossing", {r: reasons.count(r) for r in sorted(reasons)}, 0)
        ]
        assert sorted(reasons) == ["automated_closure", "false_positive"]
        # ... and the relay's metrics
        for reason in reasons:
            until(
                lambda r=reason: (
                    relay.metric(
                        "fusion_triage_closed", country="MX", rule="coordinated-crossing", reason=r
                    )
                    == 1
                ),
                f"fusion_triage_closed MX {reason} is 1",
                timeout=15,
            )
        assert relay.metric("fusion_triage_released_total", country="MX", destination="US") >= 4

        # --- a restarted console shows the same state ---
        status, before, _ = http(mx.url + "api/triage", cookie=cookie)
        assert status == 200 and before[alert_id]["own"]["status"] == "closed"
        mx.stop()
        mx = consoles["MX"] = ConsoleProcess(lab, "mx")
        mx.wait_ready()
        cookie, _ = login(mx, "luis")
        until(
            lambda: http(mx.url + "api/triage", cookie=cookie)[1] == before,
            "the restarted console shows the same triage",
            timeout=20,
        )
    finally:
        relay.stop()
        for c in consoles.values():
            c.stop()
    assert Path(relay.log_path).exists()
