"""Bounded per-key state: caps on keys and items, oldest evicted first, and counted."""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

from engine.facts import Fact

K = TypeVar("K", bound=Hashable)


class KeyedFacts(Generic[K]):
    """Facts per key, in arrival order, with caps; the least recently touched key goes first."""

    __slots__ = ("_data", "evictions", "max_keys", "max_per_key")

    def __init__(self, max_keys: int, max_per_key: int) -> None:
        self._data: dict[K, list[Fact]] = {}
        self.max_keys = max_keys
        self.max_per_key = max_per_key
        self.evictions = 0

    def get(self, key: K) -> list[Fact]:
        """The facts held for a key (empty if none)."""
        return self._data.get(key, [])

    def add(self, key: K, fact: Fact, *, unique: bool = True) -> bool:
        """Hold a fact under a key, evicting the oldest state past the caps.

        With `unique`, a fact already held under the key (same event id) is not added twice;
        returns whether it was added.
        """
        data = self._data
        if unique:
            held = data.get(key)
            if held is not None and any(f.event_id == fact.event_id for f in held):
                return False
        items = data.pop(key, None)
        if items is None:
            items = []
            if len(data) >= self.max_keys:
                oldest = next(iter(data))
                self.evictions += len(data.pop(oldest))
        items.append(fact)
        if len(items) > self.max_per_key:
            del items[0]
            self.evictions += 1
        data[key] = items
        return True

    def expire(self, before_ts: float) -> None:
        """Drop every fact with event time before `before_ts`."""
        data = self._data
        for key in list(data):
            items = data[key]
            kept = [f for f in items if f.ts >= before_ts]
            if not kept:
                del data[key]
            elif len(kept) != len(items):
                data[key] = kept

    def keys(self) -> int:
        return len(self._data)

    def items_count(self) -> int:
        return sum(len(v) for v in self._data.values())

    def facts(self) -> Iterator[Fact]:
        for items in self._data.values():
            yield from items

    def snapshot(self) -> list[list[object]]:
        """[[key, [event ids]], ...] in eviction order."""
        return [[_key_out(k), [f.event_id for f in v]] for k, v in self._data.items()]

    def restore(self, data: list[list[object]], facts: dict[str, Fact]) -> None:
        self._data.clear()
        for key, ids in data:
            items = [facts[i] for i in ids if i in facts]  # type: ignore[attr-defined]
            if items:
                self._data[_key_in(key)] = items  # type: ignore[index]


def _key_out(k: object) -> object:
    return list(k) if isinstance(k, tuple) else k


def _key_in(k: object) -> object:
    return tuple(k) if isinstance(k, list) else k
