"""What every correlator does: take facts under a key, report hits, expire and snapshot state."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

import orjson

from engine.facts import Fact
from engine.hits import Hit
from engine.rules import RuleBase
from engine.state import KeyedFacts, key_out

Part = tuple[str, Any | None, list[Fact]]
"""One entry of a per-key changelog: its name, its value (None: gone) and the facts it
refers to by event id."""

R = TypeVar("R", bound=RuleBase)


class _Untracked(set[Any]):
    """Where changes go while nothing tracks them."""

    def add(self, element: Any) -> None:
        pass


_NOT_TRACKED: set[Any] = _Untracked()


class Correlator(ABC, Generic[R]):
    """The incremental evaluator of one rule, owning its bounded state."""

    def __init__(self, rule: R) -> None:
        self.rule = rule
        self.changed: set[Any] = _NOT_TRACKED
        """With `track`: the keys whose state changed since `take_changes`."""
        self.rest_changed = False
        """With `track`: whether the state not kept per key (`rest`) changed."""
        self.tracking = False

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

    # -- a per-key changelog ---------------------------------------------------------------
    # The state is written as one part per key (what `stores` and `key_extra` hold for it)
    # and one part for the rest; `assemble` turns the parts back into what `snapshot`
    # returns, so that `restore` reads both.

    def track(self) -> None:
        """Note from now on which keys change, for `take_changes`."""
        self.tracking = True
        self.changed = set()
        for store in self.keyed_stores().values():
            store.track(self.changed)

    def keyed_stores(self) -> dict[str, KeyedFacts[Any]]:
        """The state kept per key in `KeyedFacts`, by name (the stores share their keys)."""
        return {}

    def extra_keys(self) -> Iterable[Any]:
        """Keys with state besides the stores' (`key_extra`)."""
        return ()

    def key_extra(self, key: Any) -> tuple[Any, list[Fact]] | None:
        """A key's state besides the stores', and the facts it refers to; None if none."""
        return None

    def rest(self) -> tuple[Any, list[Fact]] | None:
        """The state not kept per key, and the facts it refers to; None if none. A type
        that keeps no changelog of its own (no `assemble`) gives its whole `snapshot`."""
        if self._whole():
            return self.snapshot(), list(self.facts())
        return None

    def _whole(self) -> bool:
        return type(self).assemble is Correlator.assemble

    def take_changes(self, full: bool = False) -> Iterator[Part]:
        """The parts changed since the last call (`full`: every part there is)."""
        stores = self.keyed_stores()
        if full:
            keys: set[Any] = set(self.extra_keys())
            for store in stores.values():
                keys.update(store.key_view())
        else:
            keys = set(self.changed)
        self.changed.clear()
        for key in keys:
            held: dict[str, Any] = {}
            facts: list[Fact] = []
            for name, store in stores.items():
                part = store.part(key)
                if part is not None:
                    held[name] = part
                    facts.extend(store.get(key))
            extra = self.key_extra(key)
            name = orjson.dumps(key_out(key)).decode()
            if not held and extra is None:
                yield name, None, []
                continue
            value: dict[str, Any] = {"k": key_out(key), "s": held}
            if extra is not None:
                value["x"] = extra[0]
                facts.extend(extra[1])
            yield name, value, facts
        if full or self.rest_changed or self._whole():
            self.rest_changed = False
            rest = self.rest()
            if rest is not None:
                yield "*", rest[0], rest[1]
            elif not full:
                yield "*", None, []

    def assemble(self, keyed: list[dict[str, Any]], rest: Any | None) -> Any:
        """What `snapshot` returns, from the values of the parts `take_changes` gave (None:
        nothing to restore). Without one of its own, a type's state is written whole, as
        one part, at every snapshot: correct, at a cost that follows its state."""
        return rest


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

    def keyed_stores(self) -> dict[str, KeyedFacts[Any]]:
        return {"events": self.events}

    def assemble(self, keyed: list[dict[str, Any]], rest: Any | None) -> Any:
        return store_snapshots(keyed, ["events"])


def store_snapshots(keyed: list[dict[str, Any]], names: Iterable[str]) -> dict[str, Any]:
    """Each store's `KeyedFacts.snapshot`, from per-key parts."""
    return {
        n: KeyedFacts.from_parts([(p["k"], p["s"][n]) for p in keyed if n in p["s"]])
        for n in names
    }
