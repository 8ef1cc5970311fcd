"""`geofence`: a track enters, exits or stays inside an area of responsibility (or the other
country's territory), with a hysteresis buffer in metres and a dwell time.

Geometry is in metres (engine.metric's projection). Each fence is kept twice, prepared: shrunk
by the buffer (a position inside it is clearly in) and grown by it (a position outside it is
clearly out); between the two a track keeps the side it had, so jitter narrower than the
buffer never flaps. An STRtree over the grown fences finds the ones near a position.
Detections have no identity over time: a rule that takes them can only ask `inside`, and
judges each one alone."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Literal

import numpy as np
import shapely
from numpy.typing import NDArray
from pydantic import Field, field_validator, model_validator
from shapely import STRtree
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from engine.areas import default_areas
from engine.border import default_border
from engine.correlators.base import Correlator
from engine.explain import Explanation, duration, said
from engine.facts import Fact
from engine.hits import Hit
from engine.metric import to_metres, to_metres_many
from engine.rules import Duration, KeySpec, RuleBase
from engine.selectors import Selector

OTHER_COUNTRY = "other-country"
"""The `areas:` entry for the territory of the country other than the reporting agency's."""
Transition = Literal["enter", "exit", "inside"]
_REGION = {"north": box(-125.0, 24.0, -85.0, 45.0), "south": box(-125.0, 14.0, -85.0, 34.0)}


