"""`value_count`: at least N distinct values of a field per key inside one window."""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

from pydantic import Field

from engine.correlators.base import KeyedEventsCorrelator
from engine.explain import Explanation, at_most, duration, said
from engine.facts import Fact
from engine.hits import Hit
from engine.rules import KeyedSelectRule
from engine.state import with_fact


class ValueCountRule(KeyedSelectRule):
    """Events matching `select` with the same key whose `field` takes `threshold` or more
    distinct values inside one span of `window` (e.g. one serial reported from two countries).
    Events without a value of `field` are ignored."""

    type_name: ClassVar[str] = "value_count"

    field: str = Field(min_length=1)
    threshold: int = Field(ge=1)

    def summary(self) -> str:
        return (
            f"at least {self.threshold} different {self.field} values among events with the "
            f"same {self.key.name} within {duration(self.window)}"
        )

    def explain(self, ex: Explanation) -> None:
        name = self.field
        values = sorted({str(f.get(name)) for f in ex.evidence})
        least = f"(at least {self.threshold})"
        ex.condition(
            said(
                f"{len(values)} different {name} values: {', '.join(values)} {least} within "
                f"{duration(ex.span)} {at_most(self.window)}",
                ex.every,
                f"{len(values)} different {name} values {least} within {duration(self.window)}",
                needs=name,
            )
        )
        for f in ex.evidence:
            ex.met(f, said(f"{name} is {f.get(name)}", (f.event_id,), f"has a {name}", needs=name))


def _value(fact: Fact, field: str) -> str | None:
    v = fact.get(field)
    return None if v is None or v == "" else str(v)


class ValueCountCorrelator(KeyedEventsCorrelator[ValueCountRule]):
    def on_fact(self, fact: Fact, key: str | None, owner: bool, watermark: float) -> list[Hit]:
        rule = self.rule
        if key is None or _value(fact, rule.field) is None:
            return []
        events = self.events
        if not events.add(key, fact):
            return []  # a redelivery: it was counted already
        group = with_fact(
            events.near(key, fact.ts, rule.window), fact, events.holds(key, fact.event_id)
        )
        span = self._first_span(group, fact)
        if span is None:
            return []
        earliest: dict[str, Fact] = {}
        for f in span:
            earliest.setdefault(_value(f, rule.field) or "", f)
        evidence = {f.event_id: f for f in (*earliest.values(), fact)}
        ev = sorted(evidence.values(), key=lambda f: (f.ts, f.event_id))
        last = ev[-1]
        return [Hit(rule.id, tuple(ev), key, last.lat, last.lon)]

    def _first_span(self, group: list[Fact], fact: Fact) -> list[Fact] | None:
        """The earliest span `[s, s + window]` holding `fact` with enough distinct values."""
        rule = self.rule
        values = [_value(f, rule.field) or "" for f in group]
        if len(set(values)) < rule.threshold:
            return None
        counts: Counter[str] = Counter()
        n = len(group)
        i0 = j = 0
        prev_ts: float | None = None
        for i, start in enumerate(group):
            if start.ts > fact.ts:
                break
            if start.ts == prev_ts:
                continue
            prev_ts = start.ts
            for k in range(i0, i):  # drop what the previous span held before this start
                counts[values[k]] -= 1
                if counts[values[k]] == 0:
                    del counts[values[k]]
            i0 = i
            end = start.ts + rule.window
            while j < n and group[j].ts <= end:
                counts[values[j]] += 1
                j += 1
            if len(counts) >= rule.threshold:
                return group[i:j]
        return None
