"""`watchlist`: an event whose key is on a list built from another stream, with expiry."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from pydantic import Field, field_validator

from engine.correlators.base import Correlator
from engine.facts import Fact
from engine.hits import Hit
from engine.rules import KeySpec, RuleBase
from engine.selectors import Selector
from engine.state import KeyedFacts


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


class WatchlistCorrelator(Correlator[WatchlistRule]):
    def __init__(self, rule: WatchlistRule) -> None:
        super().__init__(rule)
        self.entries: KeyedFacts[str] = KeyedFacts(rule.max_keys, rule.max_per_key)
        self.sightings: KeyedFacts[str] = KeyedFacts(rule.max_keys, rule.max_per_key)

    def on_fact(self, fact: Fact, key: str | None, owner: bool, watermark: float) -> list[Hit]:
        if key is None:
            return []
        rule = self.rule
        ttl = rule.window
        hits: list[Hit] = []
        if rule.list_.matches(fact):
            self.entries.add(key, fact)
            for s in self.sightings.get(key):
                if fact.ts <= s.ts <= fact.ts + ttl:
                    hits.append(Hit(rule.id, (fact, s), key, s.lat, s.lon))
        if any(m.matches(fact) for m in rule.match):
            self.sightings.add(key, fact)
            live = [e for e in self.entries.get(key) if e.ts <= fact.ts <= e.ts + ttl]
            if live:
                live.sort(key=lambda e: e.ts)
                ev = (*live[-rule.max_evidence_entries :], fact)
                hits.append(Hit(rule.id, ev, key, fact.lat, fact.lon))
        return hits

    def expire(self, watermark: float) -> None:
        self.entries.expire(watermark - self.rule.horizon)
        self.sightings.expire(watermark - self.rule.allowed_lateness)

    def size(self) -> tuple[int, int]:
        return (
            len({*self.entries._data, *self.sightings._data}),
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
