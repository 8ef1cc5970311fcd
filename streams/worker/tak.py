"""Cursor on Target to each partner's TAK server, so that field teams see the alerts on their
maps; a TAK server that is slow or down never holds the pipeline back.

Per partner with a server in `FUSION_TAK_SERVERS`: a bounded buffer that delivery offers each
released alert to without waiting (when full, the oldest is dropped and counted), and a task
in the worker's event loop that turns the alerts into CoT (`interop/cot.py`), connects, sends,
and reconnects with backoff when the server goes away.

Connections come from pytak: `protocol_factory` for TCP, and for TLS its context (client
certificate in PEM or, with `cryptography` installed, .p12; CA) made once at start, since its
`create_tls_client` would read the files again on every reconnect and take no timeout. Its
queue workers are not used: putting on their queue awaits, a full queue drops with a log line
but no count, a write waits on the socket with no limit, and a lost connection ends the
workers rather than reconnecting.

An event counts as sent once the socket has taken it; a connection that breaks can lose what
the kernel still held. CoT is keyed by uid, so a repeat of an alert only updates its marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from interop.cot import alert_to_cot
from streams.settings import Settings
from streams.worker.metrics import Metrics

log = logging.getLogger(__name__)

Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
Convert = Callable[[Mapping[str, Any]], bytes]

CONNECT_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 10.0
FIRST_RETRY_S = 0.5
STEADY_SESSION_S = 10.0


class TakSender:
    """One partner's TAK server: its bounded buffer and the loop that empties it."""

    def __init__(
        self,
        country: str,
        connect: Connect,
        convert: Convert,
        metrics: Metrics,
        *,
        capacity: int,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self.country = country
        self.connect = connect
        self.convert = convert
        self.capacity = capacity
        self.reconnect_max_s = reconnect_max_s
        self.buffer: deque[Mapping[str, Any]] = deque()
        self.connected = False
        self._wake = asyncio.Event()
        self._emptied = asyncio.Event()
        self._sent = metrics.tak_sent.labels(country)
        self._dropped = {
            reason: metrics.tak_dropped.labels(country, reason)
            for reason in ("buffer_full", "shutdown", "error")
        }
        self._connected_gauge = metrics.tak_connected.labels(country)
        self._buffered = metrics.tak_buffered.labels(country)
        self._connected_gauge.set(0)
        self._buffered.set(0)

    def offer(self, alert: Mapping[str, Any]) -> None:
        """Hold one released alert for sending; never waits. The alert must not change after."""
        buffer = self.buffer
        if len(buffer) >= self.capacity:
            buffer.popleft()
            self._dropped["buffer_full"].inc()
        buffer.append(alert)
        self._buffered.set(len(buffer))
        self._emptied.clear()
        self._wake.set()

    async def run(self) -> None:
        """Connect, send, and reconnect with backoff, until cancelled."""
        first_retry_s = min(FIRST_RETRY_S, self.reconnect_max_s)
        retry_s = first_retry_s
        failing = False
        while True:
            try:
                reader, writer = await asyncio.wait_for(self.connect(), CONNECT_TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not failing:
                    log.warning("TAK %s: cannot connect (%s); retrying", self.country, e)
                failing = True
                await asyncio.sleep(retry_s * random.uniform(0.8, 1.2))  # noqa: S311
                retry_s = min(retry_s * 2, self.reconnect_max_s)
                continue
            log.info("TAK %s: connected", self.country)
            failing = False
            began = time.monotonic()
            self._set_connected(True)
            try:
                await self._session(reader, writer)
                log.warning("TAK %s: the server closed the connection", self.country)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("TAK %s: connection lost (%s)", self.country, e)
            finally:
                self._set_connected(False)
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)
            if time.monotonic() - began >= STEADY_SESSION_S:
                retry_s = first_retry_s
            await asyncio.sleep(retry_s * random.uniform(0.8, 1.2))  # noqa: S311
            retry_s = min(retry_s * 2, self.reconnect_max_s)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Send while the server stays; return when it closes the connection."""
        # Read what the server sends (other clients' events, pongs) so it never stalls on
        # us, and learn at once when it goes away.
        gone = asyncio.ensure_future(_read_until_closed(reader))
        try:
            while not gone.done():
                if not self.buffer:
                    self._emptied.set()
                    self._wake.clear()
                    woken = asyncio.ensure_future(self._wake.wait())
                    try:
                        await asyncio.wait({woken, gone}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        woken.cancel()
                    continue
                alert = self.buffer.popleft()
                self._buffered.set(len(self.buffer))
                try:
                    data = self.convert(alert)
                except Exception:
                    log.exception("TAK %s: no CoT event for alert", self.country)
                    self._dropped["error"].inc()
                    continue
                writer.write(data)
                try:
                    await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
                except BaseException:
                    self._requeue(alert)
                    raise
                self._sent.inc()
        finally:
            gone.cancel()

    def _requeue(self, alert: Mapping[str, Any]) -> None:
        """Put back an alert whose write did not complete (it is the oldest held)."""
        if len(self.buffer) >= self.capacity:
            self._dropped["buffer_full"].inc()
            return
        self.buffer.appendleft(alert)
        self._buffered.set(len(self.buffer))

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        self._connected_gauge.set(1 if up else 0)

    async def flushed(self) -> None:
        """Wait until the buffer has been emptied onto the connection."""
        await self._emptied.wait()

    def discard(self) -> int:
        """Forget what is held (at shutdown), counted; returns how many."""
        n = len(self.buffer)
        self.buffer.clear()
        self._dropped["shutdown"].inc(n)
        self._buffered.set(0)
        return n


async def _read_until_closed(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(65536):
            pass


class TakOutput:
    """Every partner's TAK sender, started and stopped with the worker."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.senders = {
            country: TakSender(
                country,
                pytak_connect(settings, url),
                cot_converter(settings, country),
                metrics,
                capacity=settings.tak_buffer,
                reconnect_max_s=settings.tak_reconnect_max_s,
            )
            for country, url in settings.tak_servers.items()
        }
        self._tasks: list[asyncio.Task[None]] = []

    def offer(self, country: str, alert: Mapping[str, Any]) -> None:
        """Hold an alert as released to `country` for its TAK server, if it has one."""
        sender = self.senders.get(country)
        if sender is not None:
            sender.offer(alert)

    async def run(self) -> None:
        """Run every sender until stopped or cancelled."""
        if not self.senders:
            return
        self._tasks = [
            asyncio.create_task(s.run(), name=f"tak-{c}") for c, s in self.senders.items()
        ]
        try:
            # Senders end only when stopped (cancelled): return then, rather than raise.
            ended = await asyncio.gather(*self._tasks, return_exceptions=True)
            for country, result in zip(self.senders, ended, strict=True):
                if isinstance(result, Exception):
                    log.error("TAK %s: the sender failed", country, exc_info=result)
        finally:
            for task in self._tasks:
                task.cancel()

    async def stop(self, grace_s: float = 1.0) -> None:
        """Give connected senders a moment to send what they hold, then stop them; whatever
        is still held is counted as dropped."""
        busy = [s.flushed() for s in self.senders.values() if s.buffer and s.connected]
        if busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*busy), grace_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for country, sender in self.senders.items():
            n = sender.discard()
            if n:
                log.warning("TAK %s: %d CoT events not sent at shutdown", country, n)


