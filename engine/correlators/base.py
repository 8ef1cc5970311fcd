"""What every correlator does: take facts under a key, report hits, expire and snapshot state."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from engine.facts import Fact
from engine.hits import Hit
from engine.rules import RuleBase
from engine.state import KeyedFacts

R = TypeVar("R", bound=RuleBase)


class Correlator(ABC, Generic[R]):
    """The incremental evaluator of one rule, owning its bounded state."""

    def __init__(self, rule: R) -> None:
        self.rule = rule

    @abstractmethod
    def on_fact(self, fact: Fact, key: str | None, owner: bool, watermark: float) -> list[Hit]:
        """Take a fact the rule's selectors match; `owner` is False for a geographic halo copy."""

    def on_late(self, fact: Fact, key: str | None, watermark: float) -> list[Hit]:
        """A fact too late for the rule (beyond lateness and corrections): report any alert
        it would refute (the engine counts it; the alert stands). Not taken into state."""
        return []

    def on_watermark(self, watermark: float) -> list[Hit]:
        """Event time has reached `watermark`: fire decisions that waited for it."""
        return []

    @abstractmethod
    def expire(self, watermark: float) -> None:
        """Drop state that no allowed event can still use."""

    @abstractmethod
    def size(self) -> tuple[int, int]:
        """(keys, partial matches) held."""

    @abstractmethod
    def evictions(self) -> int:
        """How many facts were evicted by the caps so far."""

    @abstractmethod
    def facts(self) -> Iterator[Fact]:
        """Every fact the state refers to (for snapshots)."""

    @abstractmethod
    def snapshot(self) -> Any:
        """JSON-able state, referring to facts by event id."""

    @abstractmethod
    def restore(self, data: Any, facts: dict[str, Fact]) -> None:
        """Load what `snapshot` returned."""


class KeyedEventsCorrelator(Correlator[R]):
    """A correlator whose whole state is one `KeyedFacts` store of the facts per key."""

    def __init__(self, rule: R) -> None:
        super().__init__(rule)
        self.events: KeyedFacts[str] = KeyedFacts(rule.max_keys, rule.max_per_key)

    def expire(self, watermark: float) -> None:
        self.events.expire(watermark - self.rule.horizon)

    def size(self) -> tuple[int, int]:
        return (self.events.keys(), self.events.items_count())

    def evictions(self) -> int:
        return self.events.evictions

    def facts(self) -> Iterator[Fact]:
        return self.events.facts()

    def snapshot(self) -> Any:
        return {"events": self.events.snapshot()}

    def restore(self, data: Any, facts: dict[str, Fact]) -> None:
        self.events.restore(data["events"], facts)
