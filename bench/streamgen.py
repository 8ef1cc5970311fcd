"""A benchmark stream: the simulator's events, with a bounded population of active keys.

`streams.tools.simulator.Simulator` draws background plates from ~120 million values, so almost no
two events share a key and the keyed rules see no repeats. For benchmarks we want a realistic
working set instead: `keys` plates, serials and person refs that recur, so per-key state
(watchlists, sequences, temporal pairs, serial counts) is exercised as in production.

Everything else is the simulator's: the four event types in its mix (55 % detections, 25 %
tracks, 12 % suspects, 8 % weapons), locations along the shipped border line, suspects
backdated up to 3 days and weapons up to 1 day (late, out-of-order arrivals), 0-2 s of jitter
on the rest, and its two scenarios (watchlist plate, coordinated crossing) mixed in. Event time
advances with a clock the caller drives, so a stream can be generated ahead of time at any
event-time rate.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from streams.tools.simulator import Simulator

PLATE_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"


class KeyedSimulator(Simulator):
    """The simulator with pools of `keys` plates, serials and person refs."""

    def __init__(self, *, keys: int, seed: int = 7, scenario_share: float = 0.02) -> None:
        super().__init__(seed=seed, scenario_share=scenario_share, run_id="")
        r = self.rng
        # Plates in canonical form; _plate writes them in varying spellings (normalisation).
        self.plates = [
            "".join(r.choices(PLATE_LETTERS, k=3)) + f"{r.randint(0, 9999):04d}"
            for _ in range(keys)
        ]
        self.serials = [f"SN{r.randint(10**6, 10**7)}" for _ in range(keys)]
        self.persons = [f"P-{r.randint(1, 10**7)}" for _ in range(keys)]

    def _plate(self, pool: str = "bg") -> str:
        r = self.rng
        p = r.choice(self.plates)
        style = r.random()
        if style < 0.6:
            return f"{p[:3]}-{p[3:]}"
        if style < 0.8:
            return f"{p[:3].lower()} {p[3:]}"
        return p

    def background(self, now: float) -> tuple[str, dict[str, Any]]:
        etype, ev = super().background(now)
        r = self.rng
        if etype == "suspect":
            ev["person_ref"] = r.choice(self.persons)
        elif etype == "weapon":
            ev["serial"] = r.choice(self.serials)
            if r.random() < 0.3:
                ev["plate"] = self._plate()
            if r.random() < 0.2:
                ev["person_ref"] = r.choice(self.persons)
        return etype, ev

    def seizure_scenario(self, now: float) -> list[tuple[str, dict[str, Any]]]:
        """A weapon seizure and a suspect reported a few km and minutes from it."""
        r = self.rng
        lat, lon = self._border_point(spread_km=10.0)
        w = self._common("weapon", now - r.uniform(0, 600), lat, lon)
        w.update(
            weapon_event="seizure",
            serial=r.choice(self.serials),
            make="Colt",
            model="AR-15",
            caliber="5.56",
            quantity=r.randint(1, 40),
        )
        s = self._common(
            "suspect",
            now - r.uniform(0, 600),
            round(lat + r.uniform(-0.02, 0.02), 5),
            round(lon + r.uniform(-0.02, 0.02), 5),
        )
        s.update(
            person_ref=r.choice(self.persons),
            watchlist="weapons",
            risk=r.choice(("medium", "high")),
            confidence=round(r.uniform(0.6, 1.0), 2),
        )
        return [("weapon", w), ("suspect", s)]

    def stream(self, now_fn: Any = None) -> Iterator[tuple[str, dict[str, Any]]]:
        assert now_fn is not None
        scenarios = (self.watchlist_scenario, self.crossing_scenario, self.seizure_scenario)
        while True:
            now = now_fn()
            if self.rng.random() < self.scenario_share:
                yield from self.rng.choice(scenarios)(now)
            else:
                yield self.background(now)


@dataclass(frozen=True, slots=True)
class Item:
    """One generated event: its type, wire bytes, id and nominal event time."""

    etype: str
    raw: bytes
    event_id: str
    ts: float


def generate(
    n: int,
    *,
    keys: int,
    t0: float,
    event_rate: float,
    seed: int = 7,
    scenario_share: float = 0.02,
    run_id: str | None = None,
) -> list[Item]:
    """`n` events whose event time runs from `t0` at `event_rate` events per second."""
    sim = KeyedSimulator(keys=keys, seed=seed, scenario_share=scenario_share)
    if run_id is not None:
        sim.run_id = run_id
    step = 1.0 / event_rate
    tick = [0]

    def clock() -> float:
        tick[0] += 1
        return t0 + tick[0] * step

    out: list[Item] = []
    for etype, ev in sim.stream(clock):
        raw = bytes(memoryview(orjson.dumps(ev)))  # exact-size copy: orjson over-allocates
        out.append(Item(etype, raw, ev["event_id"], t0 + tick[0] * step))
        if len(out) >= n:
            break
    return out


def random_run_id(rng_seed: int | None = None) -> str:
    import random

    r = random.Random(rng_seed)
    return "".join(r.choices(string.ascii_lowercase, k=6))


def paced(items: list[Item], rate: float, clock: Callable[[], float]) -> Iterator[list[Item]]:
    """Yield the items due so far, in groups, so a caller can publish at `rate` per second."""
    start = clock()
    i = 0
    n = len(items)
    while i < n:
        due = min(n, int((clock() - start) * rate) + 1)
        if due > i:
            yield items[i:due]
            i = due
        else:
            yield []
