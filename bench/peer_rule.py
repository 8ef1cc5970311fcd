"""The one rule every peer of `bench/peers.py` runs: 5 or more reads of one plate in 10 minutes.

Tumbling 10-minute windows of event time (`occurred_at`), aligned to the epoch, counted per
normalised plate; a window "fires" (an alert is emitted) when its count reaches 5, once per
window. Only each plate's current window is kept: the input is in event-time order per plate
(one partition per plate, each partition in event-time order), so a newer window replaces the
older one and the state holds one entry per plate. An event of an older window than the plate's
current one is late and dropped (as Quix Streams drops late events); the preloaded topic has
none.

Standard library only (plus the caller's JSON decoder), so the Quix Streams peer can import it
from its own virtualenv.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

WINDOW_MS = 10 * 60 * 1000
THRESHOLD = 5
RESULT_PREFIX = "PEER_RESULT "

_NOT_ALNUM = re.compile(r"[^A-Z0-9]")


def normalize_plate(plate: str) -> str:
    """Upper case, letters and digits only (as `schemas.events.normalize_plate`)."""
    return _NOT_ALNUM.sub("", plate.upper())


def event_ms(occurred_at: str) -> int:
    """RFC 3339 `occurred_at` (with offset) -> epoch milliseconds."""
    return round(datetime.fromisoformat(occurred_at).timestamp() * 1000)


class PlateWindows:
    """Count per plate in tumbling 10-minute windows; `fired` windows reached the threshold."""

    __slots__ = ("fired", "late", "state")

    def __init__(self) -> None:
        self.state: dict[str, list[int]] = {}  # plate -> [window start ms, count]
        self.fired = 0
        self.late = 0

    def add(self, plate: str, ts_ms: int) -> bool:
        """Count one read; True when it makes its window reach the threshold (the alert)."""
        start = ts_ms - ts_ms % WINDOW_MS
        cur = self.state.get(plate)
        if cur is None or cur[0] < start:
            self.state[plate] = [start, 1]
            return THRESHOLD == 1
        if cur[0] > start:
            self.late += 1
            return False
        cur[1] += 1
        if cur[1] == THRESHOLD:
            self.fired += 1
            return True
        return False

    def on_event(self, ev: dict[str, Any]) -> bool:
        """One decoded detection (events without a plate count as read but never match)."""
        plate = ev.get("plate")
        if not plate:
            return False
        return self.add(normalize_plate(plate), event_ms(ev["occurred_at"]))


class Clock:
    """Wall time and this process's CPU time at the first and the last (n-th) event."""

    __slots__ = ("count", "cpu_first", "cpu_last", "epoch_first", "n", "t_first", "t_last")

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.t_first = self.t_last = 0.0
        self.cpu_first = self.cpu_last = 0.0
        self.epoch_first = 0.0

    def tick(self, k: int = 1) -> bool:
        """Count k events; True once n have been seen (the caller stops then)."""
        if self.count == 0:
            self.t_first = time.perf_counter()
            self.cpu_first = time.process_time()
            self.epoch_first = time.time()
        self.count += k
        if self.count >= self.n:
            self.t_last = time.perf_counter()
            self.cpu_last = time.process_time()
            return True
        return False

    def result(self, windows: int, late: int) -> dict[str, Any]:
        secs = self.t_last - self.t_first
        return {
            "events": self.count,
            "seconds": secs,
            "cpu_s": self.cpu_last - self.cpu_first,
            "epoch_first": self.epoch_first,
            "windows": windows,
            "late": late,
        }
