"""A real browser for tests: Debian's Chromium driven by Playwright, cut off from every network
but 127.0.0.1 (no browser download: Playwright is pointed at /usr/bin/chromium)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

CHROMIUM = os.environ.get("FUSION_CHROMIUM", "/usr/bin/chromium")
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Every host name but the loopback resolves to nothing: the page gets no network.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]


def chromium_available() -> bool:
    return shutil.which(CHROMIUM) is not None or os.path.exists(CHROMIUM)


@dataclass
class PageLog:
    """What a page did that a test may want to check: off-host requests (refused), console
    errors and uncaught exceptions."""

    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@contextmanager
def browser_page(viewport: tuple[int, int] = (1400, 900)) -> Iterator[tuple[Any, PageLog]]:
    """A new page in headless Chromium; every request to a host other than 127.0.0.1 is
    aborted and recorded in the log, as are console errors and page errors."""
    from playwright.sync_api import sync_playwright

    log = PageLog()
    profile = tempfile.mkdtemp(prefix="fusion-chromium-")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                ctx = browser.new_context(
                    viewport={"width": viewport[0], "height": viewport[1]},
                    service_workers="block",
                )

                def guard(route: Any) -> None:
                    url = route.request.url
                    parts = urlsplit(url)
                    if parts.scheme in ("data", "blob") or parts.hostname in LOCAL_HOSTS:
                        route.continue_()
                    else:
                        log.blocked.append(url)
                        route.abort()

                ctx.route("**/*", guard)
                page = ctx.new_page()
                def on_console(m: Any) -> None:
                    if m.type == "error":
                        log.errors.append(f"console: {m.text}")

                page.on("console", on_console)
                page.on("pageerror", lambda e: log.errors.append(f"page error: {e}"))
                yield page, log
                ctx.close()
            finally:
                browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
