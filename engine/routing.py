"""Co-partitioning: the correlation keys a fact is routed under, and their partitions."""

from __future__ import annotations

import zlib

from engine.engine import Route
from engine.facts import Fact
from engine.geo import Grid
from engine.rules import RuleSet

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

    def routes(self, fact: Fact) -> list[tuple[str, Route]]:
        """[(routing key, route)] for the fact; empty if no rule takes it."""
        out: list[tuple[str, Route]] = []
        seen: set[str] = set()
        geo = False
        for rule in self.ruleset.rules_taking(fact):
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
            home = self.grid.cell(fact.lat, fact.lon)
            out.append((f"geo:{home[0]}:{home[1]}", Route("geo", True)))
            if self.halo_km > 0:
                for cell in self.grid.cells_within(fact.lat, fact.lon, self.halo_km):
                    if cell != home and self._touches(cell, fact):
                        out.append((f"geo:{cell[0]}:{cell[1]}", Route("geo", False)))
        return out

    def _touches(self, cell: tuple[int, int], fact: Fact) -> bool:
        from engine.geo import haversine_km

        d = self.grid.cell_deg
        lat = min(max(fact.lat, cell[0] * d), (cell[0] + 1) * d)
        lon = min(max(fact.lon, cell[1] * d), (cell[1] + 1) * d)
        return haversine_km(fact.lat, fact.lon, lat, lon) <= self.halo_km
