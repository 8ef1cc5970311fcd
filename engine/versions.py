"""Alert versions: the alerts a rule has raised, and their updates and withdrawals.

A rule's matches ("hits") fall into alerts by the rule's suppression: under the same
suppression key, a hit whose newest evidence is less than `suppress.for` after the first
hit of an alert joins that alert; the first hit names it (`alert_id`). This is what replay,
taking events in event-time order, decides. Online, a record taken behind the watermark may
produce a hit that replay would have seen first, or refute one already reported: the alerts
of that suppression key are then grouped again from their hits, and every difference goes
out as a version: `raised`, `updated` (evidence joined or left) or `withdrawn` (no hit left,
or superseded by an alert whose first hit came earlier). So the alerts that stand at the
end, with their evidence, are replay's.

Updates are rate-limited in event time: an alert gets at most one `updated` version per
`update_every` of watermark progress, carrying everything new.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.facts import Fact

MAX_EVIDENCE = 50
"""At most this many events per alert: the earliest, in (time, id) order."""
MAX_HITS = 256
"""At most this many matches remembered per alert (the earliest)."""

Trigger = tuple[float, str]
"""A hit's newest evidence: (event time, event id)."""


@dataclass(frozen=True, slots=True)
class HitRec:
    """One match of an alert: its newest evidence, its own id, its evidence, where."""

    trigger: Trigger
    hit_id: str
    evidence: tuple[str, ...]
    lat: float
    lon: float


@dataclass
class OpenAlert:
    """An alert raised and not yet forgotten: its matches, and what its last version said."""

    alert_id: str
    rule_id: str
    skey: tuple[Any, ...]
    key: str | None
    hits: list[HitRec]
    explanation: dict[str, Any] | None
    version: int = 0
    released: tuple[str, ...] = ()
    """Evidence ids of the last version."""
    last_version_wm: float = 0.0
    raised_wm: float = 0.0
    due: float | None = None
    withdrawn: bool = False
    causes: list[str] = field(default_factory=list)
    """Event ids that caused the changes not yet released."""
    ids: set[str] = field(default_factory=set)
    """The union of the matches' evidence ids (derived from `hits`)."""

    def __post_init__(self) -> None:
        self.reindex()

    def reindex(self) -> None:
        self.ids = {eid for h in self.hits for eid in h.evidence}

    @property
    def anchor(self) -> Trigger:
        return self.hits[0].trigger

    def location(self) -> tuple[float, float]:
        newest = max(self.hits, key=lambda h: h.trigger)
        return newest.lat, newest.lon

    def doc(self) -> list[Any]:
        return [
            self.alert_id,
            self.rule_id,
            list(self.skey),
            self.key,
            [[list(h.trigger), h.hit_id, list(h.evidence), h.lat, h.lon] for h in self.hits],
            self.explanation,
            self.version,
            list(self.released),
            self.last_version_wm,
            self.raised_wm,
            self.due,
            self.withdrawn,
            self.causes,
        ]

    @classmethod
    def from_doc(cls, d: list[Any]) -> OpenAlert:
        return cls(
            alert_id=d[0],
            rule_id=d[1],
            skey=tuple(tuple(x) if isinstance(x, list) else x for x in d[2]),
            key=d[3],
            hits=[
                HitRec((float(t[0]), str(t[1])), hid, tuple(ev), lat, lon)
                for t, hid, ev, lat, lon in d[4]
            ],
            explanation=d[5],
            version=d[6],
            released=tuple(d[7]),
            last_version_wm=d[8],
            raised_wm=d[9],
            due=d[10],
            withdrawn=d[11],
            causes=list(d[12]),
        )


def group(hits: list[HitRec], span: float) -> list[list[HitRec]]:
    """Replay's grouping: in trigger order, a hit less than `span` after the first hit of the
    current group joins it; any other starts a new group."""
    out: list[list[HitRec]] = []
    for h in sorted(hits, key=lambda h: h.trigger):
        if out and h.trigger[0] - out[-1][0].trigger[0] < span:
            out[-1].append(h)
        else:
            out.append([h])
    return out


