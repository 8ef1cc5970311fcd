"""The engine: rules over facts and an event-time watermark, with suppression and snapshots."""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from engine.correlators import CORRELATORS, Correlator
from engine.errors import SnapshotError
from engine.explain import explain_hit
from engine.facts import Fact
from engine.geo import Grid
from engine.hits import Hit, RawAlert, alert_id
from engine.rules import RuleBase, RuleSet

SEVERITY_BASE = {"low": 30, "medium": 50, "high": 70, "critical": 90}
SNAPSHOT_VERSION = 1


class Route(NamedTuple):
    """Which rules a routed copy of a fact is for: an entity key kind, or `geo` (with owner),
    and its routing key (geographic suppression is scoped to it, so that which regions share
    a partition never changes which alerts are raised)."""

    kind: str
    owner: bool = True
    key: str = ""


@dataclass
class RuleStats:
    """Counters per rule, read by the metrics edge."""

    facts: int = 0
    late: int = 0
    hits: int = 0
    suppressed: int = 0
    alerts: int = 0


@dataclass
class EngineStats:
    rules: dict[str, RuleStats] = field(default_factory=lambda: defaultdict(RuleStats))


# The Admiralty grade of a tip as a factor on the score: one per source reliability (A-F)
# times one per information credibility (1-6). "Fairly reliable" (C) and "possibly true" (3)
# are neutral, and so is "cannot be judged" (F, 6): an ungraded tip neither raises nor
# lowers the score. From A1 (x1.44) to E5 (x0.49); never zero.
RELIABILITY_FACTOR = {"A": 1.2, "B": 1.1, "C": 1.0, "D": 0.85, "E": 0.7, "F": 1.0}
CREDIBILITY_FACTOR = {1: 1.2, 2: 1.1, 3: 1.0, 4: 0.85, 5: 0.7, 6: 1.0}


def grade_factor(reliability: str, credibility: int) -> float:
    """The score factor of one tip's Admiralty grade (`RELIABILITY_FACTOR` x
    `CREDIBILITY_FACTOR`)."""
    return RELIABILITY_FACTOR.get(reliability, 1.0) * CREDIBILITY_FACTOR.get(credibility, 1.0)


def score(rule: RuleBase, evidence: tuple[Fact, ...]) -> int:
    """0-100 from the rule's severity and fixed factors of the evidence (never `eval`): the
    confidence of the events that carry one, and the mean grade factor of the tips."""
    s = rule.score
    base = s.base if s.base is not None else SEVERITY_BASE[rule.severity]
    bonus = min(s.max_bonus, s.per_event * max(0, len(evidence) - 2))
    value = float(base + bonus)
    if s.confidence:
        confs = [c for f in evidence if (c := f.get("confidence")) is not None]
        if confs:
            value *= 0.5 + 0.5 * (sum(confs) / len(confs))
    if s.grade:
        grades = [
            grade_factor(r, c)
            for f in evidence
            if (r := f.get("reliability")) is not None and (c := f.get("credibility")) is not None
        ]
        if grades:
            value *= sum(grades) / len(grades)
    return max(0, min(100, round(value)))


