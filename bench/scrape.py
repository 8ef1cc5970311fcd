"""A Prometheus-style scrape of a worker's /metrics: a GET every `every` seconds, each one
timed and sized, as a Prometheus server scraping the worker would do.

The worker serves /metrics from a thread of its own process (prometheus_client), so a scrape
costs it CPU and holds its interpreter lock. `share` = the scrapes' summed wall time over the
span scraped: an upper bound of that cost, since a scrape's wall time also counts the time its
thread waits for the lock while the worker's loop runs.
"""

from __future__ import annotations

import statistics
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import NamedTuple


class Scrape(NamedTuple):
    t: float  # epoch seconds at the start
    ms: float
    size: int  # bytes
    series: int  # samples: the lines that are not comments


def count_series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def metric_sum(text: str, name: str) -> float:
    """Sum of a metric's samples in an exposition text (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class ScrapeStats:
    """The scrapes of one phase, of one worker or several (`merge`)."""

    scrapes: list[Scrape] = field(default_factory=list)
    failed: int = 0  # refused or timed out once the worker had answered a first one
    wall_s: float = 0.0  # the span scraped, summed over workers
    lasts: list[Scrape] = field(default_factory=list)  # each worker's last scrape

    @property
    def share(self) -> float:
        return sum(s.ms for s in self.scrapes) / 1000 / self.wall_s if self.wall_s else 0.0

    @property
    def median_ms(self) -> float:
        return statistics.median(s.ms for s in self.scrapes) if self.scrapes else 0.0

    @property
    def max_ms(self) -> float:
        return max((s.ms for s in self.scrapes), default=0.0)

    @property
    def largest(self) -> Scrape | None:
        """Of the workers' last scrapes, the largest."""
        return max(self.lasts, key=lambda s: s.size, default=None)

    @staticmethod
    def merge(parts: list[ScrapeStats]) -> ScrapeStats:
        return ScrapeStats(
            sorted(s for p in parts for s in p.scrapes),
            sum(p.failed for p in parts),
            sum(p.wall_s for p in parts),
            [s for p in parts for s in p.lasts],
        )


class Scraper(threading.Thread):
    """GETs http://127.0.0.1:<port>/metrics every `every` seconds until `stop`; like
    Prometheus, a scrape times out after the interval and a late one does not queue up."""

    def __init__(self, port: int, every: float) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.every = every
        self.stats = ScrapeStats()
        self.latest = ""  # the last body read
        self.halt = threading.Event()
        self.started_at = 0.0

    def run(self) -> None:
        self.started_at = time.time()
        due = time.monotonic()
        while not self.halt.wait(max(0.0, due - time.monotonic())):
            due = max(due + self.every, time.monotonic())
            self.scrape()

    def scrape(self) -> None:
        t, t0 = time.time(), time.perf_counter()
        try:
            with urllib.request.urlopen(self.url, timeout=max(self.every, 1.0)) as r:
                body = r.read()
        except OSError:
            self.stats.failed += bool(self.stats.scrapes)  # before its first: not up yet
            return
        ms = (time.perf_counter() - t0) * 1000
        self.latest = body.decode()
        self.stats.scrapes.append(Scrape(t, ms, len(body), count_series(self.latest)))

    def stop(self) -> ScrapeStats:
        if not self.halt.is_set():
            self.halt.set()
            self.join()
            self.stats.wall_s = time.time() - self.started_at
            self.stats.lasts = self.stats.scrapes[-1:]
        return self.stats
