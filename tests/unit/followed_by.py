"""`followed_by`: a response event per key at most `window` after a trigger event."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from engine.correlators.base import KeyedEventsCorrelator
from engine.explain import Explanation, at_most, duration, said
from engine.facts import Fact
from engine.hits import Hit
from engine.rules import KeySpec, Role, RuleBase
from engine.selectors import Selector


class FollowedByRule(RuleBase):
    """A `response` event with the same key at most `window` after a `trigger` event (in
    arrival order: a response that comes before its trigger is not matched)."""

    type_name: ClassVar[str] = "followed_by"

    key: KeySpec
    trigger: Selector
    response: Selector

    def selectors(self) -> Sequence[Selector]:
        return [self.trigger, self.response]

    def route_key(self) -> KeySpec | None:
        return self.key

    # -- how it explains an alert ----------------------------------------------------------

    def roles(self) -> list[Role]:
        return [Role("trigger", [self.trigger]), Role("response", [self.response])]

    def summary(self) -> str:
        w = duration(self.window)
        return f"a response with the same {self.key.name} within {w} after a trigger"

    def explain(self, ex: Explanation) -> None:
        trigger, response = ex.hit.evidence
        gap = duration(response.ts - trigger.ts)
        both = (response.event_id, trigger.event_id)
        ex.condition(
            said(
                f"response {gap} after the trigger {at_most(self.window)}",
                both,
                f"response within {duration(self.window)} after a trigger",
            )
        )
        ex.met(response, said(f"{gap} after trigger {trigger.event_id}", both, "after a trigger"))


class FollowedByCorrelator(KeyedEventsCorrelator[FollowedByRule]):
    """Holds the triggers per key; a response fires with the latest trigger before it."""

    def on_fact(self, fact: Fact, key: str | None, owner: bool, watermark: float) -> list[Hit]:
        rule = self.rule
        if key is None:
            return []
        if rule.trigger.matches(fact):
            self.events.add(key, fact)
            return []
        earlier = self.events.between(key, fact.ts - rule.window, fact.ts)
        if not earlier:
            return []
        return [Hit(rule.id, (earlier[-1], fact), key, fact.lat, fact.lon)]
