"""A per-key changelog of a correlate stage's state: what a snapshot writes is what changed
since the last one, each part under its own key on a compacted topic.

Entries (names are the keys on the topic; values are JSON):

- `h`: the head, the stage's scalars (marks, offsets taken, watermark, the rules as they
  were, the caller's meta), written with every batch of changes;
- `c/<rule>/<key>`, `c/<rule>/*`: a rule's state for one key, and what it keeps besides;
- `a/<alert id>`: an open alert; `r/<alert id>`: a match already reported;
- `b/<event id>\\0<route>`: an event waiting in the event-time buffer;
- `f/<event id>`: an event that some part refers to, written once while any does.

A part's value is `{"v": what the component gave, "f": [event ids it refers to]}`; the
facts are counted by the parts that refer to them, so an event is written when the first
part refers to it and deleted (a tombstone) when the last one lets it go. A batch of changes
must be applied whole or not at all (the worker writes it in one Kafka transaction).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import orjson

from engine.correlators.base import Part
from engine.facts import Fact

HEAD = "h"
FACT = "f/"
UNUSED = "u"
"""A part no component gives: what an unusable changelog held, to be deleted."""

Change = tuple[str, bytes | None]
"""An entry's name and its new value (None: deleted)."""


class Tracked(Protocol):
    def take_changes(self, full: bool = False) -> Iterable[Part]: ...

    def head(self, meta: dict[str, Any] | None = None) -> dict[str, Any]: ...


class StateLog:
    """What the changelog of one partition holds: every part's facts, and how many parts
    refer to each fact."""

    def __init__(self) -> None:
        self.parts: dict[str, tuple[str, ...]] = {}
        self.refs: dict[str, int] = {}

    def changes(
        self, state: Tracked, meta: dict[str, Any] | None = None, full: bool = False
    ) -> list[Change]:
        """The entries to write for what changed in `state` since the last call, the head
        last. `full`: compare every part there is, and delete entries no part stands for."""
        parts: list[Change] = []
        new: dict[str, Fact] = {}
        gone: list[str] = []
        named: set[str] = set()
        for name, value, facts in state.take_changes(full):
            named.add(name)
            old = self.parts.pop(name, None)
            if value is None:
                if old is None:
                    continue  # never written: nothing to delete
                parts.append((name, None))
            else:
                by_id = {f.event_id: f for f in facts}
                ids = tuple(by_id)
                parts.append((name, orjson.dumps({"v": value, "f": ids})))
                self.parts[name] = ids
                for eid in ids:
                    n = self.refs.get(eid, 0)
                    self.refs[eid] = n + 1
                    if n == 0:
                        new[eid] = by_id[eid]
            if old is not None:
                self._release(old, gone)
        if full:
            for name in [n for n in self.parts if n not in named]:
                parts.append((name, None))
                self._release(self.parts.pop(name), gone)
        out: list[Change] = [(FACT + eid, orjson.dumps(f.doc)) for eid, f in new.items()]
        out.extend(parts)
        out.extend((FACT + eid, None) for eid in gone if eid not in self.refs)
        out.append((HEAD, orjson.dumps(state.head(meta), option=orjson.OPT_NON_STR_KEYS)))
        return out

    def _release(self, ids: tuple[str, ...], gone: list[str]) -> None:
        refs = self.refs
        for eid in ids:
            n = refs[eid] - 1
            if n:
                refs[eid] = n
            else:
                del refs[eid]
                gone.append(eid)

    def disown(self, entries: Mapping[str, bytes]) -> None:
        """Count what a changelog holds as written, without reading it (it could not be
        used): the next full pass deletes every entry, and every event, that the state does
        not stand for."""
        self.parts = {name: () for name in entries if name != HEAD and not name.startswith(FACT)}
        held = tuple(name[len(FACT) :] for name in entries if name.startswith(FACT))
        self.parts[UNUSED] = held
        self.refs = dict.fromkeys(held, 1)

    def load(
        self, entries: Mapping[str, bytes]
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
        """Read what a changelog holds (each entry's newest value, deleted ones left out):
        (head, the parts' values by name, the facts' docs by event id); None if it holds
        no head. Counts the references as they stand."""
        raw_head = entries.get(HEAD)
        if raw_head is None:
            return None
        head: dict[str, Any] = orjson.loads(raw_head)
        facts: dict[str, Any] = {}
        values: dict[str, Any] = {}
        self.parts.clear()
        self.refs.clear()
        for name, raw in entries.items():
            if name == HEAD:
                continue
            if name.startswith(FACT):
                facts[name[len(FACT) :]] = orjson.loads(raw)
                continue
            doc = orjson.loads(raw)
            ids = tuple(doc["f"])
            values[name] = doc["v"]
            self.parts[name] = ids
            for eid in ids:
                self.refs[eid] = self.refs.get(eid, 0) + 1
        return head, values, facts


def apply(entries: dict[str, bytes], changes: Iterable[Change]) -> None:
    """What a compacted topic keeps once `changes` are written after `entries`."""
    for name, value in changes:
        if value is None:
            entries.pop(name, None)
        else:
            entries[name] = value
