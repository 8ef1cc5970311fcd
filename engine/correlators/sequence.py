"""`sequence`: steps in order per key inside one window; the last step may be an absence."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator

from engine.correlators.base import Correlator, store_snapshots
from engine.explain import Explanation, at_most, describe_selectors, duration, said
from engine.facts import Fact
from engine.hits import Hit
from engine.rules import Duration, Frozen, KeySpec, Role, RuleBase
from engine.selectors import Selector, any_of
from engine.state import KeyedFacts


class Step(Frozen):
    """One step: the events that make it (`select`, one selector or a list), or with
    `absent: true` the events whose absence for `within` after the step before makes it.
    On a present step, `within` caps the time since the step before."""

    name: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]*$")]
    select: list[Selector] = Field(min_length=1)
    absent: bool = False
    within: Duration | None = None

    @field_validator("select", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    def matches(self, fact: Fact) -> bool:
        return any(s.matches(fact) for s in self.select)


class SequenceRule(RuleBase):
    """Events of `steps` in event-time order (equal times allowed), with the same key, the
    present ones inside one `window`; arrival order does not matter. A match is decided per
    event of the last present step: it fires once, with the tightest chain found when it
    completed. If the last step is `absent`, the match fires only if no such event follows
    that step's event within `within`: decided once the watermark has passed its time +
    `within` + the allowed lateness, so an event that is late but allowed can still cancel it;
    `flush` (end of input) decides every match still waiting."""

    type_name: ClassVar[str] = "sequence"

    key: KeySpec
    steps: list[Step]

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[Step]) -> list[Step]:
        if len(v) < 2:
            raise ValueError(f"a sequence needs at least 2 steps, got {len(v)}")
        seen: set[str] = set()
        for i, s in enumerate(v, start=1):
            what = f"step {i} ({s.name!r})"
            if s.name in seen:
                raise ValueError(f"step names must be unique: {s.name!r} is used more than once")
            seen.add(s.name)
            if i == 1 and s.absent:
                raise ValueError(
                    f"the first step ({s.name!r}) cannot be absent: "
                    "a sequence starts with an event that happened"
                )
            if i == 1 and s.within is not None:
                raise ValueError(
                    f"the first step ({s.name!r}) cannot have `within`: no step comes before it"
                )
            if s.absent and i != len(v):
                raise ValueError(
                    f"only the last step may be absent, but {what} of {len(v)} is absent"
                )
            if s.absent and s.within is None:
                raise ValueError(
                    f"{what} is absent and needs `within`: how long after the step before it "
                    "the event must not happen"
                )
        return v

    def selectors(self) -> Sequence[Selector]:
        return [sel for s in self.steps for sel in s.select]

    def route_key(self) -> KeySpec | None:
        return self.key

    @property
    def present(self) -> list[Step]:
        return [s for s in self.steps if not s.absent]

    @property
    def absence(self) -> Step | None:
        return self.steps[-1] if self.steps[-1].absent else None

    def roles(self) -> list[Role]:
        return [Role(s.name, s.select) for s in self.steps]

    def summary(self) -> str:
        steps = []
        for s in self.steps:
            within = f" within {duration(s.within)}" if s.within is not None else ""
            steps.append(f"no {s.name}{within}" if s.absent else f"{s.name}{within}")
        return (
            f"{' then '.join(steps)} with the same {self.key.name}, the present steps within "
            f"{duration(self.window)}"
        )

    def _delay_said(self) -> str:
        if self.corrections is not None:
            return (
                f", open to correction for {duration(self.corrections)} (a late "
                f"{self.steps[-1].name} withdraws it)"
            )
        return f" by the rule's lateness ({duration(self.decision_delay)})"

    def explain(self, ex: Explanation) -> None:
        w = self.window
        present = self.present
        chain = sorted(ex.evidence, key=lambda f: (f.ts, f.event_id))
        for i, (step, f) in enumerate(zip(present, chain, strict=False)):
            if i:
                before = chain[i - 1]
                limit = f" (within {duration(step.within)})" if step.within is not None else ""
                ex.met(
                    f,
                    said(
                        f"{duration(f.ts - before.ts)} after the {present[i - 1].name}{limit}",
                        (f.event_id, before.event_id),
                        f"after the {present[i - 1].name}{limit}",
                    ),
                )
        order = " then ".join(s.name for s in present)
        ex.condition(
            said(
                f"steps in order: {order}, spanning {duration(ex.span)} {at_most(w)}",
                ex.every,
                f"steps in order: {order}, within {duration(w)}",
            )
        )
        absent = self.absence
        if absent is not None and absent.within is not None:
            last = ex.evidence[-1]
            ex.absence_until = last.ts + absent.within
            ex.absence_ref = last.event_id
            ex.condition(
                said(
                    f"no {absent.name} ({describe_selectors(absent.select)}) with the same "
                    f"{self.key.name} within {duration(absent.within)} after the "
                    f"{present[-1].name}: checked up to that time, decided once event time "
                    f"had passed it{self._delay_said()}"
                )
            )
            ex.window_end = ex.absence_until


Pending = tuple[tuple[Fact, ...], float]
"""A complete chain of present steps waiting for its absence, and when that is due
(the last present step's time + `within`; decided once the watermark passes due + lateness)."""


class SequenceCorrelator(Correlator[SequenceRule]):
    def __init__(self, rule: SequenceRule) -> None:
        super().__init__(rule)
        self.present = rule.present
        self.absence = rule.absence
        self._takes = [any_of(step.select) for step in self.present]
        self._cancels = any_of(self.absence.select) if self.absence is not None else None
        mk, mpk = rule.max_keys, rule.max_per_key
        self.stores: list[KeyedFacts[str]] = [KeyedFacts(mk, mpk) for _ in self.present]
        self.absent_seen: KeyedFacts[str] = KeyedFacts(mk, mpk)
        self.decided: KeyedFacts[str] = KeyedFacts(mk, mpk)
        self.pending: dict[str, dict[str, Pending]] = {}
        # With `corrections`: chains fired on an absence, by key and last event, so that an
        # absent-step event taken later can withdraw them.
        self.fired: dict[str, dict[str, tuple[Fact, ...]]] = {}
        self.pending_evictions = 0
        self._due: list[tuple[float, int, str, str]] = []
        self._tie = itertools.count()
        self._pending_touch: dict[str, int] = {}
        """When each key's waiting chains were last touched (their eviction order)."""

    # -- taking facts ----------------------------------------------------------------------

    def on_fact(self, fact: Fact, key: str | None, owner: bool, watermark: float) -> list[Hit]:
        if key is None:
            return []
        hits: list[Hit] = []
        absence = self.absence
        cancels = self._cancels
        if cancels is not None and cancels(fact) and self.absent_seen.add(key, fact):
            self._cancel(key, fact)
            if self.fired:
                hits.extend(self._refute(key, fact))
        positions: list[int] = []
        for i, takes in enumerate(self._takes):
            if takes(fact) and self.stores[i].add(key, fact):
                positions.append(i)
        for i in positions:
            for chain in self._chains(fact, key, i):
                last = chain[-1]
                if absence is not None:
                    self._wait(key, chain)
                elif not self._seen_last(key, last):
                    self.decided.add(key, last)
                    hits.append(Hit(self.rule.id, chain, key, last.lat, last.lon))
        return hits

    def _seen_last(self, key: str, last: Fact) -> bool:
        """Whether a chain ending at this event was already reported, or is waiting."""
        waiting = self.pending.get(key)
        return (waiting is not None and last.event_id in waiting) or self.decided.holds(
            key, last.event_id
        )

    def _cancel(self, key: str, b: Fact) -> None:
        """An absent-step event: cancel every waiting chain it falls within `within` of."""
        waiting = self.pending.get(key)
        if not waiting:
            return
        within = self.absence.within if self.absence is not None else None
        assert within is not None
        for a_id, (chain, _due) in list(waiting.items()):
            a = chain[-1]
            if a.event_id != b.event_id and a.ts <= b.ts <= a.ts + within:
                del waiting[a_id]
                self.decided.add(key, a)
        self.changed.add(key)
        if not waiting:
            del self.pending[key]

    def on_late(self, fact: Fact, key: str | None, watermark: float) -> list[Hit]:
        cancels = self._cancels
        if key is None or cancels is None or not cancels(fact):
            return []
        return self._refute(key, fact)

    def _refute(self, key: str, b: Fact) -> list[Hit]:
        """An absent-step event within `within` after chains already fired: each is refuted."""
        fired = self.fired.get(key)
        if not fired or self.absence is None or self.absence.within is None:
            return []
        within = self.absence.within
        out: list[Hit] = []
        for a_id, chain in list(fired.items()):
            a = chain[-1]
            if a.event_id != b.event_id and a.ts <= b.ts <= a.ts + within:
                del fired[a_id]
                self.changed.add(key)
                reason = (
                    f"{self.absence.name} {b.event_id} came {duration(b.ts - a.ts)} after the "
                    f"{self.present[-1].name} (within {duration(within)}): the absence the "
                    "alert rests on did not hold"
                )
                out.append(
                    Hit(self.rule.id, chain, key, a.lat, a.lon, refuted_by=(b,), reason=reason)
                )
        if not fired:
            del self.fired[key]
        return out

    def _wait(self, key: str, chain: tuple[Fact, ...]) -> None:
        """A complete chain of present steps: wait for its absence unless already decided."""
        a = chain[-1]
        if self._seen_last(key, a):
            return
        waiting = self.pending.get(key)
        within = self.absence.within if self.absence is not None else None
        assert within is not None
        if any(
            b.event_id != a.event_id for b in self.absent_seen.between(key, a.ts, a.ts + within)
        ):
            self.decided.add(key, a)  # the absent-step event arrived first
            return
        due = a.ts + within
        if waiting is None:
            if len(self.pending) >= self.rule.max_keys:
                oldest = next(iter(self.pending))
                self.pending_evictions += len(self.pending.pop(oldest))
                self.changed.add(oldest)
            waiting = {}
        else:
            del self.pending[key]  # re-insert: least recently touched keys go first
        waiting[a.event_id] = (chain, due)
        if len(waiting) > self.rule.max_per_key:
            del waiting[next(iter(waiting))]
            self.pending_evictions += 1
        self.pending[key] = waiting
        self._pending_touch[key] = next(self._tie)
        self.changed.add(key)
        heapq.heappush(self._due, (due, next(self._tie), key, a.event_id))

    # -- chains ----------------------------------------------------------------------------

    def _chains(self, fact: Fact, key: str, i: int) -> list[tuple[Fact, ...]]:
        """Chains of present steps with `fact` as step i: one per last-step event not yet
        matched (a match is decided per last-step event, whatever the order of arrival).

        Before the fact, the chain whose first event is latest (the most room for the
        window); after it, a chain to every last-step event it can reach within the window.
        """
        back = self._backward(fact, key, i)
        if back is None:
            return []
        first = back[0].ts if back else fact.ts
        ends = [[]] if i == len(self.present) - 1 else self._forward(fact, key, i, first)
        out: list[tuple[Fact, ...]] = []
        for fwd in ends:
            chain = (*back, fact, *fwd)
            if chain[-1].ts - chain[0].ts > self.rule.window:
                continue
            if self._seen_last(key, chain[-1]):
                continue
            if len({f.event_id for f in chain}) != len(chain):
                continue  # one event would fill two steps (only possible at equal times)
            out.append(chain)
        return out

    def _backward(self, fact: Fact, key: str, i: int) -> list[Fact] | None:
        if i == 0:
            return []
        lo = fact.ts - self.rule.window
        eid = fact.event_id
        cands = [
            [g for g in self.stores[j].between(key, lo, fact.ts) if g.event_id != eid]
            for j in range(i)
        ]
        # levels[j][n] = (latest possible first-step time of a chain ending at cands[j][n],
        #                 index of its step j-1 in cands[j-1])
        levels: list[list[tuple[float | None, int]]] = [[(g.ts, -1) for g in cands[0]]]
        for j in range(1, i):
            levels.append(
                [
                    _latest_before(g, cands[j - 1], levels[j - 1], self.present[j].within)
                    for g in cands[j]
                ]
            )
        best, idx = _latest_before(fact, cands[i - 1], levels[i - 1], self.present[i].within)
        if best is None:
            return None
        out: list[Fact] = []
        for j in range(i - 1, -1, -1):
            out.append(cands[j][idx])
            idx = levels[j][idx][1]
        out.reverse()
        return out

    def _forward(self, fact: Fact, key: str, i: int, first: float) -> list[list[Fact]]:
        """[steps i+1 .. last] from `fact` to each last-step event it reaches, at most
        `window` after `first`; each link the latest event before the next one."""
        m = len(self.present)
        hi = first + self.rule.window
        reached: list[Fact] = [fact]
        parents: list[list[int]] = []
        layers: list[list[Fact]] = []
        for j in range(i + 1, m):
            within = self.present[j].within
            cands = [
                g for g in self.stores[j].between(key, fact.ts, hi) if g.event_id != fact.event_id
            ]
            layer: list[Fact] = []
            parent: list[int] = []
            n = -1
            for g in cands:  # both sorted by time: advance n to the latest reached h <= g
                while n + 1 < len(reached) and reached[n + 1].ts <= g.ts:
                    n += 1
                p = n
                while p >= 0 and reached[p].event_id == g.event_id:
                    p -= 1
                if p >= 0 and (within is None or g.ts - reached[p].ts <= within):
                    layer.append(g)
                    parent.append(p)
            if not layer:
                return []
            layers.append(layer)
            parents.append(parent)
            reached = layer
        out: list[list[Fact]] = []
        for end in range(len(layers[-1])):
            path: list[Fact] = []
            idx = end
            for j in range(len(layers) - 1, -1, -1):
                path.append(layers[j][idx])
                idx = parents[j][idx]
            path.reverse()
            out.append(path)
        return out

    # -- time ------------------------------------------------------------------------------

    def on_watermark(self, watermark: float) -> list[Hit]:
        """Fire every waiting chain whose absence is decided: due + lateness has passed (due
        alone with `corrections`: a late absent-step event then withdraws the alert)."""
        hits: list[Hit] = []
        lateness = self.rule.decision_delay
        keep = self.rule.corrections is not None
        due_heap = self._due
        while due_heap and due_heap[0][0] + lateness < watermark:
            due, _, key, a_id = heapq.heappop(due_heap)
            waiting = self.pending.get(key)
            entry = waiting.get(a_id) if waiting is not None else None
            if waiting is None or entry is None or entry[1] != due:
                continue  # cancelled or evicted since
            del waiting[a_id]
            self.changed.add(key)
            if not waiting:
                del self.pending[key]
            chain = entry[0]
            a = chain[-1]
            self.decided.add(key, a)
            if keep:
                self.fired.setdefault(key, {})[a_id] = chain
            hits.append(Hit(self.rule.id, chain, key, a.lat, a.lon))
        return hits

    def expire(self, watermark: float) -> None:
        before = watermark - self.rule.horizon
        for store in self.stores:
            store.expire(before)
        self.absent_seen.expire(before)
        self.decided.expire(before)
        # fired chains are kept a corrections span longer: a refutation that comes after the
        # span is still recognised, counted and logged
        kept = before - (self.rule.corrections or 0.0)
        for key, fired in list(self.fired.items()):
            for a_id in [i for i, chain in fired.items() if chain[-1].ts < kept]:
                del fired[a_id]
                self.changed.add(key)
            if not fired:
                del self.fired[key]
        touch = self._pending_touch
        if len(touch) > 2 * len(self.pending) + 1024:
            self._pending_touch = {k: t for k, t in touch.items() if k in self.pending}
        # Cancelled and evicted chains leave their entries in the heap: compact it now and then.
        waiting = sum(len(w) for w in self.pending.values())
        if len(self._due) > 2 * waiting + 1024:
            self._due = [
                (due, next(self._tie), key, a_id)
                for key, w in self.pending.items()
                for a_id, (_, due) in w.items()
            ]
            heapq.heapify(self._due)

    # -- introspection and snapshots -------------------------------------------------------

    def size(self) -> tuple[int, int]:
        keys: set[str] = set(self.pending)
        for store in (*self.stores, self.absent_seen):
            keys.update(store.key_view())
        items = sum(s.items_count() for s in (*self.stores, self.absent_seen, self.decided))
        return (len(keys), items + sum(len(w) for w in self.pending.values()))

    def evictions(self) -> int:
        return self.pending_evictions + sum(
            s.evictions for s in (*self.stores, self.absent_seen, self.decided)
        )

    def facts(self) -> Iterator[Fact]:
        for store in (*self.stores, self.absent_seen, self.decided):
            yield from store.facts()
        for waiting in self.pending.values():
            for chain, _ in waiting.values():
                yield from chain
        for fired in self.fired.values():
            for chain in fired.values():
                yield from chain

    def snapshot(self) -> Any:
        return {
            "steps": [s.snapshot() for s in self.stores],
            "absent": self.absent_seen.snapshot(),
            "decided": self.decided.snapshot(),
            "pending": [
                [key, [f.event_id for f in chain], due]
                for key, waiting in self.pending.items()
                for chain, due in waiting.values()
            ],
            "fired": [
                [key, [f.event_id for f in chain]]
                for key, fired in self.fired.items()
                for chain in fired.values()
            ],
        }

    def restore(self, data: Any, facts: dict[str, Fact]) -> None:
        for store, snap in zip(self.stores, data["steps"], strict=True):
            store.restore(snap, facts)
        self.absent_seen.restore(data["absent"], facts)
        self.decided.restore(data["decided"], facts)
        self.pending = {}
        self._pending_touch = {}
        self._due = []
        touched = -1
        for key, ids, due, *order in data["pending"]:
            if not all(i in facts for i in ids):
                continue
            chain = tuple(facts[i] for i in ids)
            self.pending.setdefault(key, {})[chain[-1].event_id] = (chain, due)
            self._pending_touch[key] = order[0] if order else next(self._tie)
            touched = max(touched, self._pending_touch[key])
            heapq.heappush(self._due, (due, next(self._tie), key, chain[-1].event_id))
        self._tie = itertools.count(max(touched, next(self._tie)) + 1)
        self.fired = {}
        for key, ids in data.get("fired", []):
            if all(i in facts for i in ids):
                chain = tuple(facts[i] for i in ids)
                self.fired.setdefault(key, {})[chain[-1].event_id] = chain


    def keyed_stores(self) -> dict[str, KeyedFacts[Any]]:
        named = {f"step{i}": store for i, store in enumerate(self.stores)}
        return {**named, "absent": self.absent_seen, "decided": self.decided}

    def extra_keys(self) -> Iterable[Any]:
        return {*self.pending, *self.fired}

    def key_extra(self, key: Any) -> tuple[Any, list[Fact]] | None:
        waiting = self.pending.get(key)
        fired = self.fired.get(key)
        if not waiting and not fired:
            return None
        facts: list[Fact] = []
        extra: dict[str, Any] = {}
        if waiting:
            extra["pending"] = [[[f.event_id for f in c], due] for c, due in waiting.values()]
            extra["order"] = self._pending_touch.get(key, 0)
            facts.extend(f for c, _ in waiting.values() for f in c)
        if fired:
            extra["fired"] = [[f.event_id for f in c] for c in fired.values()]
            facts.extend(f for c in fired.values() for f in c)
        return extra, facts

    def assemble(self, keyed: list[dict[str, Any]], rest: Any | None) -> Any:
        snaps = store_snapshots(keyed, [f"step{i}" for i in range(len(self.stores))])
        extra = [(p["k"], p["x"]) for p in keyed if "x" in p]
        waiting = sorted((x for x in extra if "pending" in x[1]), key=lambda x: x[1]["order"])
        return {
            "steps": [snaps[f"step{i}"] for i in range(len(self.stores))],
            **store_snapshots(keyed, ["absent", "decided"]),
            "pending": [
                [k, ids, due, x["order"]] for k, x in waiting for ids, due in x["pending"]
            ],
            "fired": [[k, ids] for k, x in extra for ids in x.get("fired", [])],
        }


def _latest_before(
    g: Fact, prev: list[Fact], prev_levels: list[tuple[float | None, int]], within: float | None
) -> tuple[float | None, int]:
    """Of the chains ending just before `g` (at most `within` before), the one whose first
    event is latest: (its first event time, its index in `prev`), or (None, -1)."""
    best: float | None = None
    arg = -1
    for n in range(len(prev) - 1, -1, -1):  # latest first
        h = prev[n]
        if h.ts > g.ts:
            continue
        if within is not None and g.ts - h.ts > within:
            break
        if best is not None and h.ts <= best:
            break  # a chain ending at h starts at or before h: no better than best
        v = prev_levels[n][0]
        if v is None or h.event_id == g.event_id:
            continue
        if best is None or v > best:
            best, arg = v, n
    return best, arg