class Engine:
    """Evaluates a rule set incrementally; holds all correlation state, which it can snapshot."""

    def __init__(
        self,
        ruleset: RuleSet,
        *,
        max_remembered_alerts: int = 200_000,
        expire_every_s: float = 300.0,
    ) -> None:
        self.ruleset = ruleset
        self.correlators: dict[str, Correlator[Any]] = {
            r.id: CORRELATORS[r.type_name](r) for r in ruleset.rules
        }
        self.watermark = -math.inf
        self.stats = EngineStats()
        self._suppress: dict[str, dict[tuple[Any, ...], float]] = defaultdict(dict)
        self._raised: dict[str, float] = {}
        self._max_raised = max_remembered_alerts
        self._by_type: dict[str, list[RuleBase]] = defaultdict(list)
        for r in ruleset.rules:
            for t in {t for s in r.selectors() for t in s.type}:
                self._by_type[t].append(r)
        self._last_expiry = -math.inf
        self._expire_every = expire_every_s
        # The rules as snapshots record them (to tell, on restore, which rules changed).
        self._rule_docs = {r.id: r.model_dump(mode="json", by_alias=True) for r in ruleset.rules}
        # Per rule, as plain values: pydantic attribute access is slow on the hot path.
        self._plans: dict[str, tuple[str, str, Any, float, Correlator[Any]]] = {}
        for r in ruleset.rules:
            spec = r.route_key()
            kind = spec.name if spec is not None else "geo"
            self._plans[r.id] = (r.id, kind, spec, r.allowed_lateness, self.correlators[r.id])

    # -- feeding -------------------------------------------------------------------------

    def process(
        self, fact: Fact, route: Route | None = None, now: float | None = None
    ) -> list[RawAlert]:
        """Take one fact (for the rules of `route`, or all rules); return the alerts it raises."""
        if fact.ts > self.watermark:
            self.watermark = fact.ts
        watermark = self.watermark
        hits: list[Hit] = []
        owner = route.owner if route is not None else True
        plans = self._plans
        ruleset = self.ruleset
        if route is None:
            rules = ruleset.rules_taking(fact)
        else:
            rules = ruleset.rules_taking_for(fact, route.kind)
        for rule in rules:
            rid, _kind, spec, lateness, correlator = plans[rule.id]
            rule_stats = self.stats.rules[rid]
            if watermark - fact.ts > lateness:
                rule_stats.late += 1
                continue
            key = spec.value(fact) if spec is not None else None
            if spec is not None and key is None:
                continue
            rule_stats.facts += 1
            hits.extend(correlator.on_fact(fact, key, owner, watermark))
        scope = route.key if route is not None else ""
        return self._emit(hits, fact.ts if now is None else now, scope)

    def advance(self, now: float) -> list[RawAlert]:
        """Move the watermark to `now` (if later); fire what waited for it and expire state."""
        if now > self.watermark:
            self.watermark = now
        watermark = self.watermark
        hits: list[Hit] = []
        for c in self.correlators.values():
            hits.extend(c.on_watermark(watermark))
        if watermark - self._last_expiry >= self._expire_every:
            self.expire(watermark)
        return self._emit(hits, now)

    def expire(self, watermark: float) -> None:
        """Drop all state no allowed event can still use (a scan: the engine throttles it)."""
        self._last_expiry = watermark
        for c in self.correlators.values():
            c.expire(watermark)
        self._expire_suppression(watermark)

    def flush(self, now: float) -> list[RawAlert]:
        """End of input (replay): decide everything still waiting, as if time ran on."""
        alerts = []
        for c in self.correlators.values():
            hits = c.on_watermark(math.inf)
            alerts.extend(self._emit(hits, now))
        return alerts

    # -- alerts --------------------------------------------------------------------------

    def _emit(self, hits: list[Hit], now: float, scope: str = "") -> list[RawAlert]:
        if not hits:
            return []
        out: list[RawAlert] = []
        for hit in hits:
            rule = self.ruleset.by_id[hit.rule_id]
            rule_stats = self.stats.rules[rule.id]
            rule_stats.hits += 1
            ev = tuple(sorted(hit.evidence, key=lambda f: (f.ts, f.event_id)))
            aid = alert_id(rule.id, [f.event_id for f in ev])
            if aid in self._raised:
                continue
            last = ev[-1].ts
            if rule.suppress is not None:
                skey = self._suppress_key(rule, hit, scope)
                anchors = self._suppress[rule.id]
                anchor = anchors.get(skey)
                if anchor is not None and abs(last - anchor) < rule.suppress.for_:
                    rule_stats.suppressed += 1
                    continue
                anchors[skey] = last
            self._remember(aid, last)
            rule_stats.alerts += 1
            out.append(
                RawAlert(
                    alert_id=aid,
                    rule_id=rule.id,
                    title=rule.title,
                    severity=rule.severity,
                    score=score(rule, ev),
                    raised_at=now,
                    first_seen=ev[0].ts,
                    last_seen=last,
                    lat=hit.lat,
                    lon=hit.lon,
                    evidence=ev,
                    key=hit.key,
                    extra_recipients=tuple(rule.recipients),
                    explanation=explain_hit(rule, hit, ev),
                )
            )
        return out

    def _suppress_key(self, rule: RuleBase, hit: Hit, scope: str) -> tuple[Any, ...]:
        trigger = hit.evidence[-1]
        parts: list[Any] = [scope] if rule.geo else []
        for name in rule.suppress.by if rule.suppress else ():
            if name == "key":
                parts.append(hit.key)
            elif name == "area":  # cells twice the rule's reach across (2 km without one)
                reach = rule.reach_km if rule.reach_km is not None else 1.0
                parts.append(Grid(2 * reach).cell(hit.lat, hit.lon))
            else:
                parts.append(trigger.get(name))
        return tuple(parts)

    def _remember(self, aid: str, ts: float) -> None:
        raised = self._raised
        raised[aid] = ts
        if len(raised) > self._max_raised:
            for k in list(raised)[: len(raised) - self._max_raised]:
                del raised[k]

    def _expire_suppression(self, watermark: float) -> None:
        for rule_id, anchors in self._suppress.items():
            rule = self.ruleset.by_id.get(rule_id)
            if rule is None or rule.suppress is None:
                continue
            horizon = watermark - rule.suppress.for_ - rule.allowed_lateness
            for k in [k for k, a in anchors.items() if a < horizon]:
                del anchors[k]

    # -- introspection -------------------------------------------------------------------

    def state_size(self) -> dict[str, tuple[int, int, int]]:
        """Per rule: (keys, partial matches, evictions so far)."""
        return {rid: (*c.size(), c.evictions()) for rid, c in self.correlators.items()}

    # -- snapshots -----------------------------------------------------------------------

    def snapshot(self, meta: dict[str, Any] | None = None) -> bytes:
        """All state as compressed JSON: facts once by id, each rule's state by reference."""
        doc = self.snapshot_doc(meta)
        return zlib.compress(orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS), 1)

    def snapshot_doc(self, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """All state as a JSON-able object (see `snapshot`)."""
        facts: dict[str, Any] = {}
        for c in self.correlators.values():
            for f in c.facts():
                if f.event_id not in facts:
                    facts[f.event_id] = f.doc
        doc = {
            "v": SNAPSHOT_VERSION,
            "watermark": None if math.isinf(self.watermark) else self.watermark,
            "rules": self._rule_docs,
            "facts": facts,
            "state": {rid: c.snapshot() for rid, c in self.correlators.items()},
            "suppress": {
                rid: [[list(k), a] for k, a in anchors.items()]
                for rid, anchors in self._suppress.items()
            },
            "raised": list(self._raised.items()),
            "meta": meta or {},
        }
        return doc

    def restore(self, blob: bytes) -> dict[str, Any]:
        """Load a snapshot; rules whose definition changed since start empty. Returns its meta."""
        try:
            doc = orjson.loads(zlib.decompress(blob))
        except (zlib.error, orjson.JSONDecodeError) as e:
            raise SnapshotError(f"snapshot is not readable: {e}") from e
        return self.restore_doc(doc)

    def restore_doc(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Load what `snapshot_doc` returned; returns its meta."""
        if doc.get("v") != SNAPSHOT_VERSION:
            raise SnapshotError(f"snapshot version {doc.get('v')} is not {SNAPSHOT_VERSION}")
        try:
            facts = {eid: Fact.from_doc(d) for eid, d in doc["facts"].items()}
        except (KeyError, ValueError) as e:
            raise SnapshotError(f"snapshot holds an invalid event: {e}") from e
        watermark = doc.get("watermark")
        if watermark is not None and watermark > self.watermark:
            self.watermark = watermark
        same = {r.id for r in self.ruleset.rules if doc["rules"].get(r.id) == self._rule_docs[r.id]}
        for rid in same:
            self.correlators[rid].restore(doc["state"][rid], facts)
            for k, a in doc["suppress"].get(rid, []):
                self._suppress[rid][tuple(tuple(x) if isinstance(x, list) else x for x in k)] = a
        for aid, ts in doc["raised"]:
            self._raised[aid] = ts
        meta: dict[str, Any] = doc.get("meta") or {}
        return meta
