"""The console's web side (aiohttp): the page, its static files, the alerts as JSON, a stream
of new alerts (server-sent events) and the map's GeoJSON."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web
from pydantic import ValidationError

from engine.triage import (
    ROLE_ACTIONS,
    TaskForce,
    TriageError,
    allowed_actions,
)
from schemas.alerts import Alert
from schemas.triage import NOTE_MAX_CHARS, Actor, TriageAction
from streams.settings import Settings
from streams.tools.accounts import AccountError, Accounts, User
from streams.tools.console.auth import (
    COOKIE,
    CSRF_HEADER,
    LoginThrottle,
    Session,
    SessionCodec,
    SessionError,
)
from streams.tools.console.feed import AlertFeed, FeedStatus
from streams.tools.console.mapdata import STATIC, map_geojson
from streams.tools.console.store import AlertStore
from streams.tools.console.triage import TriageFeed, TriageView, TriageWriter, find_alert, submit

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0
CLIENT_QUEUE = 1000
# Everything the page loads is its own: a script injected through alert text would not run.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'"
)
_CLOSE = b""


class Broadcast:
    """Each connected page's queue of server-sent events. A page too slow to keep up is
    dropped; its browser reconnects and reloads the alerts."""

    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[bytes]] = set()

    def subscribe(self) -> asyncio.Queue[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(CLIENT_QUEUE)
        self.queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes]) -> None:
        self.queues.discard(queue)

    def publish(self, event: bytes) -> None:
        for queue in list(self.queues):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self.close(queue)

    def close(self, queue: asyncio.Queue[bytes]) -> None:
        self.queues.discard(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(_CLOSE)

    def close_all(self) -> None:
        for queue in list(self.queues):
            self.close(queue)


def sse(event: str, data: bytes) -> bytes:
    """One server-sent event (`data` is one line of JSON)."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


@dataclass
class Triage:
    """What a console needs to triage: its users, sessions, the login throttle, the task
    forces, its country's triage as read from Kafka, and the writer of its actions."""

    settings: Settings
    accounts: Accounts
    codec: SessionCodec
    view: TriageView
    writer: TriageWriter | None
    forces: dict[str, TaskForce]
    clock: Callable[[], float] = time.time
    status: FeedStatus = field(default_factory=FeedStatus)
    """Where the reader of the triage topics is (shown on /healthz)."""
    secure_cookie: bool = False
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    find: Callable[[str], Any] | None = None


class Console:
    """One country's console: its store, its stream of new alerts and its feed's status."""

    def __init__(
        self,
        country: str,
        topic: str,
        since_s: float | None,
        store: AlertStore,
        status: FeedStatus,
        heartbeat_s: float = HEARTBEAT_S,
        triage: Triage | None = None,
        areas_path: Path | None = None,
    ) -> None:
        self.triage = triage
        self.country = country
        self.areas_path = areas_path or Settings.model_construct().areas_path
        self.topic = topic
        self.since_s = since_s
        self.store = store
        self.status = status
        self.heartbeat_s = heartbeat_s
        self.broadcast = Broadcast()
        if triage is not None:
            triage.view.on_change = self._triage_changed

    def _triage_changed(self, alert_id: str) -> None:
        if self.triage is not None:
            self.broadcast.publish(sse("triage", orjson.dumps(self.triage.view.view(alert_id))))

    def take(self, alert: Alert, doc: dict[str, Any]) -> None:
        """A new alert, or a new version of one, from the topic: keep it and push it (with
        its history) to every open page."""
        if self.store.add(alert, doc):
            held = self.store.get(alert.alert_id)
            self.broadcast.publish(sse("alert", orjson.dumps(held)))


_CONSOLE = web.AppKey("console", Console)
_SESSION = web.RequestKey("session", Session)
_USER = web.RequestKey("user", User)


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def host_guard(allowed: frozenset[str]) -> Any:
    """Refuse requests naming a host the console is not served as: a page on another site
    cannot reach it through a DNS name rebound to this address."""

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        name = (request.host or "").rsplit(":", 1)[0].strip("[]").lower()
        if name not in allowed:
            return web.Response(status=421, text=f"this console is not served as {name!r}\n")
        response: web.StreamResponse = await handler(request)
        return response

    return guard


