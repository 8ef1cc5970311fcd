"""`watchlist`: an event whose key is on a list built from another stream, with expiry."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

from pydantic import Field, field_validator

from engine.correlators.base import Correlator, store_snapshots
from engine.explain import Explanation, at_most, duration, said
from engine.facts import Fact
from engine.hits import Hit
from engine.rules import KeySpec, Role, RuleBase
from engine.selectors import Selector, any_of
from engine.state import KeyedFacts, event_time


class WatchlistRule(RuleBase):
    """`list` events put their key on the list for `window`; a `match` event with a key on it fires.

    Either side may arrive late: an entry published days after a sighting it covers still fires.
    """

    type_name: ClassVar[str] = "watchlist"

    key: KeySpec
    list_: Selector = Field(alias="list")
    match: list[Selector] = Field(min_length=1)
    max_evidence_entries: int = 5

    @field_validator("match", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    def selectors(self) -> Sequence[Selector]:
        return [self.list_, *self.match]

    def route_key(self) -> KeySpec | None:
        return self.key

    def roles(self) -> list[Role]:
        return [Role("list entry", [self.list_]), Role("sighting", self.match)]

    def summary(self) -> str:
        return (
            f"a sighting with the same {self.key.name} as a list entry, within "
            f"{duration(self.window)} after the entry"
        )

    def explain(self, ex: Explanation) -> None:
        w = self.window
        entries = ex.hit.evidence[:-1]  # the correlator's order: the entries, then the sighting
        sighting = ex.hit.evidence[-1]
        newest = max(entries, key=lambda e: e.ts)
        for e in entries:
            ex.met(
                sighting,
                said(
                    f"seen {duration(sighting.ts - e.ts)} after a list entry (entries count "
                    f"for {duration(w)})",
                    (sighting.event_id, e.event_id),
                    f"seen within {duration(w)} after a list entry",
                ),
            )
        ex.condition(
            said(
                f"sighted {duration(sighting.ts - newest.ts)} after the newest list entry "
                f"{at_most(w)}",
                (sighting.event_id, newest.event_id),
                f"sighted within {duration(w)} after a list entry",
            )
        )
        ex.window_start, ex.window_end = min(e.ts for e in entries), sighting.ts


class WatchlistCorrelator(Correlator[WatchlistRule]):
    def __init__(self, rule: WatchlistRule) -> None:
        super().__init__(rule)
        self.entries: KeyedFacts[str] = KeyedFacts(rule.max_keys, rule.max_per_key)
        self.sightings: KeyedFacts[str] = KeyedFacts(rule.max_keys, rule.max_per_key)
        self._lists = rule.list_.matcher
        self._sighted_by = any_of(rule.match)

    def on_fact(self, fact: Fact, key: str | None, owner: bool, watermark: float) -> list[Hit]:
        if key is None:
            return []
        rule = self.rule
        ttl = rule.window
        hits: list[Hit] = []
        t = fact.ts
        if self._lists(fact):
            self.entries.add(key, fact)
            # sightings s with t <= s.ts <= t + ttl, in the order they came
            seen = sorted(self.sightings.between(key, t, t + ttl), key=self._sighted(key))
            hits.extend(Hit(rule.id, (fact, s), key, s.lat, s.lon) for s in seen)
        if self._sighted_by(fact):
            self.sightings.add(key, fact)
            entries = self.entries.get(key)
            # entries e with e.ts <= t <= e.ts + ttl, the latest last (equal times as they came)
            j = bisect_right(entries, t, key=event_time)
            i = bisect_left(entries, t - ttl, 0, j, key=event_time)
            while i > 0 and t <= entries[i - 1].ts + ttl:  # t - ttl is rounded: settle exactly
                i -= 1
            while i < j and not t <= entries[i].ts + ttl:
                i += 1
            if i < j:
                arrival = self.entries.arrival
                live = sorted(entries[i:j], key=lambda e: (e.ts, arrival(key, e)))
                ev = (*live[-rule.max_evidence_entries :], fact)
                hits.append(Hit(rule.id, ev, key, fact.lat, fact.lon))
        return hits

    def _sighted(self, key: str) -> Callable[[Fact], int]:
        arrival = self.sightings.arrival
        return lambda s: arrival(key, s)

    def expire(self, watermark: float) -> None:
        self.entries.expire(watermark - self.rule.horizon)
        self.sightings.expire(watermark - self.rule.allowed_lateness)

    def size(self) -> tuple[int, int]:
        return (
            len(self.entries.key_view() | self.sightings.key_view()),
            self.entries.items_count() + self.sightings.items_count(),
        )

    def evictions(self) -> int:
        return self.entries.evictions + self.sightings.evictions

    def facts(self) -> Iterator[Fact]:
        yield from self.entries.facts()
        yield from self.sightings.facts()

    def snapshot(self) -> Any:
        return {"entries": self.entries.snapshot(), "sightings": self.sightings.snapshot()}

    def restore(self, data: Any, facts: dict[str, Fact]) -> None:
        self.entries.restore(data["entries"], facts)
        self.sightings.restore(data["sightings"], facts)

    def keyed_stores(self) -> dict[str, KeyedFacts[Any]]:
        return {"entries": self.entries, "sightings": self.sightings}

    def assemble(self, keyed: list[dict[str, Any]], rest: Any | None) -> Any:
        return store_snapshots(keyed, ["entries", "sightings"])
