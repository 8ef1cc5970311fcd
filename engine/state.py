"""Bounded per-key state, ordered by event time: caps on keys and facts, counted evictions, and
expiry from the old end through an index, so that no operation scans everything held."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Hashable, Iterator, KeysView, Mapping
from heapq import heapify, heappop, heappush
from operator import attrgetter
from typing import Generic, TypeVar, cast

from engine.facts import Fact

K = TypeVar("K", bound=Hashable)

event_time = attrgetter("ts")
"""The bisect key of a list of facts in event-time order."""


def _order(f: Fact) -> tuple[float, str]:
    return (f.ts, f.event_id)


def insert(facts: list[Fact], fact: Fact) -> int:
    """Insert into a list in (ts, event id) order; returns where. In-order input appends."""
    t = fact.ts
    if not facts or t > facts[-1].ts or (t == facts[-1].ts and fact.event_id >= facts[-1].event_id):
        facts.append(fact)
        return len(facts) - 1
    i = bisect_right(facts, (t, fact.event_id), key=_order)
    facts.insert(i, fact)
    return i


def with_fact(group: list[Fact], fact: Fact, held: bool) -> list[Fact]:
    """`group` (in (ts, event id) order) with `fact` in its place, unless it is `held` there
    already: a fact evicted at once from a full key still counts for its own arrival."""
    if held:
        return group
    out = list(group)
    insert(out, fact)
    return out


def between(facts: list[Fact], lo: float, hi: float) -> list[Fact]:
    """Of facts in event-time order, those with `lo <= ts <= hi`."""
    i = bisect_left(facts, lo, key=event_time)
    return facts[i : bisect_right(facts, hi, i, key=event_time)]


def near_bounds(facts: list[Fact], t: float, w: float) -> tuple[int, int]:
    """Of facts in event-time order, the indexes [i, j) of those with `abs(ts - t) <= w`,
    decided by that very test (t - w and t + w are rounded; the test is monotone in ts)."""
    n = len(facts)
    i = bisect_left(facts, t - w, key=event_time)
    while i > 0 and abs(facts[i - 1].ts - t) <= w:
        i -= 1
    while i < n and abs(facts[i].ts - t) > w:
        i += 1
    j = bisect_right(facts, t + w, i, key=event_time)
    while j < n and abs(facts[j].ts - t) <= w:
        j += 1
    while j > i and abs(facts[j - 1].ts - t) > w:
        j -= 1
    return i, j


class KeyedFacts(Generic[K]):
    """Facts per key in (event time, event id) order, each key's at most once, with caps: past
    `max_keys` the least recently touched key goes, past `max_per_key` a key's oldest fact by
    event time goes, each counted as an eviction.

    Per key there is one list; which ids a key holds and in which order they came are in one
    dict for the whole store, and expiry pops keys from a heap by their oldest event time.
    With `keep_dropped`, the ids of facts that left (evicted or expired) are collected for
    `take_dropped`. Facts are `settle`d as they are taken.
    """

    __slots__ = (
        "_changed",
        "_count",
        "_data",
        "_dropped",
        "_ids",
        "_index",
        "_seq",
        "_touch",
        "evictions",
        "max_keys",
        "max_per_key",
    )

    def __init__(self, max_keys: int, max_per_key: int, *, keep_dropped: bool = False) -> None:
        self._data: dict[K, list[Fact]] = {}
        # (key, event id) -> when it came (a counter): membership and arrival order.
        self._ids: dict[tuple[K, str], int] = {}
        # (a key's oldest event time, or earlier, key); stale entries are skipped.
        self._index: list[tuple[float, K]] = []
        self._seq = 0
        self._count = 0
        self._dropped: list[str] | None = [] if keep_dropped else None
        # With `track`: the keys changed since the caller last took them, and when each key
        # was last touched (its place in eviction order, kept across a changelog).
        self._changed: set[K] | None = None
        self._touch: dict[K, int] = {}
        self.max_keys = max_keys
        self.max_per_key = max_per_key
        self.evictions = 0

    # -- reading ---------------------------------------------------------------------------

    def get(self, key: K) -> list[Fact]:
        """The facts held for a key in (ts, event id) order (empty if none); do not modify."""
        return self._data.get(key) or []

    @property
    def by_key(self) -> Mapping[K, list[Fact]]:
        """Every key's facts in (ts, event id) order (no key maps to an empty list); read only."""
        return self._data

    def holds(self, key: K, event_id: str) -> bool:
        """Whether a fact with this event id is held under the key."""
        return (key, event_id) in self._ids

    def arrival(self, key: K, fact: Fact) -> int:
        """When a held fact came, relative to the others of the store."""
        return self._ids[(key, fact.event_id)]

    def between(self, key: K, lo: float, hi: float) -> list[Fact]:
        """The facts of a key with `lo <= ts <= hi`, in (ts, event id) order."""
        facts = self._data.get(key)
        return between(facts, lo, hi) if facts else []

    def near(self, key: K, t: float, w: float) -> list[Fact]:
        """The facts of a key with `abs(ts - t) <= w`, in (ts, event id) order."""
        facts = self._data.get(key)
        if not facts:
            return []
        i, j = near_bounds(facts, t, w)
        return facts[i:j]

    # -- changing --------------------------------------------------------------------------

    def add(self, key: K, fact: Fact) -> bool:
        """Hold a fact under a key unless one with its event id is held there; evict past the
        caps (the fact itself, if it is the oldest of a full key). Returns whether it was
        added."""
        ids = self._ids
        slot = (key, fact.event_id)
        if slot in ids:
            return False
        fact.settle()
        data = self._data
        changed = self._changed
        facts = data.pop(key, None)  # re-inserted below: the least recently touched key is first
        if facts is None:
            if len(data) >= self.max_keys:
                gone_key = next(iter(data))
                self._lose(gone_key, data.pop(gone_key))
                if changed is not None:
                    changed.add(gone_key)
                    self._touch.pop(gone_key, None)
            facts = []
        data[key] = facts
        self._seq += 1
        ids[slot] = self._seq
        if changed is not None:
            changed.add(key)
            self._touch[key] = self._seq
        self._count += 1
        if insert(facts, fact) == 0:  # a new key, or an earlier oldest: index the key by it
            index = self._index
            heappush(index, (fact.ts, key))
            if len(index) > 2 * len(data) + 1024:
                self._reindex()
        if len(facts) > self.max_per_key:
            self._lose(key, [facts.pop(0)])
        return True

    def _forget(self, key: K, facts: list[Fact]) -> None:
        ids = self._ids
        for f in facts:
            del ids[(key, f.event_id)]
        self._count -= len(facts)
        if self._dropped is not None:
            self._dropped.extend(f.event_id for f in facts)

    def _lose(self, key: K, facts: list[Fact]) -> None:
        self.evictions += len(facts)
        self._forget(key, facts)

    def expire(self, before_ts: float) -> None:
        """Drop every fact with event time before `before_ts`."""
        index, data, changed = self._index, self._data, self._changed
        while index and index[0][0] < before_ts:
            key = heappop(index)[1]
            facts = data.get(key)
            if facts is None:
                continue  # the key went since
            n = bisect_left(facts, before_ts, key=event_time)
            if n:
                self._forget(key, facts[:n])
                del facts[:n]
                if changed is not None:
                    changed.add(key)
            if facts:
                heappush(index, (facts[0].ts, key))
            else:
                del data[key]
                self._touch.pop(key, None)

    def take_dropped(self) -> list[str]:
        """The ids of facts evicted or expired since the last call (with `keep_dropped`)."""
        out = self._dropped
        if out is None:
            return []
        self._dropped = []
        return out

    def _reindex(self) -> None:
        """Rebuild the expiry index from what is held, without stale entries."""
        self._index = [(facts[0].ts, key) for key, facts in self._data.items()]
        heapify(self._index)

    # -- size and snapshots ----------------------------------------------------------------

    def keys(self) -> int:
        return len(self._data)

    def key_view(self) -> KeysView[K]:
        return self._data.keys()

    def items_count(self) -> int:
        return self._count

    def facts(self) -> Iterator[Fact]:
        for facts in self._data.values():
            yield from facts

    # -- a per-key changelog ---------------------------------------------------------------

    def track(self, changed: set[K]) -> None:
        """Add every key whose facts change (taken, evicted, expired) to `changed`."""
        self._changed = changed
        self._touch = {}
        for n, key in enumerate(self._data, start=1):
            self._touch[key] = n - len(self._data)

    def part(self, key: K) -> list[object] | None:
        """A key's entry in a changelog: [when last touched, [event ids in the order they
        came]]; None if the key holds nothing."""
        facts = self._data.get(key)
        if not facts:
            return None
        return [self._touch.get(key, 0), self._ids_as_they_came(key, facts)]

    @staticmethod
    def from_parts(parts: list[tuple[object, list[object]]]) -> list[list[object]]:
        """What `snapshot` returns, from (key as snapshots write it, `part`) pairs, with when
        each key was touched."""
        ordered = sorted(parts, key=lambda kp: cast(int, kp[1][0]))
        return [[k, p[1], p[0]] for k, p in ordered]

    def snapshot(self) -> list[list[object]]:
        """[[key, [event ids in the order they came]], ...], keys in eviction order."""
        return [[key_out(k), self._ids_as_they_came(k, v)] for k, v in self._data.items()]

    def _ids_as_they_came(self, key: K, facts: list[Fact]) -> list[str]:
        ids = self._ids
        return [f.event_id for f in sorted(facts, key=lambda f: ids[(key, f.event_id)])]

    def restore(self, data: list[list[object]], facts: dict[str, Fact]) -> None:
        """Load what `snapshot` returned (ids in the order they came), or `from_parts`
        (which adds when each key was touched, kept so that a changelog stays in order)."""
        self._data.clear()
        self._ids.clear()
        self._touch = {}
        self._count = 0
        if self._dropped is not None:
            self._dropped = []
        for entry in data:
            raw_key, event_ids = entry[0], entry[1]
            key = cast(K, key_in(raw_key))
            held: list[Fact] = []
            for i in cast("list[str]", event_ids):
                f = facts.get(i)
                if f is not None and (key, i) not in self._ids:
                    f.settle()
                    self._seq += 1
                    self._ids[(key, i)] = self._seq
                    insert(held, f)
            if held:
                self._data[key] = held
                self._count += len(held)
                if len(entry) > 2:
                    touched = cast(int, entry[2])
                    self._seq = max(self._seq, touched)
                    self._touch[key] = touched
                elif self._changed is not None:
                    self._touch[key] = self._seq
        self._reindex()


def key_out(k: object) -> object:
    """A key as snapshots write it (JSON has no tuples)."""
    return list(k) if isinstance(k, tuple) else k


def key_in(k: object) -> object:
    """A key as snapshots wrote it, as held."""
    return tuple(k) if isinstance(k, list) else k
