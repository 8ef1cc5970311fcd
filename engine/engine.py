"""The engine: rules over facts and an event-time watermark, with suppression and snapshots."""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from engine.correlators import CORRELATORS, Correlator
from engine.correlators.base import Part
from engine.errors import SnapshotError
from engine.explain import explain_hit
from engine.facts import Fact
from engine.geo import Grid
from engine.hits import Hit, RawAlert, alert_id
from engine.rules import RuleBase, RuleSet
from engine.versions import MAX_EVIDENCE, MAX_HITS, AlertBook, HitRec, OpenAlert, group

SEVERITY_BASE = {"low": 30, "medium": 50, "high": 70, "critical": 90}
SNAPSHOT_VERSION = 2
READS_SNAPSHOT_VERSIONS = (1, 2)
_NEW_RULE_FIELDS = {"corrections": None, "update_every": 30.0}
"""Rule fields added after snapshot version 1, with their defaults: a rule that leaves them
at the default is the same rule as one written before them."""


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
    """Matches that joined an alert already raised (an update, or nothing new)."""
    alerts: int = 0
    updates: int = 0
    withdrawals: int = 0
    refuted_late: int = 0
    """Records that refute an alert, taken after its corrections span: the alert stands."""


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
        # Suppression anchors read from a version-1 snapshot (before alert versions): a match
        # within one is suppressed as it was then.
        self._suppress: dict[str, dict[tuple[Any, ...], float]] = defaultdict(dict)
        self.book = AlertBook()
        self.refuted_late: list[tuple[str, str, tuple[str, ...]]] = []
        """(alert id, rule id, refuting event ids) taken after the corrections span, since the
        caller last read (and cleared) it."""
        self._raised: dict[str, float] = {}
        self._raised_changed: set[str] | None = None
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
                if rule.corrections is not None:
                    key = spec.value(fact) if spec is not None else None
                    hits.extend(correlator.on_late(fact, key, watermark))
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
        out = self._emit(hits, now)
        for alert in self.book.due_by(watermark):
            v = self._update(alert, now)
            if v is not None:
                out.append(v)
        if watermark - self._last_expiry >= self._expire_every:
            self.expire(watermark)
        return out

    def expire(self, watermark: float) -> None:
        """Drop all state no allowed event can still use (a scan: the engine throttles it)."""
        self._last_expiry = watermark
        for c in self.correlators.values():
            c.expire(watermark)
        self._expire_suppression(watermark)
        self._expire_alerts(watermark)

    def flush(self, now: float) -> list[RawAlert]:
        """End of input (replay): decide everything still waiting, as if time ran on."""
        alerts = []
        for c in self.correlators.values():
            hits = c.on_watermark(math.inf)
            alerts.extend(self._emit(hits, now))
        for alert in self.book.due_by(math.inf):
            v = self._update(alert, now)
            if v is not None:
                alerts.append(v)
        return alerts

    # -- alerts --------------------------------------------------------------------------

    def _emit(self, hits: list[Hit], now: float, scope: str = "") -> list[RawAlert]:
        if not hits:
            return []
        out: list[RawAlert] = []
        for hit in hits:
            rule = self.ruleset.by_id[hit.rule_id]
            rule_stats = self.stats.rules[rule.id]
            ev = tuple(sorted(hit.evidence, key=lambda f: (f.ts, f.event_id)))
            hid = alert_id(rule.id, [f.event_id for f in ev])
            if hit.refuted_by:
                self._refute(rule, hit, hid, now, out)
                continue
            rule_stats.hits += 1
            if hid in self._raised:
                continue  # this match was reported already
            last = ev[-1]
            span = rule.suppress.for_ if rule.suppress is not None else 0.0
            skey = self._suppress_key(rule, hit, scope) if rule.suppress is not None else (hid,)
            legacy = self._suppress.get(rule.id, {}).get(skey)
            if legacy is not None and abs(last.ts - legacy) < span:
                rule_stats.suppressed += 1
                continue
            self._remember(hid, last.ts)
            book = self.book
            for f in ev:
                book.facts[f.event_id] = f
            rec = HitRec(
                (last.ts, last.event_id), hid, tuple(f.event_id for f in ev), hit.lat, hit.lon
            )
            replaced = book.by_trigger.get((rule.id, rec.trigger))
            if replaced is not None and replaced != hid and replaced in book.by_hit:
                # a record taken late changed the match decided at this event
                self._drop_hit(rule, replaced, now, out, None, rec.evidence)
            book.by_trigger[(rule.id, rec.trigger)] = hid
            standing = book.under(rule.id, skey)
            before = [a for a in standing if a.anchor <= rec.trigger]
            after = [a for a in standing if a.anchor > rec.trigger]
            if before and rec.trigger[0] - before[-1].anchor[0] < span:
                rule_stats.suppressed += 1
                self._join(rule, before[-1], rec, now, out)
            elif after and after[0].anchor[0] - rec.trigger[0] < span:
                # replay would have seen this match first: it heads an alert of its own
                self._regroup(rule, skey, after, [rec], now, out, reason=None, causes=rec.evidence)
            else:
                alert = OpenAlert(hid, rule.id, skey, hit.key, [rec], explain_hit(rule, hit, ev))
                book.add(alert)
                out.append(self._version(rule, alert, "raised", now, None))
        return out

    def _join(
        self, rule: RuleBase, alert: OpenAlert, rec: HitRec, now: float, out: list[RawAlert]
    ) -> None:
        """A match within an alert's suppression span: its evidence joins the alert, released
        at once or when the rule's update span since the last version has passed."""
        if len(alert.hits) >= MAX_HITS:
            return
        self.book.touch(alert.alert_id)
        alert.hits.append(rec)
        if rec.trigger < alert.hits[-2].trigger:
            alert.hits.sort(key=lambda h: h.trigger)
        self.book.by_hit[rec.hit_id] = alert.alert_id
        new = [e for e in rec.evidence if e not in alert.ids]
        if not new:
            return  # nothing new
        alert.ids.update(new)
        facts = self.book.facts
        if len(alert.released) >= MAX_EVIDENCE:
            last = facts[alert.released[-1]]
            if all((facts[e].ts, e) > (last.ts, last.event_id) for e in new):
                return  # all of it after the cap
        if self._evidence(alert) == alert.released:
            return  # nothing new within the cap
        alert.causes.extend(e for e in rec.evidence if e not in alert.released)
        due = alert.last_version_wm + rule.update_every
        if self.watermark >= due:
            v = self._update(alert, now)
            if v is not None:
                out.append(v)
        else:
            self.book.schedule(alert, due)

    def _update(self, alert: OpenAlert, now: float) -> RawAlert | None:
        rule = self.ruleset.by_id.get(alert.rule_id)
        if rule is None or alert.withdrawn or self._evidence(alert) == alert.released:
            return None
        return self._version(rule, alert, "updated", now, None)

    def _refute(self, rule: RuleBase, hit: Hit, hid: str, now: float, out: list[RawAlert]) -> None:
        """A correlator reports that a match it reported no longer holds."""
        book = self.book
        aid = book.by_hit.get(hid)
        alert = book.alerts.get(aid) if aid is not None else None
        if alert is None or alert.withdrawn:
            return
        causes = tuple(f.event_id for f in hit.refuted_by)
        if self.watermark - alert.raised_wm > (rule.corrections or 0.0):
            self.stats.rules[rule.id].refuted_late += 1
            self.refuted_late.append((alert.alert_id, rule.id, causes))
            return
        self._drop_hit(rule, hid, now, out, hit.reason, causes)

    def _drop_hit(
        self,
        rule: RuleBase,
        hid: str,
        now: float,
        out: list[RawAlert],
        reason: str | None,
        causes: tuple[str, ...],
    ) -> None:
        """A match no longer holds: its alert (and those after it) are grouped again."""
        book = self.book
        alert = book.alerts[book.by_hit[hid]]
        standing = [a for a in book.under(rule.id, alert.skey) if a.anchor >= alert.anchor]
        hits = [h for a in standing for h in a.hits if h.hit_id != hid]
        del book.by_hit[hid]
        self._regroup(rule, alert.skey, standing, hits, now, out, reason=reason, causes=causes)

    def _regroup(
        self,
        rule: RuleBase,
        skey: tuple[Any, ...],
        old: list[OpenAlert],
        hits: list[HitRec],
        now: float,
        out: list[RawAlert],
        *,
        reason: str | None,
        causes: tuple[str, ...],
    ) -> None:
        """Group the matches of `old` alerts (and new ones) again as replay would, and release
        each difference: raised, updated or withdrawn."""
        book = self.book
        for a in old:
            book.touch(a.alert_id)
        span = rule.suppress.for_ if rule.suppress is not None else 0.0
        if len(old) == 1 and not rule.suppress:
            span = math.inf  # one alert per match: it keeps whatever is left of itself
        merged = {h.hit_id: h for h in hits}
        for a in old:
            for h in a.hits:
                if h.hit_id in book.by_hit:
                    merged.setdefault(h.hit_id, h)
        hits = list(merged.values())
        groups = group(hits, span)
        head_of = {h.hit_id: g[0].hit_id for g in groups for h in g}
        kept = {g[0].hit_id: g for g in groups}
        by_id = {a.alert_id: a for a in old}
        for a in old:
            if a.alert_id in kept:
                continue
            a.withdrawn = True
            superseded_by = head_of.get(a.hits[0].hit_id)
            for h in a.hits:
                if book.by_hit.get(h.hit_id) == a.alert_id:
                    del book.by_hit[h.hit_id]
            why = reason or "a record taken late made an earlier match: it heads the alert now"
            if superseded_by is None and reason is None:
                why = "no match is left"
            a.causes = list(causes)
            out.append(self._version(rule, a, "withdrawn", now, superseded_by, why, keep=True))
        for head, g in kept.items():
            existing = by_id.get(head)
            if existing is not None:
                existing.hits = list(g)
                existing.reindex()
                book.add(existing)
                if self._evidence(existing) != existing.released:
                    existing.causes.extend(causes)
                    out.append(self._version(rule, existing, "updated", now, None, reason))
                continue
            ev = tuple(book.facts[e] for e in g[0].evidence)
            first = Hit(rule.id, ev, None, g[0].lat, g[0].lon)
            key = old[0].key if old else None
            alert = OpenAlert(head, rule.id, skey, key, list(g), explain_hit(rule, first, ev))
            prior = book.alerts.get(head)
            if prior is not None:
                alert.version = prior.version
            book.add(alert)
            out.append(self._version(rule, alert, "raised", now, None))

    def _evidence(self, alert: OpenAlert) -> tuple[str, ...]:
        facts = self.book.facts
        ids = sorted(alert.ids, key=lambda e: (facts[e].ts, e))
        return tuple(ids[:MAX_EVIDENCE])

    def _version(
        self,
        rule: RuleBase,
        alert: OpenAlert,
        change: str,
        now: float,
        superseded_by: str | None,
        reason: str | None = None,
        *,
        keep: bool = False,
    ) -> RawAlert:
        """The next version of `alert` (`keep`: with the evidence of the last one)."""
        rule_stats = self.stats.rules[rule.id]
        ids = alert.released if keep else self._evidence(alert)
        facts = self.book.facts
        ev = tuple(facts[e] for e in ids)
        revision: dict[str, Any] | None = None
        if change == "raised":
            rule_stats.alerts += 1
            alert.raised_wm = self.watermark
        else:
            if change == "updated":
                rule_stats.updates += 1
                added = [e for e in ids if e not in alert.released]
                left = [e for e in alert.released if e not in ids]
                said = reason or f"{len(added)} more events joined the match"
                if left and reason is None:
                    said = f"{len(added)} events joined and {len(left)} left the match"
                revision = {"reason": said, "records": sorted(set(alert.causes)) or added}
            else:
                rule_stats.withdrawals += 1
                revision = {
                    "reason": reason or "withdrawn",
                    "records": sorted(set(alert.causes)),
                    "superseded_by": superseded_by,
                }
        self.book.touch(alert.alert_id)
        alert.version += 1
        alert.released = ids
        alert.last_version_wm = self.watermark
        alert.causes = []
        alert.due = None
        lat, lon = alert.location()
        return RawAlert(
            alert_id=alert.alert_id,
            rule_id=rule.id,
            title=rule.title,
            severity=rule.severity,
            score=score(rule, ev),
            raised_at=now,
            first_seen=ev[0].ts,
            last_seen=ev[-1].ts,
            lat=lat,
            lon=lon,
            evidence=ev,
            key=alert.key,
            extra_recipients=tuple(rule.recipients),
            explanation=alert.explanation,
            version=alert.version,
            change=change,
            revision=revision,
        )

    def _expire_alerts(self, watermark: float) -> None:
        """Forget alerts no match or correction can reach any more."""
        book = self.book
        for alert in list(book.alerts.values()):
            rule = self.ruleset.by_id.get(alert.rule_id)
            if rule is None:
                book.forget(alert)
                continue
            span = rule.suppress.for_ if rule.suppress is not None else 0.0
            # a corrections span longer than any correction can come: a refutation after the
            # span is still recognised, counted and logged
            corrections = rule.corrections or 0.0
            reach = span + rule.allowed_lateness + rule.update_every + corrections
            if alert.due is None and watermark - alert.anchor[0] > reach:
                if watermark - alert.raised_wm > 2 * corrections:
                    book.forget(alert)
        book.prune_facts()

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
        changed = self._raised_changed
        if changed is not None:
            changed.add(aid)
        if len(raised) > self._max_raised:
            for k in list(raised)[: len(raised) - self._max_raised]:
                del raised[k]
                if changed is not None:
                    changed.add(k)

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
        for eid, f in self.book.facts.items():
            if eid not in facts:
                facts[eid] = f.doc
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
            "alerts": self.book.snapshot(),
            "meta": meta or {},
        }
        return doc

    # -- a per-key changelog ---------------------------------------------------------------
    # Each rule's state per key, each open alert and each remembered match is one part; the
    # scalars are in `head`. `assemble` makes what `snapshot_doc` returns from the parts.

    def track(self) -> None:
        """Note from now on what changes, for `take_changes`."""
        for c in self.correlators.values():
            c.track()
        self.book.changed = set()
        self._raised_changed = set()

    def take_changes(self, full: bool = False) -> Iterator[Part]:
        """The parts changed since the last call (`full`: every part there is)."""
        for rid, c in self.correlators.items():
            for name, value, facts in c.take_changes(full):
                yield f"c/{rid}/{name}", value, facts
        book = self.book
        changed = book.changed if book.changed is not None else set()
        book.changed = set()
        for aid in set(book.alerts) if full else changed:
            alert = book.alerts.get(aid)
            if alert is None:
                yield f"a/{aid}", None, []
            else:
                yield f"a/{aid}", alert.doc(), [book.facts[e] for e in alert.ids]
        raised = self._raised
        marked = self._raised_changed if self._raised_changed is not None else set()
        self._raised_changed = set()
        for aid in list(raised) if full else marked:
            yield f"r/{aid}", raised.get(aid), []

    def head(self) -> dict[str, Any]:
        """The state not kept in parts."""
        return {
            "v": SNAPSHOT_VERSION,
            "watermark": None if math.isinf(self.watermark) else self.watermark,
            "rules": self._rule_docs,
            "suppress": {
                rid: [[list(k), a] for k, a in anchors.items()]
                for rid, anchors in self._suppress.items()
            },
        }

    def assemble(
        self, head: dict[str, Any], parts: dict[str, Any], facts: dict[str, Any]
    ) -> dict[str, Any]:
        """What `snapshot_doc` returns, from `head` and the parts' values by name (rules
        whose definition changed since are left out: `restore_doc` empties them)."""
        keyed: dict[str, list[dict[str, Any]]] = defaultdict(list)
        rests: dict[str, Any] = {}
        alerts: list[Any] = []
        raised: list[list[Any]] = []
        for name, value in parts.items():
            kind, _, rest = name.partition("/")
            if kind == "c":
                rid, _, part = rest.partition("/")
                if part == "*":
                    rests[rid] = value
                else:
                    keyed[rid].append(value)
            elif kind == "a":
                alerts.append(value)
            elif kind == "r":
                raised.append([rest, value])
        rules = head["rules"]
        state = {
            rid: c.assemble(keyed.get(rid, []), rests.get(rid))
            for rid, c in self.correlators.items()
            if _same_rule(rules.get(rid), self._rule_docs[rid])
        }
        state = {rid: s for rid, s in state.items() if s is not None}
        return {
            **head,
            "facts": facts,
            "state": state,
            "raised": raised,
            "alerts": {"alerts": alerts},
            "meta": {},
        }

    def restore(self, blob: bytes) -> dict[str, Any]:
        """Load a snapshot; rules whose definition changed since start empty. Returns its meta."""
        try:
            doc = orjson.loads(zlib.decompress(blob))
        except (zlib.error, orjson.JSONDecodeError) as e:
            raise SnapshotError(f"snapshot is not readable: {e}") from e
        return self.restore_doc(doc)

    def restore_doc(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Load what `snapshot_doc` returned; returns its meta."""
        if doc.get("v") not in READS_SNAPSHOT_VERSIONS:
            raise SnapshotError(f"snapshot version {doc.get('v')} is not {SNAPSHOT_VERSION}")
        try:
            facts = {eid: Fact.from_doc(d) for eid, d in doc["facts"].items()}
        except (KeyError, ValueError) as e:
            raise SnapshotError(f"snapshot holds an invalid event: {e}") from e
        watermark = doc.get("watermark")
        if watermark is not None and watermark > self.watermark:
            self.watermark = watermark
        same = {
            r.id
            for r in self.ruleset.rules
            if _same_rule(doc["rules"].get(r.id), self._rule_docs[r.id])
        }
        for rid in same:
            if rid not in doc["state"]:
                continue  # nothing of it in a changelog: it starts empty
            self.correlators[rid].restore(doc["state"][rid], facts)
            for k, a in doc["suppress"].get(rid, []):
                self._suppress[rid][tuple(tuple(x) if isinstance(x, list) else x for x in k)] = a
        for aid, ts in doc["raised"]:
            self._raised[aid] = ts
        alerts = doc.get("alerts")
        if alerts is not None:
            kept = {"alerts": [a for a in alerts["alerts"] if a[1] in same]}
            self.book.restore(kept, facts)
        meta: dict[str, Any] = doc.get("meta") or {}
        return meta


def _same_rule(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether a rule as a snapshot recorded it is the rule loaded now (fields added since,
    left at their defaults, do not make it another rule)."""
    if old is None:
        return False
    if old == new:
        return True
    trimmed = {k: v for k, v in new.items() if k in old or _NEW_RULE_FIELDS.get(k, object()) != v}
    return old == trimmed
