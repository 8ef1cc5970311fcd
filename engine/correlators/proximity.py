"""`proximity`: events within R km and T of each other, found through a grid index."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from pydantic import Field, model_validator

from engine.correlators.base import Correlator
from engine.facts import Fact
from engine.geo import Grid, haversine_km
from engine.hits import Hit
from engine.rules import RuleBase
from engine.selectors import Selector
from engine.state import KeyedFacts


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

    def needed(self) -> dict[str, int]:
        return {name: self.min_count.get(name, 1) for name in self.select}


class ProximityCorrelator(Correlator[ProximityRule]):
    def __init__(self, rule: ProximityRule) -> None:
        super().__init__(rule)
        self.grid = Grid(rule.radius_km)
        self.cells: KeyedFacts[tuple[int, int]] = KeyedFacts(rule.max_keys, rule.max_per_key)
        self.kinds: dict[str, tuple[str, ...]] = {}
        self.held: set[str] = set()
        self.needed = rule.needed()

    def _kinds_of(self, fact: Fact) -> tuple[str, ...]:
        k = self.kinds.get(fact.event_id)
        if k is None:
            k = self.kinds[fact.event_id] = tuple(
                n for n, s in self.rule.select.items() if s.matches(fact)
            )
        return k

    def on_fact(self, fact: Fact, key: str | None, owner: bool, watermark: float) -> list[Hit]:
        rule = self.rule
        kinds = self._kinds_of(fact)
        if not kinds:
            return []
        if fact.event_id not in self.held:
            self.held.add(fact.event_id)
            self.cells.add(self.grid.cell(fact.lat, fact.lon), fact, unique=False)
        if not owner:
            return []
        w = rule.window
        near: list[Fact] = []
        for cell in self.grid.cells_within(fact.lat, fact.lon, rule.radius_km):
            for f in self.cells.get(cell):
                if (
                    f is not fact
                    and abs(f.ts - fact.ts) <= w
                    and f.event_id != fact.event_id
                    and haversine_km(fact.lat, fact.lon, f.lat, f.lon) <= rule.radius_km
                ):
                    near.append(f)
        if len(near) + 1 < sum(self.needed.values()):
            return []
        near.sort(key=lambda f: (f.ts, f.event_id))
        near = near[-rule.max_candidates :]
        group = sorted([*near, fact], key=lambda f: (f.ts, f.event_id))
        for i, start in enumerate(group):
            if start.ts > fact.ts:
                break
            if fact.ts - start.ts > w:
                continue
            span = [f for f in group[i:] if f.ts - start.ts <= w]
            if self._satisfied(span):
                lat = sum(f.lat for f in span) / len(span)
                lon = sum(f.lon for f in span) / len(span)
                return [Hit(rule.id, tuple(span), None, lat, lon)]
        return []

    def _satisfied(self, span: list[Fact]) -> bool:
        counts = dict.fromkeys(self.needed, 0)
        for f in span:
            for k in self._kinds_of(f):
                counts[k] += 1
        return all(counts[k] >= n for k, n in self.needed.items())

    def expire(self, watermark: float) -> None:
        self.cells.expire(watermark - self.rule.horizon)
        if len(self.held) != self.cells.items_count():
            self.held = {f.event_id for f in self.cells.facts()}
            self.kinds = {k: v for k, v in self.kinds.items() if k in self.held}

    def size(self) -> tuple[int, int]:
        return (self.cells.keys(), self.cells.items_count())

    def evictions(self) -> int:
        return self.cells.evictions

    def facts(self) -> Iterator[Fact]:
        return self.cells.facts()

    def snapshot(self) -> Any:
        return {"cells": self.cells.snapshot()}

    def restore(self, data: Any, facts: dict[str, Fact]) -> None:
        self.cells.restore(data["cells"], facts)
        self.held = {f.event_id for f in self.cells.facts()}