@dataclass
class AlertBook:
    """Every open alert of a partition's engine, by id, by suppression key, and by match."""

    alerts: dict[str, OpenAlert] = field(default_factory=dict)
    by_key: dict[str, dict[tuple[Any, ...], list[str]]] = field(default_factory=dict)
    by_hit: dict[str, str] = field(default_factory=dict)
    by_trigger: dict[tuple[str, Trigger], str] = field(default_factory=dict)
    """(rule id, trigger) -> the match decided at that event (one per event: replay's)."""
    due: list[tuple[float, str]] = field(default_factory=list)
    facts: dict[str, Fact] = field(default_factory=dict)
    """The evidence of open alerts, by id."""
    changed: set[str] | None = None
    """With tracking on (a set): the ids of alerts changed since the caller took them."""

    def touch(self, alert_id: str) -> None:
        if self.changed is not None:
            self.changed.add(alert_id)

    def under(self, rule_id: str, skey: tuple[Any, ...]) -> list[OpenAlert]:
        """The open alerts of one suppression key that still stand, by first trigger."""
        ids = self.by_key.get(rule_id, {}).get(skey, [])
        out = [self.alerts[a] for a in ids if a in self.alerts]
        return sorted((a for a in out if not a.withdrawn), key=lambda a: a.anchor)

    def add(self, alert: OpenAlert) -> None:
        self.alerts[alert.alert_id] = alert
        self.touch(alert.alert_id)
        ids = self.by_key.setdefault(alert.rule_id, {}).setdefault(alert.skey, [])
        if alert.alert_id not in ids:
            ids.append(alert.alert_id)
        for h in alert.hits:
            self.by_hit[h.hit_id] = alert.alert_id
            self.by_trigger[(alert.rule_id, h.trigger)] = h.hit_id

    def forget(self, alert: OpenAlert) -> None:
        self.alerts.pop(alert.alert_id, None)
        self.touch(alert.alert_id)
        keyed = self.by_key.get(alert.rule_id, {})
        ids = keyed.get(alert.skey)
        if ids is not None:
            if alert.alert_id in ids:
                ids.remove(alert.alert_id)
            if not ids:
                del keyed[alert.skey]
        for h in alert.hits:
            if self.by_hit.get(h.hit_id) == alert.alert_id:
                del self.by_hit[h.hit_id]
            if self.by_trigger.get((alert.rule_id, h.trigger)) == h.hit_id:
                del self.by_trigger[(alert.rule_id, h.trigger)]

    def schedule(self, alert: OpenAlert, due: float) -> None:
        if alert.due is None or due < alert.due:
            alert.due = due
            self.touch(alert.alert_id)
            heapq.heappush(self.due, (due, alert.alert_id))

    def due_by(self, watermark: float) -> Iterator[OpenAlert]:
        """Alerts whose held update is due at `watermark` (each once)."""
        heap = self.due
        while heap and heap[0][0] <= watermark:
            due, aid = heapq.heappop(heap)
            alert = self.alerts.get(aid)
            if alert is not None and alert.due == due:
                alert.due = None
                self.touch(aid)
                yield alert

    def referenced(self) -> set[str]:
        return {eid for a in self.alerts.values() for h in a.hits for eid in h.evidence}

    def prune_facts(self) -> None:
        keep = self.referenced()
        for eid in [e for e in self.facts if e not in keep]:
            del self.facts[eid]

    def snapshot(self) -> dict[str, Any]:
        return {"alerts": [a.doc() for a in self.alerts.values()]}

    def restore(self, data: dict[str, Any], facts: dict[str, Fact]) -> None:
        for d in data.get("alerts", []):
            alert = OpenAlert.from_doc(d)
            if not all(e in facts for h in alert.hits for e in h.evidence):
                continue
            for h in alert.hits:
                for e in h.evidence:
                    self.facts[e] = facts[e]
            self.add(alert)
            if alert.due is not None:
                heapq.heappush(self.due, (alert.due, alert.alert_id))


def standing(versions: list[Any]) -> dict[str, Any]:
    """The alerts that stand after these versions (alerts with `alert_id`, `version` and
    `change`, in any order): the newest version of each, unless it is a withdrawal."""
    newest: dict[str, Any] = {}
    for v in versions:
        held = newest.get(v.alert_id)
        if held is None or v.version > held.version:
            newest[v.alert_id] = v
    return {aid: v for aid, v in newest.items() if v.change != "withdrawn"}
