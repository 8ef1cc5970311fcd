"""The console's web side (aiohttp): the page, its static files, the alerts as JSON, a stream
of new alerts (server-sent events) and the map's GeoJSON."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from schemas.alerts import Alert
from streams.settings import Settings
from streams.tools.console.feed import AlertFeed, FeedStatus
from streams.tools.console.mapdata import STATIC, map_geojson
from streams.tools.console.store import AlertStore

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
        areas_path: Path | None = None,
    ) -> None:
        self.country = country
        self.areas_path = areas_path or Settings.model_construct().areas_path
        self.topic = topic
        self.since_s = since_s
        self.store = store
        self.status = status
        self.heartbeat_s = heartbeat_s
        self.broadcast = Broadcast()

    def take(self, alert: Alert, doc: dict[str, Any]) -> None:
        """A new alert from the topic: keep it and push it to every open page."""
        if self.store.add(alert, doc):
            self.broadcast.publish(sse("alert", orjson.dumps(doc)))


_CONSOLE = web.AppKey("console", Console)


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
    """200 once the reader has read back its span and follows live, else 503."""
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
    return _json(body, 200 if s.live else 503)


def create_app(
    console: Console, feed: AlertFeed | None = None, hosts: frozenset[str] | None = None
) -> web.Application:
    """The console's web application; with a feed, it reads while the app runs; with
    `hosts`, it answers only requests naming one of them."""
    guards = [host_guard(hosts)] if hosts is not None else []
    app = web.Application(middlewares=[*guards, _headers])
    app[_CONSOLE] = console
    app.router.add_get("/", page)
    app.router.add_get("/api/info", info)
    app.router.add_get("/api/alerts", alerts)
    app.router.add_get("/api/stream", stream)
    app.router.add_get("/api/map", map_data)
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)

    async def on_shutdown(app: web.Application) -> None:
        console.broadcast.close_all()

    app.on_shutdown.append(on_shutdown)
    if feed is not None:

        async def reading(app: web.Application) -> AsyncIterator[None]:
            task = asyncio.create_task(feed.run(), name=f"console-feed-{console.country}")
            yield
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        app.cleanup_ctx.append(reading)
    return app


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
    feed = AlertFeed(settings, topic, since_s, lambda a, d: None,
                     client_id=f"fusion-console-{country.lower()}")  # fmt: skip
    console = Console(country, topic, since_s, store, feed.status, areas_path=settings.areas_path)
    feed.sink = console.take
    host = host or settings.console_host
    port = port or settings.console_port_of(country)
    url = f"http://{host}:{port}/"
    print(f"console {country}: reading {topic}; serving {url}", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"console {country}: listening beyond this machine, and the console has no login: "
            "serve it behind a reverse proxy that authenticates the operations centre's users",
            file=sys.stderr,
            flush=True,
        )
    app = create_app(console, feed, allowed_hosts(settings, host))
    web.run_app(app, host=host, port=port, print=None, shutdown_timeout=2.0)
