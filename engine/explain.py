"""Why a rule fired: the engine's record of a match, in words an officer can check.

Made when the alert is raised, from the rule and the evidence the correlator matched: each
line records the events and the field it rests on, so that the release step can give each
destination only what rests on what it receives (`released`). The matched key is named by
the evidence field that holds it; the release step points at that field as released (a
pseudonym across the border).

What holds for every rule type is said here; what a type measures (distances, counts, gaps,
an absence) is said by its own module, through the hooks of `RuleBase`: `roles`, `summary`
and `explain`, which adds to an `Explanation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from engine.facts import Fact
from engine.hits import Hit
from engine.rules import KeySpec, Role, RuleBase
from engine.selectors import Condition, Selector

PERSONAL = frozenset({"plate", "person_ref", "serial", "location", "text"})
"""Fields whose values `selector_failure` does not repeat."""

_OPS = (
    ("eq", "= {}"),
    ("ne", "≠ {}"),
    ("in_", "in {}"),
    ("not_in", "not in {}"),
    ("gt", "> {}"),
    ("gte", "≥ {}"),
    ("lt", "< {}"),
    ("lte", "≤ {}"),
)


def duration(seconds: float) -> str:
    """`90 s`, `12 min`, `3.5 h`, `2 d`: short and exact enough to check."""
    s = abs(seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 2 * 3600:
        return f"{s / 60:.0f} min" if s % 60 == 0 else f"{s / 60:.1f} min"
    if s < 2 * 86400:
        return f"{s / 3600:g} h" if s % 3600 == 0 else f"{s / 3600:.1f} h"
    return f"{s / 86400:g} d" if s % 86400 == 0 else f"{s / 86400:.1f} d"


def describe_condition(name: str, cond: Condition) -> str:
    """`sensor_kind ≠ inspection`, `border_km ≤ 1`, `plate present`."""
    parts = []
    if cond.exists is not None:
        parts.append("present" if cond.exists else "absent")
    for attr, fmt in _OPS:
        v = getattr(cond, attr)
        if v is not None:
            shown = ", ".join(map(str, v)) if isinstance(v, list) else v
            parts.append(fmt.format(f"[{shown}]" if isinstance(v, list) else shown))
    return f"{name} {' and '.join(parts)}" if parts else name


def describe_selector(sel: Selector) -> str:
    """`detection with plate present, sensor_kind = inspection` (made once per selector)."""
    return sel.described(_describe_selector)


def _describe_selector(sel: Selector) -> str:
    what = " or ".join(sel.type)
    if not sel.where:
        return what
    return f"{what} with " + ", ".join(describe_condition(n, c) for n, c in sel.where.items())


def describe_selectors(sels: Sequence[Selector]) -> str:
    return " or ".join(
        f"({describe_selector(s)})" if len(sels) > 1 else describe_selector(s) for s in sels
    )


def selector_failure(sel: Selector, fact: Fact) -> str:
    """Why one selector does not take the fact (its first failing test)."""
    if fact.event_type not in sel.type:
        return f"it takes {' or '.join(sel.type)}, not {fact.event_type}"
    for name, cond in sel.where.items():
        value = fact.get(name)
        if not cond.test(value):
            shown = "absent" if value is None else ("set" if name in PERSONAL else repr(value))
            return f"needs {describe_condition(name, cond)} ({name} is {shown})"
    return "it matches"


class Line(TypedDict):
    """One line of an explanation (`said`)."""

    text: str
    refs: list[str]
    vague: str | None
    needs: str | None


def said(
    text: str, refs: tuple[str, ...] = (), vague: str | None = None, needs: str | None = None
) -> Line:
    """One line of an explanation, as the engine records it: `text` rests on the events
    `refs` (and, if `needs` names a field, on their values of it); a destination that does
    not receive all of them, or not that field as is, gets `vague` instead (or nothing)."""
    return {"text": text, "refs": list(refs), "vague": vague, "needs": needs}


def at_most(window: float) -> str:
    """`(at most 2 h)`: the bound a measured span is held to."""
    return f"(at most {duration(window)})"


def key_field(key: KeySpec | None, fact: Fact) -> str | None:
    if key is None:
        return None
    return key.fields.get(fact.event_type, key.name)


@dataclass(slots=True)
class Entry:
    """One event of the evidence in an explanation: its role in the rule, the lines it met."""

    role: str
    met: list[Line] = field(default_factory=list)


@dataclass(slots=True)
class Explanation:
    """An alert's explanation while the engine makes it. `explain_hit` puts in what holds for
    every rule type (the selector each event matched, the shared key); the rule type's
    `explain` hook adds its conditions and the lines each event met, and may set the window
    it examined and the absence it checked."""

    hit: Hit
    evidence: tuple[Fact, ...]
    """The hit's evidence in (time, id) order."""
    entries: dict[str, Entry]
    """Per event id of the evidence."""
    window_start: float
    window_end: float
    conditions: list[Line] = field(default_factory=list)
    absence_until: float | None = None
    """Until when the absence of an event was checked."""
    absence_ref: str | None = None
    """The event that absence is measured from."""

    @property
    def every(self) -> tuple[str, ...]:
        """The ids of all the evidence (what a line about all of it rests on)."""
        return tuple(f.event_id for f in self.evidence)

    @property
    def span(self) -> float:
        """From the first event time of the evidence to the last."""
        return self.evidence[-1].ts - self.evidence[0].ts

    def role(self, fact: Fact) -> str:
        """The event's role in the rule."""
        return self.entries[fact.event_id].role

    def count(self, role: str) -> int:
        """How many events of the evidence have this role."""
        return sum(1 for e in self.entries.values() if e.role == role)

    def met(self, fact: Fact, line: Line) -> None:
        """A line about one event of the evidence."""
        self.entries[fact.event_id].met.append(line)

    def condition(self, line: Line) -> None:
        """A line about the match as a whole."""
        self.conditions.append(line)


