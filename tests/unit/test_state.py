"""The per-key store: event-time order, exact ranges, caps, the expiry index, snapshots."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.facts import Fact
from engine.ruletests import DEFAULT_START, build_event
from engine.state import KeyedFacts, near_bounds


def fact(eid: str, ts: float) -> Fact:
    f = build_event({"id": eid, "type": "track", "at": "0m", "track_id": "T"}, DEFAULT_START)
    f.ts = ts
    return f


def order(facts: list[Fact]) -> list[str]:
    return [f.event_id for f in facts]


def test_facts_kept_in_event_time_order_whatever_the_arrival() -> None:
    kf: KeyedFacts[str] = KeyedFacts(10, 10)
    for eid, ts in [("c", 3.0), ("a", 1.0), ("e", 5.0), ("b2", 2.0), ("b1", 2.0), ("d", 4.0)]:
        assert kf.add("k", fact(eid, ts))
    assert order(kf.get("k")) == ["a", "b1", "b2", "c", "d", "e"]
    assert not kf.add("k", fact("c", 3.0))  # held already
    assert kf.holds("k", "c") and not kf.holds("other", "c")
    assert order(kf.between("k", 2.0, 4.0)) == ["b1", "b2", "c", "d"]
    assert order(kf.near("k", 3.0, 1.0)) == ["b1", "b2", "c", "d"]
    assert kf.near("nothing", 3.0, 1.0) == [] and kf.between("nothing", 0, 9) == []


def test_cap_per_key_drops_the_oldest_by_event_time() -> None:
    kf: KeyedFacts[str] = KeyedFacts(10, 2)
    kf.add("k", fact("late", 5.0))
    kf.add("k", fact("early", 1.0))
    kf.add("k", fact("mid", 3.0))
    assert order(kf.get("k")) == ["mid", "late"] and kf.evictions == 1
    assert kf.add("k", fact("oldest", 0.5))  # taken, and evicted at once: the oldest of a full key
    assert order(kf.get("k")) == ["mid", "late"] and kf.evictions == 2
    assert not kf.holds("k", "oldest") and kf.items_count() == 2


def test_cap_on_keys_drops_the_least_recently_touched() -> None:
    kf: KeyedFacts[str] = KeyedFacts(2, 10)
    kf.add("a", fact("a1", 1.0))
    kf.add("b", fact("b1", 2.0))
    kf.add("a", fact("a2", 3.0))  # touches a
    kf.add("c", fact("c1", 4.0))  # evicts b
    assert sorted(kf.key_view()) == ["a", "c"] and kf.evictions == 1
    assert not kf.holds("b", "b1")


def test_expiry_drops_exactly_what_is_older() -> None:
    kf: KeyedFacts[str] = KeyedFacts(100, 100, keep_dropped=True)
    kf.add("a", fact("a5", 5.0))
    kf.add("a", fact("a1", 1.0))  # an earlier oldest: indexed again
    kf.add("b", fact("b3", 3.0))
    kf.expire(3.0)
    assert order(kf.get("a")) == ["a5"] and order(kf.get("b")) == ["b3"]
    assert kf.take_dropped() == ["a1"] and kf.take_dropped() == []
    kf.expire(5.5)
    assert kf.keys() == 0 and kf.items_count() == 0
    assert sorted(kf.take_dropped()) == ["a5", "b3"]
    assert kf.evictions == 0  # expiry is not eviction


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abcd"), st.integers(0, 40), st.integers(0, 60)),
        min_size=1,
        max_size=80,
    ),
    st.integers(1, 6),
    st.integers(1, 3),
)
def test_matches_a_plain_model(ops: list[tuple[str, int, int]], per_key: int, keys: int) -> None:
    """Against a straightforward model: lists per key, every operation a scan."""
    kf: KeyedFacts[str] = KeyedFacts(keys, per_key)
    model: dict[str, list[Fact]] = {}
    evicted = 0
    for n, (key, ident, ts) in enumerate(ops):
        if ident == 0:  # expire
            kf.expire(ts)
            for k in list(model):
                model[k] = [f for f in model[k] if f.ts >= ts]
                if not model[k]:
                    del model[k]
            continue
        f = fact(f"e{ident}", float(ts))
        new = not any(g.event_id == f.event_id for g in model.get(key, []))
        assert kf.add(key, f) == new, n
        if new:
            items = model.pop(key, None)
            if items is None:
                items = []
                if len(model) >= keys:
                    evicted += len(model.pop(next(iter(model))))
            items.append(f)
            items.sort(key=lambda g: (g.ts, g.event_id))
            if len(items) > per_key:
                del items[0]
                evicted += 1
            model[key] = items  # a redelivery does not touch the key
    assert {k: order(v) for k, v in model.items()} == {k: order(kf.get(k)) for k in kf.key_view()}
    assert kf.items_count() == sum(len(v) for v in model.values())
    assert kf.evictions == evicted


def test_near_bounds_agrees_with_the_test_it_stands_for() -> None:
    rng = random.Random(5)
    for _ in range(300):
        base = 1.7e9 + rng.random()
        ts = sorted(base + rng.choice([0, 1, -1]) * rng.random() * 1200 for _ in range(30))
        facts = [fact(str(i), t) for i, t in enumerate(ts)]
        t = rng.choice([*ts, base])
        w = rng.choice([600.0, 600.0000001, 0.1 + 0.2, 1e-7])
        i, j = near_bounds(facts, t, w)
        assert [f.ts for f in facts[i:j]] == [x for x in ts if abs(x - t) <= w]


def test_snapshot_keeps_arrival_order_and_restores() -> None:
    kf: KeyedFacts[str] = KeyedFacts(10, 10)
    facts = {eid: fact(eid, ts) for eid, ts in [("x", 3.0), ("y", 1.0), ("z", 2.0)]}
    for f in facts.values():
        kf.add("k", f)
    snap = kf.snapshot()
    assert snap == [["k", ["x", "y", "z"]]]
    back: KeyedFacts[str] = KeyedFacts(10, 10)
    back.restore(snap, facts)
    assert order(back.get("k")) == ["y", "z", "x"]
    assert [back.arrival("k", facts[e]) for e in "xyz"] == sorted(
        back.arrival("k", facts[e]) for e in "xyz"
    )
    back.expire(2.5)
    assert order(back.get("k")) == ["x"]
