"""`incursion`: a patrol unit of one country deeper than a set distance inside the other's
territory for a dwell time, with no active authorization of the host covering the unit, the
place and the time. A permit that arrives later and covers an incursion already reported
withdraws it (a `Hit` with `refuted_by`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import shapely
from pydantic import Field

from engine.correlators.base import Correlator
from engine.explain import Explanation, duration, said
from engine.facts import Fact
from engine.geo import haversine_km
from engine.hits import Hit
from engine.rules import Duration, KeySpec, Role, RuleBase
from engine.selectors import Selector


class IncursionRule(RuleBase):
    """`patrol` positions (tracks with `patrol_unit`) and `authorization` events, one key for
    all (`own_forces`): few own-force units, so one partition holds them."""

    type_name: ClassVar[str] = "incursion"

    key: KeySpec
    patrol: Selector
    authorization: Selector
    min_depth_m: float = Field(gt=0, le=100_000)
    dwell: Duration = Field(ge=0)
    retroactive: Duration = Field(
        ge=0, description="How long after a position a permit may be issued and still cover it."
    )

    def selectors(self) -> Sequence[Selector]:
        return [self.patrol, self.authorization]

    def route_key(self) -> KeySpec | None:
        return self.key

    def roles(self) -> list[Role]:
        return [Role("patrol position", [self.patrol]), Role("authorization", [self.authorization])]

    def summary(self) -> str:
        return (
            f"a patrol unit more than {self.min_depth_m:.0f} m inside the other country's "
            f"territory for at least {duration(self.dwell)}, with no active authorization of "
            "the host covering the unit, the place and the time"
        )

    def explain(self, ex: Explanation) -> None:
        first, reach = ex.hit.evidence[0], ex.hit.evidence[-1]
        for f in (first, reach):
            ex.met(
                f,
                said(
                    f"{depth_m(f):.0f} m inside {f.get('territory')} territory (more than "
                    f"{self.min_depth_m:.0f} m)",
                    (f.event_id,),
                    f"more than {self.min_depth_m:.0f} m inside the other country",
                ),
            )
        ex.condition(
            said(
                f"inside for {duration(reach.ts - first.ts)} (at least {duration(self.dwell)})",
                (first.event_id, reach.event_id),
                f"inside for at least {duration(self.dwell)}",
            )
        )
        ex.condition(said("no active authorization covers the unit, the place and the time", ()))
        ex.window_start, ex.window_end = first.ts, reach.ts


def depth_m(fact: Fact) -> float:
    """How far inside the other country's territory a patrol's position is (0 at home)."""
    if fact.get("territory") == fact.country:
        return 0.0
    return float(fact.get("border_km")) * 1000.0


def _area_holds(grant: dict[str, Any], centre: tuple[float, float], fact: Fact) -> bool:
    area = grant["area"]
    if area.get("radius_m") is not None:
        return haversine_km(centre[0], centre[1], fact.lat, fact.lon) * 1000 <= float(
            area["radius_m"]
        )
    ring = shapely.Polygon([(lon, lat) for lat, lon in area["polygon"]])
    return bool(shapely.contains_xy(ring, fact.lon, fact.lat))


class IncursionCorrelator(Correlator[IncursionRule]):
    def __init__(self, rule: IncursionRule) -> None:
        super().__init__(rule)
        self.positions: dict[str, list[Fact]] = {}  # unit -> positions by event time
        self.grants: dict[tuple[str, str], Fact] = {}  # (issuer, reference) -> grant
        self.revocations: dict[tuple[str, str], Fact] = {}
        self.reported: dict[tuple[str, str], str] = {}  # (first, reach) ids -> unit
        self.withdrawn: set[tuple[str, str]] = set()
        self._facts: dict[str, Fact] = {}
        self._evictions = 0

    # -- taking facts --------------------------------------------------------------------

    def on_fact(self, fact: Fact, key: str | None, owner: bool, watermark: float) -> list[Hit]:
        if key is None:
            return []
        if fact.event_type == "authorization":
            self.rest_changed = True
            ref = (fact.country, str(fact.get("reference")))
            if fact.get("action") == "revoke":
                self.revocations[ref] = fact
                grant = self.grants.get(ref)
                units = list(grant.get("units")) if grant is not None else []
            else:
                self.grants[ref] = fact
                units = list(fact.get("units"))
            self._facts[fact.event_id] = fact
            hits: list[Hit] = []
            for unit in units:
                hits.extend(self._evaluate(unit.strip().upper(), key, fact))
            return hits
        unit = fact.get("patrol_unit")
        if unit is None:
            return []
        track = self.positions.setdefault(unit, [])
        if any(f.event_id == fact.event_id for f in track):
            return []
        track.append(fact)
        self.rest_changed = True
        track.sort(key=lambda f: (f.ts, f.event_id))
        if len(track) > self.rule.max_per_key:
            dropped = track.pop(0)
            self._facts.pop(dropped.event_id, None)
            self._evictions += 1
        self._facts[fact.event_id] = fact
        return self._evaluate(unit, key, None)

    def _episodes(self, unit: str) -> list[tuple[Fact, Fact]]:
        """(first deep position, the one that reached the dwell) per stay inside."""
        rule = self.rule
        out = []
        start: Fact | None = None
        fired = False
        for f in self.positions.get(unit, ()):
            if depth_m(f) <= rule.min_depth_m:
                start, fired = None, False
                continue
            if start is None:
                start = f
            if not fired and f.ts - start.ts >= rule.dwell:
                out.append((start, f))
                fired = True
        return out

    def covering(self, unit: str, fact: Fact) -> Fact | None:
        """An authorization active at the position's time that covers its unit and place."""
        for ref, grant in self.grants.items():
            doc = grant.doc
            if grant.country != fact.get("territory") or doc["guest_country"] != fact.country:
                continue
            if unit not in {u.strip().upper() for u in doc["units"]}:
                continue
            t = fact.ts
            if not _within(doc, t) or grant.ts - t > self.rule.retroactive:
                continue
            revoked = self.revocations.get(ref)
            if revoked is not None and revoked.ts <= t:
                continue
            if _area_holds(doc, (grant.lat, grant.lon), fact):
                return grant
        return None

    def _evaluate(self, unit: str, key: str, cause: Fact | None) -> list[Hit]:
        hits = []
        for first, reach in self._episodes(unit):
            ids = (first.event_id, reach.event_id)
            permit = self.covering(unit, first) or self.covering(unit, reach)
            covered = permit is not None and all(
                self.covering(unit, f) is not None for f in (first, reach)
            )
            if not covered and ids not in self.reported:
                self.reported[ids] = unit
                hits.append(Hit(self.rule.id, (first, reach), key, reach.lat, reach.lon))
            elif covered and ids in self.reported and ids not in self.withdrawn:
                assert permit is not None
                self.withdrawn.add(ids)
                doc = permit.doc
                hits.append(
                    Hit(
                        self.rule.id,
                        (first, reach),
                        key,
                        reach.lat,
                        reach.lon,
                        refuted_by=(permit,),
                        reason=f"authorization {doc['reference']} of {doc['source']['agency']} "
                        f"({permit.country}), issued {doc['occurred_at']}, covers unit {unit} "
                        f"there from {doc['valid_from']} to {doc['valid_until']}",
                    )
                )
        return hits

    # -- state ---------------------------------------------------------------------------

    def expire(self, watermark: float) -> None:
        horizon = watermark - self.rule.horizon
        held = len(self._facts)
        for unit in list(self.positions):
            kept = [f for f in self.positions[unit] if f.ts >= horizon]
            if len(kept) == len(self.positions[unit]):
                continue
            for f in self.positions[unit]:
                if f.ts < horizon:
                    self._facts.pop(f.event_id, None)
            if kept:
                self.positions[unit] = kept
            else:
                del self.positions[unit]
        for store in (self.grants, self.revocations):
            for ref in list(store):
                f = store[ref]
                until = f.doc.get("valid_until")
                end = f.ts if until is None else max(f.ts, _ts(until))
                if end < horizon:
                    del store[ref]
                    self._facts.pop(f.event_id, None)
        live = set(self._facts)
        for ids in list(self.reported):
            if not set(ids) <= live:
                del self.reported[ids]
                self.withdrawn.discard(ids)
        if len(self._facts) != held:
            self.rest_changed = True

    def size(self) -> tuple[int, int]:
        return (len(self.positions), len(self._facts))

    def evictions(self) -> int:
        return self._evictions

    def facts(self) -> Iterator[Fact]:
        yield from self._facts.values()

    def snapshot(self) -> Any:
        return {
            "positions": {u: [f.event_id for f in fs] for u, fs in self.positions.items()},
            "grants": [f.event_id for f in self.grants.values()],
            "revocations": [f.event_id for f in self.revocations.values()],
            "reported": [[a, b, u] for (a, b), u in self.reported.items()],
            "withdrawn": [list(ids) for ids in self.withdrawn],
        }

    def restore(self, data: Any, facts: dict[str, Fact]) -> None:
        self.positions = {u: [facts[i] for i in ids] for u, ids in data["positions"].items()}
        self.grants = {}
        self.revocations = {}
        for store, ids in ((self.grants, data["grants"]), (self.revocations, data["revocations"])):
            for i in ids:
                f = facts[i]
                store[(f.country, str(f.get("reference")))] = f
        self._facts = {
            f.event_id: f
            for f in [
                *(f for fs in self.positions.values() for f in fs),
                *self.grants.values(),
                *self.revocations.values(),
            ]
        }
        self.reported = {(a, b): u for a, b, u in data["reported"]}
        self.withdrawn = {(a, b) for a, b in data["withdrawn"]}


    # Patrols and authorizations are few: the whole state is one part of a changelog.
    def rest(self) -> tuple[Any, list[Fact]] | None:
        return (self.snapshot(), list(self._facts.values())) if self._facts else None

    def assemble(self, keyed: list[dict[str, Any]], rest: Any | None) -> Any:
        if rest is None:
            return {key: {} if key == "positions" else [] for key in _PARTS}
        return rest


_PARTS = ("positions", "grants", "revocations", "reported", "withdrawn")


def _ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def _within(doc: dict[str, Any], t: float) -> bool:
    return _ts(doc["valid_from"]) <= t <= _ts(doc["valid_until"])