def _role_of(roles: list[Role], fact: Fact) -> str:
    """The first role that takes the fact."""
    return next((r.name for r in roles if any(s.matches(fact) for s in r.select)), "event")


def _summary(rule: RuleBase, roles: list[Role]) -> str:
    """The rule's conditions in words, then what each of its roles takes."""
    named = "; ".join(f"{r.name}: {describe_selectors(r.select)}" for r in roles)
    conditions = rule.summary()
    return f"{conditions} ({named})" if conditions else named


def explain_hit(rule: RuleBase, hit: Hit, evidence: tuple[Fact, ...]) -> dict[str, Any]:
    """The explanation of an alert, before release (see `released` for one destination's;
    times as epoch seconds).

    `evidence` is the hit's evidence in (time, id) order."""
    key = rule.route_key()
    roles = rule.roles()
    first, last = evidence[0], evidence[-1]
    entries = {f.event_id: Entry(_role_of(roles, f)) for f in evidence}
    ex = Explanation(hit, evidence, entries, first.ts, first.ts + rule.window)
    selectors = {r.name: r.select for r in roles}
    for f in evidence:
        match = next((s for s in selectors.get(ex.role(f), ()) if s.matches(f)), None)
        if match is not None:
            ex.met(f, said(f"is a {describe_selector(match)}"))
    if key is not None:
        ex.condition(said(f"every event has the same {key.name}"))
        for f in evidence:
            ex.met(f, said(f"{key_field(key, f)} is the matched {key.name}"))
    rule.explain(ex)
    return {
        "rule_type": rule.type_name,
        "summary": _summary(rule, roles),
        "window_start": ex.window_start,
        "window_end": max(ex.window_end, last.ts),
        "key": key.name if key is not None else None,
        "key_fields": {f.event_id: key_field(key, f) for f in evidence} if key else {},
        "conditions": ex.conditions,
        "absence_checked_until": ex.absence_until,
        "absence_ref": ex.absence_ref,
        "evidence": [
            {
                "event_id": f.event_id,
                "role": entries[f.event_id].role,
                "met": entries[f.event_id].met,
            }
            for f in evidence
        ],
    }


def released(
    raw: dict[str, Any] | None,
    evidence: list[dict[str, Any]],
    as_is: set[tuple[str, str]],
    times: dict[str, float],
) -> dict[str, Any] | None:
    """The explanation for one destination (times still epoch seconds): only the evidence it
    received; a line resting on an event it did not receive, or on a field it did not
    receive as is (a generalised location: the distances would undo the generalisation),
    in its vague form or left out; the matched key pointed at where this destination's copy
    holds it. `as_is` holds (event id, field) released unchanged; `times` the event times
    of the evidence released."""
    if raw is None:
        return None
    at = {e["event_id"]: i for i, e in enumerate(evidence)}

    def lines(entries: list[dict[str, Any]]) -> list[str]:
        out = []
        for e in entries:
            refs = e["refs"]
            ok = all(r in at for r in refs) and (
                e["needs"] is None
                or e["needs"].startswith("source.")
                or all((r, e["needs"]) in as_is for r in refs)
            )
            text = e["text"] if ok else e["vague"]
            if text is not None:
                out.append(text)
        return out

    key_path = None
    for eid, name in raw["key_fields"].items():
        i = at.get(eid)
        if i is not None and name in evidence[i]["fields"]:
            key_path = f"evidence[{i}].fields.{name}"
            break
    start, end = raw["window_start"], raw["window_end"]
    if len(at) < len(raw["evidence"]):  # the window must not say when withheld events were
        start, end = min(times.values()), max(times.values())
    until = raw["absence_checked_until"] if raw["absence_ref"] in at else None
    return {
        "rule_type": raw["rule_type"],
        "summary": raw["summary"],
        "window_start": start,
        "window_end": end,
        "key": raw["key"],
        "key_path": key_path,
        "conditions": lines(raw["conditions"]),
        "absence_checked_until": until,
        "evidence": [
            {"event_id": e["event_id"], "role": e["role"], "met": lines(e["met"])}
            for e in raw["evidence"]
            if e["event_id"] in at
        ],
    }
