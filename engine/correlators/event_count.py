"""`event_count`: at least N matching events per key inside one window of event time."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from engine.correlators.base import KeyedEventsCorrelator
from engine.explain import Explanation, duration, said
from engine.facts import Fact
from engine.hits import Hit
from engine.rules import KeyedSelectRule
from engine.state import with_fact


class EventCountRule(KeyedSelectRule):
    """`threshold` or more events matching `select`, with the same key, whose event times lie
    in one span of `window`. Arrival order does not matter: a late event completes a span
    on either side of it."""

    type_name: ClassVar[str] = "event_count"

    threshold: int = Field(ge=1)

    def summary(self) -> str:
        return (
            f"at least {self.threshold} events with the same {self.key.name} "
            f"within {duration(self.window)}"
        )

    def explain(self, ex: Explanation) -> None:
        n = len(ex.evidence)
        least = f"(at least {self.threshold} within {duration(self.window)})"
        ex.condition(
            said(f"{n} events within {duration(ex.span)} {least}", ex.every, f"{n} events {least}")
        )


def first_span(group: list[Fact], fact: Fact, window: float, threshold: int) -> list[Fact] | None:
    """The earliest span `[s, s + window]` holding `fact` and at least `threshold` facts.

    `group` is sorted by (ts, event_id) and holds only facts within `window` of `fact`, so
    every span starting at or before `fact.ts` holds it.
    """
    n = len(group)
    j = 0
    prev_ts: float | None = None
    for i, start in enumerate(group):
        if start.ts > fact.ts:
            break
        if start.ts == prev_ts:
            continue  # the first fact of equal time already gave the widest span
        prev_ts = start.ts
        j = max(j, i)
        end = start.ts + window
        while j < n and group[j].ts <= end:
            j += 1
        if j - i >= threshold:
            return group[i:j]
    return None


class EventCountCorrelator(KeyedEventsCorrelator[EventCountRule]):
    def on_fact(self, fact: Fact, key: str | None, owner: bool, watermark: float) -> list[Hit]:
        if key is None:
            return []
        events = self.events
        if not events.add(key, fact):
            return []  # a redelivery: it was counted already
        held = events.holds(key, fact.event_id)
        hits = []
        hit = self._decide(key, fact, held)
        if hit is not None:
            hits.append(hit)
        # Taken after events it precedes (late): the match decided at each of them, as replay
        # decides it with this event already there.
        me = (fact.ts, fact.event_id)
        for g in events.between(key, fact.ts, fact.ts + self.rule.window):
            if (g.ts, g.event_id) > me:
                hit = self._decide(key, g, True)
                if hit is not None:
                    hits.append(hit)
        return hits

    def _decide(self, key: str, fact: Fact, held: bool) -> Hit | None:
        """The match decided at `fact`: from the facts of the key up to it in (time, id)."""
        rule = self.rule
        w = rule.window
        t, eid = fact.ts, fact.event_id
        before = [
            f
            for f in self.events.near(key, t, w)
            if f.ts < t or (f.ts == t and f.event_id <= eid)
        ]
        group = with_fact(before, fact, held)
        if len(group) < rule.threshold:
            return None
        span = first_span(group, fact, w, rule.threshold)
        if span is None:
            return None
        last = span[-1]
        return Hit(rule.id, tuple(span), key, last.lat, last.lon)