def pytak_config(settings: Settings, url: str) -> dict[str, str]:
    """pytak's connection options for one TAK server."""
    config = {"COT_URL": url}
    for name, value in (
        ("PYTAK_TLS_CLIENT_CAFILE", settings.tak_ca_file),
        ("PYTAK_TLS_CLIENT_CERT", settings.tak_cert_file),
        ("PYTAK_TLS_CLIENT_KEY", settings.tak_key_file),
    ):
        if value is not None:
            config[name] = str(value)
    if settings.tak_cert_password is not None:
        config["PYTAK_TLS_CLIENT_PASSWORD"] = settings.tak_cert_password.get_secret_value()
    return config


def pytak_connect(settings: Settings, url: str) -> Connect:
    """Opens a connection to one TAK server with pytak. For TLS, the context (client
    certificate, CA) is made once, here, so that a bad certificate stops the worker at start
    and reconnects do not read the files again. pytak is imported here, only by a worker
    with a TAK server (the import takes about 0.2 s)."""
    with warnings.catch_warnings():
        # pytak warns on import when `cryptography` (only for .p12 certificates) is missing.
        warnings.filterwarnings("ignore", message="The 'cryptography' package is required")
        import pytak
        import pytak.client_functions as pytak_client

    config = pytak_config(settings, url)
    parsed = urlsplit(url)
    if parsed.scheme == "tcp":

        async def connect_tcp() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            reader, writer = await pytak.protocol_factory(dict(config))
            return reader, writer

        return connect_tcp

    with warnings.catch_warnings():
        # pytak sets ssl.OP_NO_TLSv1 / OP_NO_TLSv1_1, deprecated since Python 3.10: the
        # context it makes still refuses TLS below 1.2.
        warnings.filterwarnings("ignore", "ssl.OP_NO_SSL", DeprecationWarning)
        try:
            tls = pytak_client.get_ssl_ctx(pytak_client.get_tls_config(config))
        except (SyntaxError, ValueError, OSError, SystemError) as e:
            raise ValueError(f"TAK server {url}: cannot set up TLS: {e}") from e
    host, port = pytak.parse_url(url)
    server_hostname = str(host).strip("[]")

    async def connect_tls() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(
            server_hostname, port, ssl=tls, server_hostname=server_hostname
        )

    return connect_tls


def cot_converter(settings: Settings, country: str) -> Convert:
    """Turns an alert as released to `country` into its CoT event, linked to its console."""
    stale_s = settings.cot_stale_s
    types = settings.cot_types

    def convert(alert: Mapping[str, Any]) -> bytes:
        link = settings.alert_url(country, str(alert["alert_id"]))
        return alert_to_cot(alert, link=link, stale_s=stale_s, types=types)

    return convert