def allowed_hosts(settings: Settings, host: str) -> frozenset[str]:
    """The names a console may be reached by: the loopback, its address, its public URL's."""
    names = {"127.0.0.1", "localhost", "::1", host.lower()}
    if settings.console_public_url:
        for cc in settings.partners:
            public = urlsplit(settings.console_url(cc)).hostname
            if public:
                names.add(public.lower())
    return frozenset(names)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def info(request: web.Request) -> web.Response:
    console = request.app[_CONSOLE]
    return _json(
        {
            "country": console.country,
            "topic": console.topic,
            "since_s": console.since_s,
            "capacity": console.store.capacity,
        }
    )


async def alerts(request: web.Request) -> web.Response:
    """The alerts held, newest first (`?limit=N` for fewer)."""
    console = request.app[_CONSOLE]
    limit_text = request.query.get("limit")
    limit = int(limit_text) if limit_text and limit_text.isdigit() else None
    return web.Response(
        body=orjson.dumps(console.store.newest_first(limit)),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `alert` for each new alert, `ping` as a heartbeat."""
    console = request.app[_CONSOLE]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    queue = console.broadcast.subscribe()
    try:
        await response.write(b"retry: 2000\n\n" + sse("ping", _status(console)))
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), console.heartbeat_s)
            except TimeoutError:
                event = sse("ping", _status(console))
            if event == _CLOSE:
                break
            await response.write(event)
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        console.broadcast.unsubscribe(queue)
    return response


def _status(console: Console) -> bytes:
    s = console.status
    return orjson.dumps({"state": s.state, "alerts": len(console.store), "error": s.error})


async def map_data(request: web.Request) -> web.Response:
    console = request.app[_CONSOLE]
    return web.Response(
        body=map_geojson(console.areas_path),
        content_type="application/geo+json",
        headers={"Cache-Control": "no-cache"},
    )


async def healthz(request: web.Request) -> web.Response:
    """200 once the readers (alerts, and triage with accounts) have read back and follow
    live, else 503."""
    console = request.app[_CONSOLE]
    s = console.status
    body = {
        "country": console.country,
        "topic": console.topic,
        "state": s.state,
        "alerts": len(console.store),
        "read": s.read,
        "refused": s.refused,
        "error": s.error,
    }
    if console.triage is not None:
        t = console.triage.status
        body["triage"] = {"state": t.state, "read": t.read, "refused": t.refused, "error": t.error}
    live = s.live and (console.triage is None or console.triage.status.live)
    return _json(body, 200 if live else 503)


# -- accounts, sessions and triage ---------------------------------------------------------

PUBLIC = frozenset({"/", "/healthz", "/api/login", "/api/session", "/api/logout"})


def _refuse(status: int, error: str, **extra: Any) -> web.Response:
    return _json({"error": error, **extra}, status)


def _who(request: web.Request) -> tuple[Session, User] | web.Response:
    """The request's session and user, or the 401 to answer."""
    triage = request.app[_CONSOLE].triage
    assert triage is not None
    cookie = request.cookies.get(cookie_name(request.app[_CONSOLE].country))
    if not cookie:
        return _refuse(401, "not logged in")
    try:
        session = triage.codec.decode(cookie, triage.clock())
        user = triage.accounts.get(session.user)
    except SessionError as e:
        return _refuse(401, f"{e}: log in again")
    except AccountError as e:
        return _refuse(503, str(e))
    if user is None or user.country != request.app[_CONSOLE].country:
        return _refuse(401, f"no enabled user {session.user} of this console's country")
    return session, user


def cookie_name(country: str) -> str:
    """The session cookie of a country's console (two consoles on one host keep theirs)."""
    return f"{COOKIE}_{country.lower()}"


def _set_cookie(
    response: web.StreamResponse, triage: Triage, session: Session, country: str
) -> None:
    response.set_cookie(
        cookie_name(country),
        triage.codec.encode(session),
        httponly=True,
        samesite="Strict",
        secure=triage.secure_cookie,
        path="/",
        max_age=int(triage.codec.max_age_s),
    )


@web.middleware
async def _auth(request: web.Request, handler: Any) -> web.StreamResponse:
    """With accounts, every API call but logging in needs a valid session (re-issued with
    the new time of use)."""
    triage = request.app[_CONSOLE].triage
    path = request.path
    if triage is None or path in PUBLIC or not path.startswith("/api/"):
        response: web.StreamResponse = await handler(request)
        return response
    who = _who(request)
    if isinstance(who, web.Response):
        return who
    session, user = who
    request[_SESSION], request[_USER] = session, user
    response = await handler(request)
    if not response.prepared:
        _set_cookie(
            response,
            triage,
            triage.codec.touch(session, triage.clock()),
            request.app[_CONSOLE].country,
        )
    return response


async def login(request: web.Request) -> web.Response:
    console = request.app[_CONSOLE]
    triage = console.triage
    if triage is None:
        return _refuse(404, "this console has no accounts (FUSION_USERS_FILE is unset)")
    try:
        body = await request.json(loads=orjson.loads)
        name, password = str(body["user"]), str(body["password"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return _refuse(400, 'send {"user": ..., "password": ...} as JSON')
    now = triage.clock()
    wait = triage.throttle.retry_after(name, now)
    if wait:
        return web.Response(
            status=429,
            body=orjson.dumps(
                {
                    "error": f"too many failed logins for {name}: try again in {wait:g} s",
                    "retry_after_s": wait,
                }
            ),
            content_type="application/json",
            headers={"Retry-After": str(int(wait) or 1)},
        )
    try:
        user = await asyncio.to_thread(triage.accounts.authenticate, name, password)
    except AccountError as e:
        return _refuse(503, str(e))
    if user is None or user.country != console.country:
        triage.throttle.failed(name, now)
        return _refuse(401, "wrong user name or password")
    triage.throttle.succeeded(name)
    session = triage.codec.new(user.name, now)
    response = _json(_session_doc(triage, session, user))
    _set_cookie(response, triage, session, console.country)
    log.info("console %s: %s logged in (%s)", console.country, user.name, user.role)
    return response


async def logout(request: web.Request) -> web.Response:
    response = _json({"ok": True})
    response.del_cookie(cookie_name(request.app[_CONSOLE].country), path="/")
    return response


def _session_doc(triage: Triage, session: Session, user: User) -> dict[str, Any]:
    return {
        "user": user.name,
        "country": user.country,
        "role": user.role,
        "csrf": triage.codec.csrf(session),
        "actions": sorted(ROLE_ACTIONS[user.role]),
        # a lead assigns to anyone of the country; an analyst only to self or a task force
        "people": sorted(
            u.name
            for u in triage.accounts.users().values()
            if u.country == user.country and not u.disabled and u.role != "viewer"
        )
        if user.role == "lead"
        else [user.name],
        "task_forces": [
            {
                "name": f.name,
                "title": f.title,
                "countries": sorted(f.countries),
                "member": f.has_member(user.name, user.country),
                "rules": f.rules,
            }
            for f in triage.forces.values()
            if user.country in f.countries
        ],
    }


async def session_info(request: web.Request) -> web.Response:
    console = request.app[_CONSOLE]
    if console.triage is None:
        return _json({"accounts": False})
    who = _who(request)
    if isinstance(who, web.Response):  # not logged in: said in the body, so the page asks
        body = who.body if isinstance(who.body, bytes) else b"{}"
        return _json({"accounts": True, "session": None, **orjson.loads(body)})
    session, user = who
    return _json({"accounts": True, "session": True, **_session_doc(console.triage, session, user)})


async def _alert_doc(console: Console, alert_id: str) -> dict[str, Any] | None:
    doc = console.store.get(alert_id)
    if doc is None and console.triage is not None and console.triage.find is not None:
        doc = await console.triage.find(alert_id)
    return doc


async def alert_by_id(request: web.Request) -> web.Response:
    """One alert by id, also one older than the console's span (read from its topic)."""
    console = request.app[_CONSOLE]
    alert_id = request.match_info["alert_id"]
    doc = await _alert_doc(console, alert_id)
    if doc is None:
        return _refuse(404, f"unknown alert {alert_id}: not on {console.topic}")
    return _json(doc)


async def triage_all(request: web.Request) -> web.Response:
    console = request.app[_CONSOLE]
    if console.triage is None:
        return _refuse(404, "this console has no triage (FUSION_USERS_FILE is unset)")
    view = console.triage.view
    return _json({a: view.view(a) for a in sorted(view.alert_ids())})


async def triage_one(request: web.Request) -> web.Response:
    console = request.app[_CONSOLE]
    if console.triage is None:
        return _refuse(404, "this console has no triage (FUSION_USERS_FILE is unset)")
    user: User = request[_USER]
    alert_id = request.match_info["alert_id"]
    view = console.triage.view
    return _json(
        {**view.view(alert_id), "allowed": allowed_actions(view.book.get(alert_id), user.role)}
    )


def _action_from(body: Any, alert_id: str, user: User, country: str) -> TriageAction:
    if not isinstance(body, dict):
        raise ValueError("send the action as a JSON object")
    note = body.get("note")
    if isinstance(note, str) and len(note) > NOTE_MAX_CHARS:
        raise OverflowError(f"a note is at most {NOTE_MAX_CHARS} characters (got {len(note)})")
    return TriageAction.model_validate(
        {
            "action_id": uuid.uuid4().hex,
            "alert_id": alert_id,
            "country": country,
            "revision": body.get("revision"),
            "action": body.get("action"),
            "actor": Actor(user=user.name, country=user.country, role=user.role),
            "at": datetime.now(UTC),
            "reason": body.get("reason") or None,
            "assignee": body.get("assignee") or None,
            "note": {"text": note, "shareable": bool(body.get("shareable"))} if note else None,
        }
    )


async def triage_act(request: web.Request) -> web.Response:
    """An action on an alert's triage: refused unless the session's CSRF token comes with it,
    the role allows it, the alert exists, and it names the current revision."""
    console = request.app[_CONSOLE]
    triage = console.triage
    if triage is None or triage.writer is None:
        return _refuse(404, "this console has no triage (FUSION_USERS_FILE is unset)")
    session: Session = request[_SESSION]
    user: User = request[_USER]
    if not triage.codec.csrf_ok(session, request.headers.get(CSRF_HEADER)):
        return _refuse(403, f"missing or wrong CSRF token (header {CSRF_HEADER})")
    alert_id = request.match_info["alert_id"]
    try:
        body = await request.json(loads=orjson.loads)
        action = _action_from(body, alert_id, user, console.country)
    except OverflowError as e:
        return _refuse(413, str(e))
    except (orjson.JSONDecodeError, ValueError, ValidationError) as e:
        return _refuse(400, f"not a triage action: {e}")
    view = triage.view
    try:
        view.book.check(action)
    except TriageError as e:
        if e.code == "forbidden":
            return _refuse(403, str(e))
    doc = await _alert_doc(console, alert_id)
    if doc is None:
        return _refuse(404, f"unknown alert {alert_id}: not on {console.topic}")
    current = view.book.get(alert_id)
    rule_id = str(doc.get("rule_id", ""))
    try:
        view.book.check(action, rule_id)
    except TriageError as e:
        status = {"stale_revision": 409, "illegal_transition": 409}.get(e.code, 400)
        return _refuse(status, str(e), code=e.code, current=current.to_json())
    try:
        state = await submit(view, triage.writer, action)
    except TimeoutError:
        return _refuse(
            504,
            f"the action was written to {triage.writer.topic} but not read back "
            "within 10 s: reload to see whether it took",
        )
    if state is None:
        now = view.book.get(alert_id)
        return _refuse(
            409,
            f"alert {alert_id}: another action took revision {action.revision} first",
            code="stale_revision",
            current=now.to_json(),
        )
    log.info(
        "console %s: %s %s %s (revision %d)",
        console.country,
        user.name,
        action.action,
        alert_id,
        state.revision,
    )
    return _json({**view.view(alert_id), "allowed": allowed_actions(state, user.role)})


def create_app(
    console: Console,
    feed: AlertFeed | None = None,
    hosts: frozenset[str] | None = None,
    triage_feed: AlertFeed | None = None,
) -> web.Application:
    """The console's web application; with a feed, it reads while the app runs; with
    `hosts`, it answers only requests naming one of them."""
    guards = [host_guard(hosts)] if hosts is not None else []
    app = web.Application(middlewares=[*guards, _headers, _auth])
    app[_CONSOLE] = console
    app.router.add_get("/", page)
    app.router.add_get("/api/info", info)
    app.router.add_get("/api/alerts", alerts)
    app.router.add_get("/api/stream", stream)
    app.router.add_get("/api/map", map_data)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/logout", logout)
    app.router.add_get("/api/session", session_info)
    app.router.add_get("/api/alert/{alert_id}", alert_by_id)
    app.router.add_get("/api/triage", triage_all)
    app.router.add_get("/api/triage/{alert_id}", triage_one)
    app.router.add_post("/api/triage/{alert_id}", triage_act)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)

    async def on_shutdown(app: web.Application) -> None:
        console.broadcast.close_all()

    app.on_shutdown.append(on_shutdown)
    feeds = [f for f in (feed, triage_feed) if f is not None]
    if feeds:

        async def reading(app: web.Application) -> AsyncIterator[None]:
            triage = console.triage
            if triage is not None and triage.writer is not None:
                await triage.writer.start()
            tasks = [
                asyncio.create_task(f.run(), name=f"console-feed-{console.country}-{i}")
                for i, f in enumerate(feeds)
            ]
            yield
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if triage is not None and triage.writer is not None:
                await triage.writer.stop()

        app.cleanup_ctx.append(reading)
    return app


def _triage(settings: Settings, country: str, topic: str) -> tuple[Triage | None, AlertFeed | None]:
    """The console's triage when it has users (FUSION_USERS_FILE), else none."""
    if settings.users_file is None:
        return None, None
    from streams.tools.accounts import configured_task_forces

    accounts = Accounts(settings.users_file)
    accounts.users()  # fail fast on a users file that does not load
    forces = configured_task_forces(settings)
    if settings.console_session_key is not None:
        key = settings.console_session_key.get_secret_value().encode()
    else:
        key = secrets.token_bytes(32)
        print(
            f"console {country}: no FUSION_CONSOLE_SESSION_KEY: sessions end with this process",
            file=sys.stderr,
            flush=True,
        )
    view = TriageView(country, forces)

    async def find(alert_id: str) -> dict[str, Any] | None:
        return await find_alert(settings, topic, alert_id)

    triage = Triage(
        settings=settings,
        accounts=accounts,
        codec=SessionCodec(key),
        view=view,
        writer=TriageWriter(settings, country),
        forces=forces,
        secure_cookie=settings.console_url(country).startswith("https:"),
        find=find,
    )
    triage_feed = TriageFeed(settings, country, view)
    triage.status = triage_feed.status
    return triage, triage_feed


def run(
    settings: Settings,
    country: str,
    *,
    host: str | None = None,
    port: int | None = None,
    since_s: float | None = 86400.0,
) -> None:
    """Serve one partner's console until interrupted."""
    country = country.upper()
    topic = settings.alert_topic(country)
    store = AlertStore()
    feed = AlertFeed(
        settings, topic, since_s, lambda a, d: None, client_id=f"fusion-console-{country.lower()}"
    )
    triage, triage_feed = _triage(settings, country, topic)
    console = Console(
        country, topic, since_s, store, feed.status, triage=triage, areas_path=settings.areas_path
    )
    feed.sink = console.take
    host = host or settings.console_host
    port = port or settings.console_port_of(country)
    url = f"http://{host}:{port}/"
    print(f"console {country}: reading {topic}; serving {url}", flush=True)
    if triage is None and host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"console {country}: listening beyond this machine, and the console has no login: "
            "set FUSION_USERS_FILE, or serve it behind a reverse proxy that authenticates the "
            "operations centre's users",
            file=sys.stderr,
            flush=True,
        )
    app = create_app(console, feed, allowed_hosts(settings, host), triage_feed)
    web.run_app(app, host=host, port=port, print=None, shutdown_timeout=2.0)
