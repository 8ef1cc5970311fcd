"""What the rules did with one event: the engine's decisions for it, recorded during a replay.

Alerts are reproducible from the records they rest on, so replaying the input in event-time
order meets the decisions the pipeline made about an event, in the same order: which rules
took it, which it advanced or completed, and why the others did not. That holds for every
event that reached the pipeline before its watermark passed it; one that arrived behind it
was decided in arrival order (or dead-lettered as late, which `fusion explain --event` reads
from the dead-letter topic): the replay shows what the rules make of it in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import BinaryIO

from engine.correlate import CorrelateStage
from engine.engine import Engine, Route
from engine.explain import describe_selector, duration, key_field, selector_failure
from engine.facts import Fact
from engine.hits import Hit, RawAlert, alert_id
from engine.ingest import Rejection
from engine.replay import correlate_lines
from engine.rules import RuleSet


@dataclass
class RuleOutcome:
    """What one rule did with the event, and the alerts it is evidence of."""

    rule_id: str
    outcome: str
    """`not selected`, `too late`, `no key`, `taken`, `fired`, `suppressed`."""
    why: str
    alerts: list[str] = field(default_factory=list)


@dataclass
class EventTrace:
    """The decisions about one event over a replay."""

    event_id: str
    found: bool = False
    rejected: str | None = None
    duplicate: bool = False
    fact: Fact | None = None
    rules: dict[str, RuleOutcome] = field(default_factory=dict)
    alerts: list[RawAlert] = field(default_factory=list)


class TracingEngine(Engine):
    """The engine, recording its decisions about one event (every other event runs as usual)."""

    def __init__(self, ruleset: RuleSet, trace: EventTrace) -> None:
        super().__init__(ruleset)
        self.trace = trace

    def process(
        self, fact: Fact, route: Route | None = None, now: float | None = None
    ) -> list[RawAlert]:
        if fact.event_id == self.trace.event_id:
            self._classify(fact, route)
        return super().process(fact, route, now)

    def _classify(self, fact: Fact, route: Route | None) -> None:
        tr = self.trace
        tr.fact = fact
        rs = self.ruleset
        taking = rs.rules_taking(fact)
        if not tr.rules:
            for rule in rs.rules:
                if rule not in taking:
                    why = "; ".join(
                        f"({describe_selector(s)}): {selector_failure(s, fact)}"
                        for s in rule.selectors()
                    )
                    tr.rules[rule.id] = RuleOutcome(rule.id, "not selected", why)
        watermark = max(self.watermark, fact.ts)
        mine = taking if route is None else rs.rules_taking_for(fact, route.kind)
        for rule in mine:
            behind = watermark - fact.ts
            spec = rule.route_key()
            if behind > rule.allowed_lateness:
                tr.rules[rule.id] = RuleOutcome(
                    rule.id,
                    "too late",
                    f"{duration(behind)} behind the event-time watermark; the rule allows "
                    f"{duration(rule.allowed_lateness)}",
                )
            elif spec is not None and spec.value(fact) is None:
                tr.rules[rule.id] = RuleOutcome(
                    rule.id,
                    "no key",
                    f"the rule correlates by {spec.name} and the event has no "
                    f"{key_field(spec, fact)}",
                )
            elif rule.id not in tr.rules or tr.rules[rule.id].outcome == "not selected":
                tr.rules[rule.id] = RuleOutcome(
                    rule.id,
                    "taken",
                    "held in the rule's state, waiting for the rest of a match "
                    f"(for up to {duration(rule.horizon)} of event time)",
                )

    def _emit(self, hits: list[Hit], now: float, scope: str = "") -> list[RawAlert]:
        target = self.trace.event_id
        mine = [h for h in hits if any(f.event_id == target for f in h.evidence)]
        known = {
            id(h): alert_id(h.rule_id, [f.event_id for f in h.evidence]) in self._raised
            for h in mine
        }
        out = super()._emit(hits, now, scope)
        raised = {a.alert_id: a for a in out}
        for h in mine:
            aid = alert_id(h.rule_id, [f.event_id for f in h.evidence])
            rec = self.trace.rules.setdefault(h.rule_id, RuleOutcome(h.rule_id, "taken", ""))
            if aid in raised:
                rec.outcome = "fired"
                rec.why = "completed a match: it is evidence of the alert"
                if aid not in rec.alerts:
                    rec.alerts.append(aid)
                    self.trace.alerts.append(raised[aid])
            elif not known[id(h)] and rec.outcome != "fired":
                rec.outcome = "suppressed"
                rec.why = (
                    "completed a match, but an alert of this rule with the same "
                    "suppression values had been raised shortly before"
                )
        return out


def trace_event(
    src: BinaryIO, ruleset: RuleSet, event_id: str, *, partners: frozenset[str]
) -> EventTrace:
    """Replay a JSON-lines stream of events (as `engine.replay.correlate_file` does) and
    record what the rules did with `event_id`."""
    trace = EventTrace(event_id)
    stage = CorrelateStage(ruleset, dedup_window_s=math.inf, dedup_max_ids=10**9)
    stage.engine = TracingEngine(ruleset, trace)
    valid_before = False
    for eid, out in correlate_lines(src, ruleset, stage, partners=partners):
        if eid != event_id:
            continue
        trace.found = True
        if isinstance(out, Rejection):
            if not valid_before:
                trace.rejected = f"{out.kind}: {out.message}"
            continue
        trace.duplicate = trace.duplicate or (valid_before and bool(out.duplicates))
        valid_before = True
    stage.drain()
    return trace