class GeofenceRule(RuleBase):
    """Positions of `select`, per `key` (a track), against the fences `areas` names."""

    type_name: ClassVar[str] = "geofence"

    key: KeySpec | None = None
    select: list[Selector] = Field(min_length=1)
    areas: list[str] = Field(
        min_length=1, description="Area ids of the areas file, or `other-country`."
    )
    transition: Transition
    buffer_m: float = Field(ge=0, le=10_000)
    dwell: Duration = Field(ge=0)

    @field_validator("select", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    @field_validator("areas", mode="before")
    @classmethod
    def _one_area(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("areas")
    @classmethod
    def _known_areas(cls, v: list[str]) -> list[str]:
        known = default_areas()
        unknown = [a for a in v if a != OTHER_COUNTRY and known.by_id(a) is None]
        if unknown:
            valid = [OTHER_COUNTRY, *(a.id for a in known.areas)]
            raise ValueError(f"unknown area {unknown[0]!r}; valid options are {valid}")
        return v

    @model_validator(mode="after")
    def _detections_only_inside(self) -> GeofenceRule:
        types = {t for s in self.select for t in s.type}
        if "detection" in types and self.transition != "inside":
            raise ValueError(
                "detections have no identity over time: a geofence over detections can only "
                f"ask `inside`, not `{self.transition}`"
            )
        if types - {"detection"} and self.key is None:
            raise ValueError("a geofence over tracks needs a key (e.g. `key: track_id`)")
        return self

    def selectors(self) -> Sequence[Selector]:
        return self.select

    def route_key(self) -> KeySpec | None:
        return self.key

    def summary(self) -> str:
        where = " or ".join(
            "the other country's territory" if a == OTHER_COUNTRY else a for a in self.areas
        )
        verb = {"enter": "enters", "exit": "leaves", "inside": "is inside"}[self.transition]
        return (
            f"a position {verb} {where} by more than {self.buffer_m:.0f} m and stays "
            f"{'out' if self.transition == 'exit' else 'in'} for at least {duration(self.dwell)}"
        )

    def explain(self, ex: Explanation) -> None:
        first, last = ex.hit.evidence[0], ex.hit.evidence[-1]
        ex.condition(
            said(
                f"{self.transition} {ex.hit.reason or 'the fence'}, then "
                f"{duration(last.ts - first.ts)} on that side (at least {duration(self.dwell)})",
                (first.event_id, last.event_id),
                f"{self.transition} and stayed at least {duration(self.dwell)}",
            )
        )
        ex.window_start, ex.window_end = first.ts, last.ts


@dataclass(frozen=True, slots=True)
class Fence:
    """One fence in metres: shrunk and grown by the buffer, prepared; `country` set for the
    other-country fence (it is the territory of that country)."""

    name: str
    inner: BaseGeometry
    outer: BaseGeometry
    country: str | None


def _metric(geom: BaseGeometry) -> BaseGeometry:
    dense = shapely.segmentize(geom, 0.01)
    return shapely.transform(dense, _project)


def _project(lonlat: NDArray[np.float64]) -> NDArray[np.float64]:
    xs, ys = to_metres_many(lonlat[:, 0], lonlat[:, 1])
    return np.column_stack([xs, ys])


@lru_cache(maxsize=64)
def _fences(areas: tuple[str, ...], buffer_m: float, version: str) -> tuple[Fence, ...]:
    border = default_border()
    out = []
    for name in areas:
        if name == OTHER_COUNTRY:
            south = shapely.intersection(border.south_side(), _REGION["south"])
            north = shapely.difference(_REGION["north"], border.south_side())
            for country, geom in ((border.south, south), (border.north, north)):
                out.append(_fence(f"{country} territory", _metric(geom), buffer_m, country))
        else:
            area = default_areas().by_id(name)
            assert area is not None
            out.append(_fence(area.name, _metric(area.geometry), buffer_m, None))
    return tuple(out)


def _fence(name: str, geom: BaseGeometry, buffer_m: float, country: str | None) -> Fence:
    inner, outer = geom.buffer(-buffer_m), geom.buffer(buffer_m)
    shapely.prepare(inner)
    shapely.prepare(outer)
    return Fence(name, inner, outer, country)


class GeofenceCorrelator(Correlator[GeofenceRule]):
    def __init__(self, rule: GeofenceRule) -> None:
        super().__init__(rule)
        self.fences = _fences(tuple(rule.areas), rule.buffer_m, default_areas().version)
        self._tree = STRtree([f.outer for f in self.fences])
        # (key, fence index) -> [side, since (the position that made it so), fired]
        self.sides: dict[tuple[str, int], list[Any]] = {}
        self._facts: dict[str, Fact] = {}
        self._seen: dict[str, float] = {}  # key -> newest position's time

    def _applies(self, fence: Fence, fact: Fact) -> bool:
        return fence.country is None or fence.country != fact.country

    def _side(self, fence: Fence, x: float, y: float) -> str | None:
        """`in` (clearly inside), `out` (clearly outside), or None within the buffer."""
        if shapely.contains_xy(fence.inner, x, y):
            return "in"
        if not shapely.contains_xy(fence.outer, x, y):
            return "out"
        return None

    def on_fact(self, fact: Fact, key: str | None, owner: bool, watermark: float) -> list[Hit]:
        if not owner:
            return []
        rule = self.rule
        x, y = to_metres(fact.lat, fact.lon)
        near = set(int(i) for i in self._tree.query(shapely.Point(x, y)))
        if key is None or fact.event_type == "detection":  # judged alone
            return [
                Hit(rule.id, (fact,), key, fact.lat, fact.lon, reason=f)
                for i, fence in enumerate(self.fences)
                if i in near and self._applies(fence, fact) and self._side(fence, x, y) == "in"
                for f in (fence.name,)
            ]
        if fact.ts < self._seen.get(key, float("-inf")):
            return []  # a track's positions are taken in event-time order; older ones are late
        self._seen[key] = fact.ts
        self.changed.add(key)
        hits = []
        for i, fence in enumerate(self.fences):
            if not self._applies(fence, fact):
                continue
            side = self._side(fence, x, y) if i in near else "out"
            state = self.sides.get((key, i))
            if state is None:
                # A first position only sets the side; `inside` counts from it if in.
                if side is not None:
                    start = fact if side == "in" and rule.transition == "inside" else None
                    self.sides[(key, i)] = [side, start, False]
                    self._keep(start)
                continue
            if side is not None and side != state[0]:  # crossed the buffer: a transition
                if self._wanted(state[0], side):
                    state[:] = [side, fact, False]
                    self._keep(fact)
                else:
                    state[:] = [side, None, False]
                continue
            since = state[1]
            if since is not None and not state[2] and fact.ts - since.ts >= rule.dwell:
                state[2] = True
                self._keep(fact)
                hits.append(Hit(rule.id, (since, fact), key, fact.lat, fact.lon, reason=fence.name))
        return hits

    def _wanted(self, before: str, after: str) -> bool:
        t = self.rule.transition
        if t == "enter" or t == "inside":
            return after == "in"
        return before == "in" and after == "out"

    def _keep(self, fact: Fact | None) -> None:
        if fact is not None:
            self._facts[fact.event_id] = fact

    def expire(self, watermark: float) -> None:
        horizon = watermark - self.rule.horizon
        for k in [k for k, ts in self._seen.items() if ts < horizon]:
            del self._seen[k]
            self.changed.add(k)
            for i in range(len(self.fences)):
                self.sides.pop((k, i), None)
        used = {s[1].event_id for s in self.sides.values() if s[1] is not None}
        self._facts = {i: f for i, f in self._facts.items() if i in used}

    def size(self) -> tuple[int, int]:
        return (len(self._seen), len(self.sides))

    def evictions(self) -> int:
        return 0

    def facts(self) -> Iterator[Fact]:
        yield from self._facts.values()

    def snapshot(self) -> Any:
        return {
            "sides": [
                [k, i, s[0], None if s[1] is None else s[1].event_id, s[2]]
                for (k, i), s in self.sides.items()
            ],
            "seen": self._seen,
        }

    def restore(self, data: Any, facts: dict[str, Fact]) -> None:
        self.sides = {
            (k, i): [side, None if since is None else facts[since], fired]
            for k, i, side, since, fired in data["sides"]
        }
        self._seen = dict(data["seen"])
        self._facts = {s[1].event_id: s[1] for s in self.sides.values() if s[1] is not None}

    def extra_keys(self) -> Iterable[Any]:
        return self._seen

    def key_extra(self, key: Any) -> tuple[Any, list[Fact]] | None:
        seen = self._seen.get(key)
        if seen is None:
            return None
        sides = [(i, self.sides.get((key, i))) for i in range(len(self.fences))]
        held = [[i, s[0], None if s[1] is None else s[1].event_id, s[2]] for i, s in sides if s]
        facts = [s[1] for _, s in sides if s and s[1] is not None]
        return {"seen": seen, "sides": held}, facts

    def assemble(self, keyed: list[dict[str, Any]], rest: Any | None) -> Any:
        return {
            "sides": [[p["k"], *side] for p in keyed for side in p["x"]["sides"]],
            "seen": {p["k"]: p["x"]["seen"] for p in keyed},
        }
