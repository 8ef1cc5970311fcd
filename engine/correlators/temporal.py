"""`temporal`: one event of every kind per key inside one window, in any order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from pydantic import field_validator

from engine.correlators.base import Correlator, store_snapshots
from engine.explain import Explanation, at_most, duration, said
from engine.facts import Fact
from engine.hits import Hit
from engine.rules import KeySpec, Role, RuleBase
from engine.selectors import Selector
from engine.state import KeyedFacts

MAX_KINDS = 6


class TemporalRule(RuleBase):
    """An event of each of `kinds`, all with the same key and event times at most `window`
    apart (max - min), whatever the order they happen or arrive in. Each fact fills at
    most one kind of a combination."""

    type_name: ClassVar[str] = "temporal"

    key: KeySpec
    kinds: dict[str, Selector]

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, v: dict[str, Selector]) -> dict[str, Selector]:
        if len(v) < 2:
            raise ValueError(f"a temporal rule needs at least 2 kinds, got {len(v)}: {sorted(v)}")
        if len(v) > MAX_KINDS:
            raise ValueError(f"a temporal rule takes at most {MAX_KINDS} kinds, got {len(v)}")
        return v

    def selectors(self) -> Sequence[Selector]:
        return list(self.kinds.values())

    def route_key(self) -> KeySpec | None:
        return self.key

    def roles(self) -> list[Role]:
        return [Role(name, [sel]) for name, sel in self.kinds.items()]

    def summary(self) -> str:
        return (
            f"one event of each kind with the same {self.key.name}, all within "
            f"{duration(self.window)}"
        )

    def explain(self, ex: Explanation) -> None:
        kinds = ", ".join(self.kinds)
        ex.condition(
            said(
                f"one event of each of {kinds}, spanning {duration(ex.span)} "
                f"{at_most(self.window)}",
                ex.every,
                f"one event of each of {kinds} within {duration(self.window)}",
            )
        )


def _order(f: Fact) -> tuple[float, str]:
    return (f.ts, f.event_id)


class TemporalCorrelator(Correlator[TemporalRule]):
    def __init__(self, rule: TemporalRule) -> None:
        super().__init__(rule)
        self.names = sorted(rule.kinds)
        self._kinds = [(n, rule.kinds[n].matcher) for n in self.names]
        self.by_kind: dict[str, KeyedFacts[str]] = {
            n: KeyedFacts(rule.max_keys, rule.max_per_key) for n in self.names
        }

    def on_fact(self, fact: Fact, key: str | None, owner: bool, watermark: float) -> list[Hit]:
        if key is None:
            return []
        rule = self.rule
        roles = [n for n, matches in self._kinds if matches(fact)]
        fresh = False
        for n in roles:
            if self.by_kind[n].add(key, fact):
                fresh = True
        if not fresh:
            return []  # no kind it fills, or a redelivery
        best: tuple[tuple[float, float, tuple[tuple[float, str], ...]], list[Fact]] | None = None
        for role in roles:
            combo = self._combination(fact, key, role)
            if combo is None:
                continue
            cost = self._cost(fact, combo)
            if best is None or cost < best[0]:
                best = (cost, combo)
        if best is None:
            return []
        ev = sorted([fact, *best[1]], key=_order)
        last = ev[-1]
        return [Hit(rule.id, tuple(ev), key, last.lat, last.lon)]

    @staticmethod
    def _cost(fact: Fact, combo: list[Fact]) -> tuple[float, float, tuple[tuple[float, str], ...]]:
        d = [abs(f.ts - fact.ts) for f in combo]
        return (max(d), sum(d), tuple(sorted(_order(f) for f in combo)))

    def _combination(self, fact: Fact, key: str, role: str) -> list[Fact] | None:
        """One fact per other kind, closest in time to `fact`, all within one window."""
        w = self.rule.window
        others = [n for n in self.names if n != role]
        cands: list[list[Fact]] = []
        for n in others:
            c = [f for f in self.by_kind[n].near(key, fact.ts, w) if f.event_id != fact.event_id]
            if not c:
                return None
            c.sort(key=lambda f: (abs(f.ts - fact.ts), f.ts, f.event_id))
            cands.append(c)
        # The closest fact of each kind is the best choice whenever it fits in one window.
        combo = _assign(cands)
        if combo is not None and self._fits(fact, combo):
            return combo
        # Otherwise try every window [s, s + w] holding the fact, s the earliest event time.
        starts = sorted({fact.ts, *(f.ts for c in cands for f in c if f.ts < fact.ts)})
        best: list[Fact] | None = None
        best_cost: tuple[float, float, tuple[tuple[float, str], ...]] | None = None
        for s in starts:
            inside = [[f for f in c if s <= f.ts <= s + w] for c in cands]
            if any(not c for c in inside):
                continue
            combo = _assign(inside)
            if combo is None:
                continue
            cost = self._cost(fact, combo)
            if best_cost is None or cost < best_cost:
                best, best_cost = combo, cost
        return best

    def _fits(self, fact: Fact, combo: list[Fact]) -> bool:
        ts = [fact.ts, *(f.ts for f in combo)]
        return max(ts) - min(ts) <= self.rule.window

    def expire(self, watermark: float) -> None:
        for store in self.by_kind.values():
            store.expire(watermark - self.rule.horizon)

    def size(self) -> tuple[int, int]:
        keys: set[str] = set()
        for store in self.by_kind.values():
            keys.update(store.key_view())
        return (len(keys), sum(s.items_count() for s in self.by_kind.values()))

    def evictions(self) -> int:
        return sum(s.evictions for s in self.by_kind.values())

    def facts(self) -> Iterator[Fact]:
        for store in self.by_kind.values():
            yield from store.facts()

    def snapshot(self) -> Any:
        return {"kinds": {n: s.snapshot() for n, s in self.by_kind.items()}}

    def restore(self, data: Any, facts: dict[str, Fact]) -> None:
        for n, store in self.by_kind.items():
            store.restore(data["kinds"].get(n, []), facts)

    def keyed_stores(self) -> dict[str, KeyedFacts[Any]]:
        return dict(self.by_kind)

    def assemble(self, keyed: list[dict[str, Any]], rest: Any | None) -> Any:
        return {"kinds": store_snapshots(keyed, self.names)}


def _assign(cands: list[list[Fact]]) -> list[Fact] | None:
    """Distinct facts, one from each candidate list (each sorted best first), or None.

    A fact may match several kinds; with k kinds, one of the k best candidates of a kind is
    always free, so looking at those is enough to find an assignment if there is one.
    """
    k = len(cands)
    short = [c[:k] for c in cands]
    chosen: list[Fact] = []
    used: set[str] = set()

    def go(i: int) -> bool:
        if i == k:
            return True
        for f in short[i]:
            if f.event_id in used:
                continue
            used.add(f.event_id)
            chosen.append(f)
            if go(i + 1):
                return True
            chosen.pop()
            used.discard(f.event_id)
        return False

    return list(chosen) if go(0) else None
