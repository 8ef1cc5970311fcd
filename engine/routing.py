"""Co-partitioning: the correlation keys a fact is routed under, and their partitions."""

from __future__ import annotations

import math
import zlib
from typing import Any, NamedTuple

from engine.engine import Route
from engine.facts import Fact
from engine.geo import Grid
from engine.rules import RuleBase, RuleSet
from engine.watermarks import InputPartition

REGION_KM = 50.0


def partition_for(key: str, partitions: int) -> int:
    """A stable partition for a routing key (the same in every process and release)."""
    return zlib.crc32(key.encode()) % partitions


class Router:
    """Routes a fact once per entity key kind of the rules that take it, and for geographic
    rules once to the region that holds it plus a copy to each neighbouring region within the
    largest radius, so every region sees all facts near the ones it owns."""

    def __init__(self, ruleset: RuleSet, region_km: float = REGION_KM) -> None:
        self.ruleset = ruleset
        self.grid = Grid(region_km)
        self.halo_km = ruleset.max_radius_km

    def routes(self, fact: Fact, rules: list[RuleBase] | None = None) -> list[tuple[str, Route]]:
        """[(routing key, route)] for the fact; empty if no rule takes it.

        `rules`, if given, are `ruleset.rules_taking(fact)` already computed."""
        out: list[tuple[str, Route]] = []
        seen: set[str] = set()
        geo = False
        for rule in self.ruleset.rules_taking(fact) if rules is None else rules:
            spec = rule.route_key()
            if spec is None:
                geo = True
                continue
            value = spec.value(fact)
            if value is None or spec.name in seen:
                continue
            seen.add(spec.name)
            out.append((f"{spec.name}:{value}", Route(spec.name, True)))
        if geo:
            i, j = self.grid.cell(fact.lat, fact.lon)
            out.append((f"geo:{i}:{j}", Route("geo", True)))
            for di, dj in self._halo(fact, i, j):
                out.append((f"geo:{i + di}:{j + dj}", Route("geo", False)))
        return out

    def _halo(self, fact: Fact, i: int, j: int) -> list[tuple[int, int]]:
        """Neighbouring regions within the halo (conservatively: a corner region is included
        whenever both its edges are near)."""
        if self.halo_km <= 0:
            return []
        d = self.grid.cell_deg
        margin_i = self.halo_km / self.grid.cell_km
        margin_j = margin_i / max(0.01, math.cos(math.radians(abs(fact.lat))))
        fi = fact.lat / d - i
        fj = fact.lon / d - j
        dis = [0] + ([-1] if fi < margin_i else []) + ([1] if fi > 1 - margin_i else [])
        djs = [0] + ([-1] if fj < margin_j else []) + ([1] if fj > 1 - margin_j else [])
        return [(a, b) for a in dis for b in djs if a or b]


class Origin(NamedTuple):
    """Where an event was read: its input topic, partition and offset."""

    topic: str
    partition: int
    offset: int

    @property
    def source(self) -> InputPartition:
        """The input partition, a watermark's source."""
        return InputPartition(self.topic, self.partition)


class RoutedItem(NamedTuple):
    """One routed copy of an accepted event, as the correlate stage receives it."""

    route: str
    """The routing key: `<key name>:<value>` or `geo:<i>:<j>` (a 50 km region)."""
    kind: str
    """The key name, or `geo`: which rules the copy is for."""
    owner: bool
    """False for a copy sent to a neighbouring region (it is only there to be found)."""
    primary: bool
    """The event's first copy: it answers for the event (duplicates, late)."""
    doc: dict[str, Any]
    ts: float
    ingested_at: float
    origin: Origin

    @property
    def event_id(self) -> str:
        return str(self.doc["event_id"])

    def as_doc(self) -> dict[str, Any]:
        """The copy as a JSON object, field by field (the correlate stage's snapshots)."""
        return {**self._asdict(), "origin": self.origin._asdict()}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> RoutedItem:
        """The copy `as_doc` gave (TypeError if a field is missing or unknown)."""
        return cls(**{**doc, "origin": Origin(**doc["origin"])})


def route_items(
    fact: Fact,
    router: Router,
    rules: list[RuleBase],
    partitions: int,
    ingested_at: float,
    origin: Origin,
) -> list[tuple[int, RoutedItem]]:
    """Every routed copy of an accepted fact, with the partition it goes to."""
    doc = fact.doc
    out = []
    for n, (key, route) in enumerate(router.routes(fact, rules)):
        item = RoutedItem(key, route.kind, route.owner, n == 0, doc, fact.ts, ingested_at, origin)
        out.append((partition_for(key, partitions), item))
    return out
