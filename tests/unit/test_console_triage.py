"""The console's accounts and triage without a broker: login, the lockout, sessions, CSRF,
roles, revisions and refusals, over aiohttp's test server. The triage topic is stood in for by
a writer that hands each action straight back, as the console's reader would."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine.triage import parse_task_forces
from schemas.alerts import Alert
from schemas.triage import SharedTriage, TriageAction
from streams.settings import Settings
from streams.tools.accounts import Accounts, add_user
from streams.tools.console.auth import CSRF_HEADER, SessionCodec
from streams.tools.console.feed import FeedStatus
from streams.tools.console.server import Console, Triage, cookie_name, create_app
from streams.tools.console.store import AlertStore
from streams.tools.console.triage import TriageView, TriageWriter
from tests.unit.test_console import alert_doc

KEY = b"s" * 32
PASSWORD = "a long enough password"
FORCES = parse_task_forces(
    "task_forces:\n  - name: sonora-arizona\n    members: [{user: ximena, country: MX},"
    " {user: bob, country: US}]\n"
    "  - name: weapons\n    members: [{user: ximena, country: MX}, {user: bob, country: US}]\n"
    "    rules: [weapons-tip-near-seizure]\n",
    "forces.yaml",
)


class HandBack(TriageWriter):
    """Every action written is read back at once (the topic, in order)."""

    def __init__(self, view: TriageView) -> None:
        self.topic = "triage.mx"
        self.view = view
        self.written: list[TriageAction] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def write(self, action: TriageAction) -> None:
        self.written.append(action)
        asyncio.get_running_loop().call_soon(self.view.take_action, action)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


Test = Callable[[TestClient[Any, Any], Console, Clock], Awaitable[None]]


def serve(test: Test, tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    for name, country, role in (
        ("ximena", "MX", "analyst"),
        ("luis", "MX", "lead"),
        ("vera", "MX", "viewer"),
        ("bob", "US", "lead"),
    ):
        add_user(users, name, country, role, PASSWORD)  # type: ignore[arg-type]

    async def main() -> None:
        clock = Clock()
        view = TriageView("MX", FORCES)
        triage = Triage(
            settings=Settings(),
            accounts=Accounts(users),
            codec=SessionCodec(KEY),
            view=view,
            writer=HandBack(view),
            forces=FORCES,
            clock=clock,
        )
        console = Console(
            "MX",
            "alerts.mx",
            86400.0,
            AlertStore(),
            FeedStatus("live"),
            heartbeat_s=0.2,
            triage=triage,
        )
        doc = alert_doc("a1")
        console.take(Alert.model_validate(doc), doc)
        async with TestClient(TestServer(create_app(console))) as client:
            await test(client, console, clock)

    asyncio.run(main())


async def login(client: TestClient[Any, Any], user: str) -> str:
    r = await client.post("/api/login", json={"user": user, "password": PASSWORD})
    assert r.status == 200, await r.text()
    cookie = r.cookies[cookie_name("MX")]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    return str((await r.json())["csrf"])


async def act(
    client: TestClient[Any, Any], csrf: str | None, body: dict[str, Any], alert: str = "a1"
) -> tuple[int, dict[str, Any]]:
    headers = {CSRF_HEADER: csrf} if csrf else {}
    r = await client.post(f"/api/triage/{alert}", json=body, headers=headers)
    return r.status, await r.json()


def test_an_analyst_and_a_lead_triage_an_alert(tmp_path: Path) -> None:
    async def check(client: TestClient[Any, Any], console: Console, clock: Clock) -> None:
        csrf = await login(client, "ximena")
        me = await (await client.get("/api/session")).json()
        assert (me["user"], me["role"], me["task_forces"][0]["member"]) == (
            "ximena",
            "analyst",
            True,
        )
        status, doc = await act(client, csrf, {"action": "acknowledge", "revision": 0})
        assert status == 200 and doc["own"]["status"] == "acknowledged"
        status, doc = await act(
            client,
            csrf,
            {
                "action": "assign",
                "revision": 1,
                "assignee": {"kind": "task_force", "name": "sonora-arizona"},
            },
        )
        assert status == 200 and doc["own"]["assignee"]["name"] == "sonora-arizona"
        status, doc = await act(
            client, csrf, {"action": "note", "revision": 2, "note": "MX only", "shareable": False}
        )
        assert status == 200 and doc["allowed"] == ["start", "assign", "note"]
        status, doc = await act(
            client, csrf, {"action": "close", "revision": 3, "reason": "false_positive"}
        )
        assert status == 403 and "role analyst may not close" in doc["error"]
        await client.post("/api/logout")
        csrf = await login(client, "luis")
        me = await (await client.get("/api/session")).json()
        assert me["people"] == ["luis", "ximena"]  # a lead assigns to anyone of MX but viewers
        status, doc = await act(
            client, csrf, {"action": "close", "revision": 3, "reason": "false_positive"}
        )
        assert status == 200 and (doc["own"]["status"], doc["own"]["reason"]) == (
            "closed",
            "false_positive",
        )
        assert doc["allowed"] == ["reopen", "note"]

    serve(check, tmp_path)


def test_refusals_say_why_and_lose_nothing(tmp_path: Path) -> None:
    async def check(client: TestClient[Any, Any], console: Console, clock: Clock) -> None:
        assert (await client.get("/api/alerts")).status == 401
        csrf = await login(client, "ximena")
        status, doc = await act(client, None, {"action": "acknowledge", "revision": 0})
        assert status == 403 and "CSRF" in doc["error"]
        status, doc = await act(client, "wrong", {"action": "acknowledge", "revision": 0})
        assert status == 403
        status, doc = await act(client, csrf, {"action": "acknowledge", "revision": 0}, "nope")
        assert status == 404 and doc["error"] == "unknown alert nope: not on alerts.mx"
        status, doc = await act(client, csrf, {"action": "reopen", "revision": 0})
        assert status == 403  # an analyst may not reopen
        status, doc = await act(client, csrf, {"action": "start", "revision": 0})
        assert status == 200
        status, doc = await act(client, csrf, {"action": "acknowledge", "revision": 1})
        assert status == 409 and doc["code"] == "illegal_transition"
        status, doc = await act(client, csrf, {"action": "note", "revision": 0, "note": "x"})
        assert status == 409 and doc["code"] == "stale_revision"
        assert doc["current"]["revision"] == 1 and doc["current"]["status"] == "in_progress"
        status, doc = await act(client, csrf, {"action": "note", "revision": 1, "note": "x" * 4001})
        assert status == 413 and "at most 4000 characters (got 4001)" in doc["error"]
        status, doc = await act(
            client,
            csrf,
            {
                "action": "assign",
                "revision": 1,
                "assignee": {"kind": "task_force", "name": "weapons"},
            },
        )
        assert status == 400 and doc["error"] == (
            "task force weapons does not cover rule coordinated-crossing "
            "(it covers weapons-tip-near-seizure)"
        )
        status, doc = await act(client, csrf, {"action": "fly", "revision": 1})
        assert status == 400 and "not a triage action" in doc["error"]
        assert console.triage is not None
        assert console.triage.view.book.get("a1").revision == 1
        # A forged and an expired session.
        client.session.cookie_jar.clear()
        client.session.cookie_jar.update_cookies({cookie_name("MX"): "forged.cookie"})
        r = await client.get("/api/triage/a1")
        assert r.status == 401
        await login(client, "ximena")
        clock.now += 31 * 60
        r = await client.get("/api/triage/a1")
        assert r.status == 401 and "30 min without use" in (await r.json())["error"]

    serve(check, tmp_path)


def test_a_viewer_reads_and_may_do_nothing(tmp_path: Path) -> None:
    async def check(client: TestClient[Any, Any], console: Console, clock: Clock) -> None:
        csrf = await login(client, "vera")
        doc = await (await client.get("/api/triage/a1")).json()
        assert doc["allowed"] == [] and doc["own"]["status"] == "new"
        status, doc = await act(client, csrf, {"action": "acknowledge", "revision": 0})
        assert status == 403 and "role viewer may not acknowledge" in doc["error"]

    serve(check, tmp_path)


def test_wrong_passwords_then_the_lockout(tmp_path: Path) -> None:
    async def check(client: TestClient[Any, Any], console: Console, clock: Clock) -> None:
        for _ in range(5):
            r = await client.post("/api/login", json={"user": "ximena", "password": "nope"})
            assert r.status == 401
            assert (await r.json())["error"] == "wrong user name or password"
        r = await client.post("/api/login", json={"user": "ximena", "password": PASSWORD})
        assert r.status == 429 and r.headers["Retry-After"] == "1"
        r = await client.post("/api/login", json={"user": "ximena", "password": PASSWORD})
        assert r.status == 429 and r.headers["Retry-After"] == "2"
        r = await client.post("/api/login", json={"user": "bob", "password": PASSWORD})
        assert r.status == 401  # a US user at the MX console
        clock.now += 16 * 60
        await login(client, "ximena")

    serve(check, tmp_path)


def test_a_partners_shared_triage_shows_beside_ones_own(tmp_path: Path) -> None:
    async def check(client: TestClient[Any, Any], console: Console, clock: Clock) -> None:
        assert console.triage is not None
        console.triage.view.take_shared(
            SharedTriage.model_validate(
                {
                    "alert_id": "a1",
                    "country": "US",
                    "revision": 2,
                    "action": "close",
                    "at": "2026-12-02T03:00:00Z",
                    "status": "closed",
                    "reason": "duplicate",
                    "fields": [],
                    "policy": {"id": "p", "version": "1", "sha256": "0"},
                }
            )
        )
        await login(client, "vera")
        doc = await (await client.get("/api/triage/a1")).json()
        assert doc["own"]["status"] == "new"
        assert (doc["partners"]["US"]["status"], doc["partners"]["US"]["reason"]) == (
            "closed",
            "duplicate",
        )

    serve(check, tmp_path)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FUSION_USERS_FILE", raising=False)


def test_the_cookie_is_secure_behind_https_and_health_waits_for_the_triage_reader(
    tmp_path: Path,
) -> None:
    from streams.tools.console.server import _triage

    users = tmp_path / "users.json"
    add_user(users, "ximena", "MX", "analyst", PASSWORD)
    plain, _ = _triage(Settings(users_file=users), "MX", "alerts.mx")
    https = Settings(users_file=users, console_public_url="https://ops-{cc}.example.org/")
    secure, feed = _triage(https, "MX", "alerts.mx")
    assert plain is not None and not plain.secure_cookie
    assert secure is not None and secure.secure_cookie and feed is not None
    assert feed.topics == ["triage.mx", "triage.mx.inbound"]

    async def main() -> None:
        console = Console(
            "MX", "alerts.mx", 86400.0, AlertStore(), FeedStatus("live"), triage=secure
        )
        async with TestClient(TestServer(create_app(console))) as client:
            r = await client.get("/healthz")
            assert r.status == 503 and (await r.json())["triage"]["state"] == "starting"
            secure.status.state = "live"
            assert (await client.get("/healthz")).status == 200
            r = await client.post("/api/login", json={"user": "ximena", "password": PASSWORD})
            assert r.cookies[cookie_name("MX")]["secure"]

    asyncio.run(main())
