"""`proximity`: events within R km and T of each other, found through a grid index."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from pydantic import Field, model_validator

from engine.correlators.base import Correlator, store_snapshots
from engine.explain import Explanation, at_most, duration, said
from engine.facts import Fact
from engine.geo import EARTH_RADIUS_KM, Grid, haversine_km
from engine.hits import Hit
from engine.rules import Role, RuleBase
from engine.selectors import Selector
from engine.state import KeyedFacts, event_time, near_bounds, with_fact


class ProximityRule(RuleBase):
    """At least `min_count[kind]` events of each kind within `radius_km` of the newest one
    and inside one `window` of event time."""

    type_name: ClassVar[str] = "proximity"
    geo: ClassVar[bool] = True
    select: dict[str, Selector] = Field(min_length=1)
    min_count: dict[str, int] = Field(default_factory=dict)
    radius_km: float = Field(gt=0, le=500)
    max_candidates: int = Field(default=500, ge=2)

    @model_validator(mode="after")
    def _counts_name_kinds(self) -> ProximityRule:
        for name, n in self.min_count.items():
            if name not in self.select:
                raise ValueError(
                    f"min_count names kind {name!r}, which is not in select "
                    f"(kinds: {sorted(self.select)})"
                )
            if n < 1:
                raise ValueError(f"min_count of {name!r} must be at least 1")
        return self

    def selectors(self) -> Sequence[Selector]:
        return list(self.select.values())

    @property
    def reach_km(self) -> float | None:
        return self.radius_km

    def needed(self) -> dict[str, int]:
        return {name: self.min_count.get(name, 1) for name in self.select}

    def roles(self) -> list[Role]:
        return [Role(name, [sel]) for name, sel in self.select.items()]

    def summary(self) -> str:
        need = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in self.needed().items())
        return f"{need} within {self.radius_km:g} km and {duration(self.window)} of each other"

    def explain(self, ex: Explanation) -> None:
        evidence = ex.evidence
        radius = self.radius_km
        w = self.window
        centre = min(evidence, key=lambda c: max(_km(c, f) for f in evidence))
        crole = f"{ex.role(centre)} {centre.event_id}"
        ex.met(centre, said("the point the others are measured from"))
        far = max(_km(centre, f) for f in evidence)
        ex.condition(
            said(
                f"all within {radius:g} km of {crole} (farthest {far:.1f} km)",
                ex.every,
                f"all within {radius:g} km of one of them",
                needs="location",
            )
        )
        ex.condition(
            said(
                f"event times span {duration(ex.span)} {at_most(w)}",
                ex.every,
                f"within {duration(w)}",
            )
        )
        for f in evidence:
            if f is not centre:
                gap = f.ts - centre.ts
                when = f"{duration(gap)} {'after' if gap >= 0 else 'before'} it"
                ex.met(
                    f,
                    said(
                        f"{_km(centre, f):.1f} km from {crole} (limit {radius:g} km), {when}",
                        (f.event_id, centre.event_id),
                        f"within {radius:g} km and {duration(w)} of the reference event",
                        needs="location",
                    ),
                )
        for name, n in self.needed().items():
            got = ex.count(name)
            ex.condition(said(f"{got} {name} event{'s' if got != 1 else ''} (at least {n})"))


class ProximityCorrelator(Correlator[ProximityRule]):
    def __init__(self, rule: ProximityRule) -> None:
        super().__init__(rule)
        self.grid = Grid(rule.radius_km)
        self.cells: KeyedFacts[tuple[int, int]] = KeyedFacts(
            rule.max_keys, rule.max_per_key, keep_dropped=True
        )
        # The kinds of every fact taken, by event id, until it expires (or, if evicted, until
        # the next expiry): also what tells a redelivery.
        self.kinds: dict[str, tuple[str, ...]] = {}
        self.owned: set[str] = set()
        self._newest = -math.inf
        """The latest event time taken: a fact at or after it precedes nothing held."""
        self.needed = rule.needed()
        self._least = sum(self.needed.values())
        # A great circle is at least as long as its difference in latitude: farther apart in
        # latitude than this (with room for rounding), two points are farther than the radius.
        self._max_dlat = math.degrees(rule.radius_km / EARTH_RADIUS_KM) * (1 + 1e-9)
        self._select = tuple((n, s.matcher) for n, s in rule.select.items())

    def _match(self, fact: Fact) -> tuple[str, ...]:
        return tuple(n for n, matches in self._select if matches(fact))

    def on_fact(self, fact: Fact, key: str | None, owner: bool, watermark: float) -> list[Hit]:
        eid = fact.event_id
        kinds = self.kinds.get(eid)
        if kinds is None:
            kinds = self._match(fact)
            if not kinds:
                return []
            self.kinds[eid] = kinds
            self.cells.add(self.grid.cell(fact.lat, fact.lon), fact)
        if not kinds:
            return []
        hits: list[Hit] = []
        if owner:
            if self.tracking and eid not in self.owned:
                self.changed.add(self.grid.cell(fact.lat, fact.lon))
            self.owned.add(eid)
            hit = self._evaluate(fact)
            if hit is not None:
                hits.append(hit)
        # Taken after events it precedes (late): the match decided at each of them, as replay
        # decides it with this event already there.
        if fact.ts <= self._newest:
            later = self._after(fact)
        else:
            self._newest = fact.ts
            later = []
        for g in later:
            hit = self._evaluate(g)
            if hit is not None:
                hits.append(hit)
        return hits

    def _after(self, fact: Fact) -> list[Fact]:
        """Facts owned here, later than `fact` within the window and within reach of it."""
        w = self.rule.window
        radius = self.rule.radius_km
        lat, lon, t = fact.lat, fact.lon, fact.ts
        me = (t, fact.event_id)
        out: list[Fact] = []
        owned = self.owned
        for cell in self.grid.cells_within(lat, lon, radius):
            held = self.cells.by_key.get(cell)
            if held is None or held[-1].ts < t:
                continue
            for g in held[bisect_left(held, t, key=event_time) :]:
                if (
                    g.event_id in owned
                    and (g.ts, g.event_id) > me
                    and g.ts - t <= w
                    and haversine_km(lat, lon, g.lat, g.lon) <= radius
                ):
                    out.append(g)
        out.sort(key=_order)
        return out

    def _evaluate(self, fact: Fact) -> Hit | None:
        """The match decided at `fact`, from the facts up to it in (time, id) order."""
        rule = self.rule
        eid = fact.event_id
        w = rule.window
        radius = rule.radius_km
        lat, lon, t = fact.lat, fact.lon, fact.ts
        # The facts of the cells around within the window of time, first; then those near.
        in_cell = self.cells.by_key.get
        ranges: list[list[Fact]] = []
        count = 0
        for cell in self.grid.cells_within(lat, lon, radius):
            held = in_cell(cell)
            if held is None:
                continue
            if abs(held[0].ts - t) <= w and abs(held[-1].ts - t) <= w:
                ranges.append(held)  # all of it (what the test takes is contiguous)
                count += len(held)
            else:
                i, j = near_bounds(held, t, w)
                if i < j:
                    ranges.append(held[i:j])
                    count += j - i
        if count + 1 < self._least:
            return None  # too few even before the distance test
        near: list[Fact] = []
        max_dlat = self._max_dlat
        for held in ranges:
            for f in held:
                ft = f.ts
                if (
                    (ft < t or (ft == t and f.event_id < eid))
                    and abs(f.lat - lat) <= max_dlat
                    and haversine_km(lat, lon, f.lat, f.lon) <= radius
                ):
                    near.append(f)
        if len(near) + 1 < self._least:
            return None
        near.sort(key=_order)
        group = with_fact(near[-rule.max_candidates :], fact, False)
        span = self._first_span(group, t, w)
        if span is None:
            return None
        lat = sum(f.lat for f in span) / len(span)
        lon = sum(f.lon for f in span) / len(span)
        return Hit(rule.id, tuple(span), None, lat, lon)

    def _first_span(self, group: list[Fact], t: float, w: float) -> list[Fact] | None:
        """The earliest span [s, s + w] of `group` (sorted) holding time `t` with enough of
        every kind."""
        kinds = self.kinds
        match = self._match
        needed = tuple(self.needed.items())
        counts = dict.fromkeys(self.needed, 0)
        n = len(group)
        s = 0
        while s < n and t - group[s].ts > w:
            s += 1
        j = s
        while s < n:
            start = group[s]
            st = start.ts
            if st > t:
                break
            while j < n and group[j].ts - st <= w:
                f = group[j]
                for k in kinds.get(f.event_id) or match(f):
                    counts[k] += 1
                j += 1
            if all(counts[k] >= m for k, m in needed):
                return group[s:j]
            for k in kinds.get(start.event_id) or match(start):
                counts[k] -= 1
            s += 1
        return None

    def expire(self, watermark: float) -> None:
        self.cells.expire(watermark - self.rule.horizon)
        kinds = self.kinds
        for eid in self.cells.take_dropped():
            kinds.pop(eid, None)
            self.owned.discard(eid)

    def size(self) -> tuple[int, int]:
        return (self.cells.keys(), self.cells.items_count())

    def evictions(self) -> int:
        return self.cells.evictions

    def facts(self) -> Iterator[Fact]:
        return self.cells.facts()

    def snapshot(self) -> Any:
        return {"cells": self.cells.snapshot(), "owned": sorted(self.owned)}

    def restore(self, data: Any, facts: dict[str, Fact]) -> None:
        self.cells.restore(data["cells"], facts)
        self.kinds = {f.event_id: self._match(f) for f in self.cells.facts()}
        held = set(self.kinds)
        self._newest = max((f.ts for f in self.cells.facts()), default=-math.inf)
        owned = data.get("owned")
        # a snapshot from before owners were recorded: take every fact held as owned
        self.owned = held if owned is None else {e for e in owned if e in held}

    def keyed_stores(self) -> dict[str, KeyedFacts[Any]]:
        return {"cells": self.cells}

    def key_extra(self, key: Any) -> tuple[Any, list[Fact]] | None:
        owned = self.owned
        mine = [f.event_id for f in self.cells.get(key) if f.event_id in owned]
        return (mine, []) if mine else None

    def assemble(self, keyed: list[dict[str, Any]], rest: Any | None) -> Any:
        owned = sorted({e for p in keyed for e in p.get("x", ())})
        return {**store_snapshots(keyed, ["cells"]), "owned": owned}


def _order(f: Fact) -> tuple[float, str]:
    return (f.ts, f.event_id)


def _km(a: Fact, b: Fact) -> float:
    return haversine_km(a.lat, a.lon, b.lat, b.lon)
