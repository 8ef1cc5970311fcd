"""Why a rule fired: the engine's record of a match, in words an officer can check.

Made when the alert is raised, from the rule and the evidence the correlator matched. It
holds no field values: the matched key is named by the evidence field that holds it, and
the release step points at that field as released (a pseudonym across the border). The release
step leaves out of a destination's explanation the evidence it withholds from it.
"""

from __future__ import annotations

from typing import Any

from engine.correlators.event_count import EventCountRule
from engine.correlators.proximity import ProximityRule
from engine.correlators.sequence import SequenceRule
from engine.correlators.temporal import TemporalRule
from engine.correlators.value_count import ValueCountRule
from engine.correlators.watchlist import WatchlistRule
from engine.facts import Fact
from engine.geo import haversine_km
from engine.hits import Hit
from engine.rules import KeySpec, RuleBase
from engine.selectors import Condition, Selector

PERSONAL = frozenset({"plate", "person_ref", "serial", "location", "text"})
"""Fields whose values an explanation never repeats (the policy governs them)."""

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
    """`detection with plate present, sensor_kind = inspection`."""
    what = " or ".join(sel.type)
    if not sel.where:
        return what
    return f"{what} with " + ", ".join(describe_condition(n, c) for n, c in sel.where.items())


def describe_selectors(sels: list[Selector] | tuple[Selector, ...]) -> str:
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


def roles(rule: RuleBase) -> list[tuple[str, list[Selector]]]:
    """The rule's named kinds of event, each with its selectors, in the rule's order."""
    if isinstance(rule, ProximityRule):
        return [(n, [s]) for n, s in rule.select.items()]
    if isinstance(rule, TemporalRule):
        return [(n, [s]) for n, s in rule.kinds.items()]
    if isinstance(rule, SequenceRule):
        return [(s.name, list(s.select)) for s in rule.steps]
    if isinstance(rule, WatchlistRule):
        return [("list entry", [rule.list_]), ("sighting", list(rule.match))]
    return [("event", list(rule.selectors()))]


def role_of(rule: RuleBase, fact: Fact) -> str:
    for name, sels in roles(rule):
        if any(s.matches(fact) for s in sels):
            return name
    return "event"


def summary(rule: RuleBase) -> str:
    """The rule's conditions, in words."""
    key = rule.route_key()
    same = f" with the same {key.name}" if key is not None else ""
    named = "; ".join(f"{n}: {describe_selectors(s)}" for n, s in roles(rule))
    w = duration(rule.window)
    if isinstance(rule, ProximityRule):
        need = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in rule.needed().items())
        return f"{need} within {rule.radius_km:g} km and {w} of each other ({named})"
    if isinstance(rule, EventCountRule):
        return f"at least {rule.threshold} events{same} within {w} ({named})"
    if isinstance(rule, ValueCountRule):
        return (
            f"at least {rule.threshold} different {rule.field} values among events{same} "
            f"within {w} ({named})"
        )
    if isinstance(rule, TemporalRule):
        return f"one event of each kind{same}, all within {w} ({named})"
    if isinstance(rule, WatchlistRule):
        return f"a sighting{same} as a list entry, within {w} after the entry ({named})"
    if isinstance(rule, SequenceRule):
        steps = []
        for s in rule.steps:
            within = f" within {duration(s.within)}" if s.within is not None else ""
            steps.append(f"no {s.name}{within}" if s.absent else f"{s.name}{within}")
        return f"{' then '.join(steps)}{same}, the present steps within {w} ({named})"
    return named


def key_field(key: KeySpec | None, fact: Fact) -> str | None:
    if key is None:
        return None
    return key.fields.get(fact.event_type, key.name)


def explain_hit(rule: RuleBase, hit: Hit, evidence: tuple[Fact, ...]) -> dict[str, Any]:
    """The explanation of an alert (times as epoch seconds; see `schemas.alerts.Explanation`).

    `evidence` is the hit's evidence in (time, id) order."""
    key = rule.route_key()
    w = rule.window
    first, last = evidence[0], evidence[-1]
    items: dict[str, dict[str, Any]] = {
        f.event_id: {"event_id": f.event_id, "role": role_of(rule, f), "met": []} for f in evidence
    }
    for f in evidence:
        sels = dict(roles(rule)).get(items[f.event_id]["role"], [])
        match = next((s for s in sels if s.matches(f)), None)
        if match is not None:
            items[f.event_id]["met"].append(f"is a {describe_selector(match)}")
    conditions: list[str] = []
    absence_until: float | None = None
    window_start, window_end = first.ts, last.ts
    if key is not None:
        conditions.append(f"every event has the same {key.name}")
        for f in evidence:
            items[f.event_id]["met"].append(f"{key_field(key, f)} is the matched {key.name}")
    t = rule.type_name
    span = last.ts - first.ts
    if isinstance(rule, ProximityRule):
        radius = rule.radius_km
        centre = min(evidence, key=lambda c: max(_km(c, f) for f in evidence))
        crole = f"{items[centre.event_id]['role']} {centre.event_id}"
        items[centre.event_id]["met"].append("the point the others are measured from")
        far = max(_km(centre, f) for f in evidence)
        conditions.append(f"all within {radius:g} km of {crole} (farthest {far:.1f} km)")
        conditions.append(f"event times span {duration(span)} (at most {duration(w)})")
        for f in evidence:
            if f is not centre:
                gap = f.ts - centre.ts
                items[f.event_id]["met"].append(
                    f"{_km(centre, f):.1f} km from {crole} (limit {radius:g} km), "
                    f"{duration(gap)} {'after' if gap >= 0 else 'before'} it"
                )
        for name, n in rule.needed().items():
            got = sum(1 for i in items.values() if i["role"] == name)
            conditions.append(f"{got} {name} event{'s' if got != 1 else ''} (at least {n})")
        window_end = first.ts + w
    elif isinstance(rule, EventCountRule):
        n = len(evidence)
        conditions.append(
            f"{n} events within {duration(span)} (at least {rule.threshold} within {duration(w)})"
        )
        window_end = first.ts + w
    elif isinstance(rule, ValueCountRule):
        fld = rule.field
        values = sorted({str(f.get(fld)) for f in evidence})
        shown = f": {', '.join(values)}" if fld not in PERSONAL else ""
        conditions.append(
            f"{len(values)} different {fld} values{shown} (at least "
            f"{rule.threshold}) within {duration(span)} (at most {duration(w)})"
        )
        for f in evidence:
            v = f.get(fld)
            items[f.event_id]["met"].append(
                f"{fld} is {v}" if fld not in PERSONAL else f"has a {fld}"
            )
        window_end = first.ts + w
    elif isinstance(rule, TemporalRule):
        conditions.append(
            f"one event of each of {', '.join(n for n, _ in roles(rule))}, "
            f"spanning {duration(span)} (at most {duration(w)})"
        )
        window_end = first.ts + w
    elif isinstance(rule, WatchlistRule):
        entries = [f for f in hit.evidence[:-1]]
        sighting = hit.evidence[-1]
        for e in entries:
            gap = sighting.ts - e.ts
            items[sighting.event_id]["met"].append(
                f"seen {duration(gap)} after a list entry (entries count for {duration(w)})"
            )
        conditions.append(
            f"sighted {duration(sighting.ts - max(e.ts for e in entries))} after the newest "
            f"list entry (at most {duration(w)})"
        )
        window_start, window_end = min(e.ts for e in entries), sighting.ts
    elif isinstance(rule, SequenceRule):
        steps = rule.steps
        present = [s for s in steps if not s.absent]
        chain = sorted(evidence, key=lambda f: (f.ts, f.event_id))
        for i, (step, f) in enumerate(zip(present, chain, strict=False)):
            if i:
                gap = f.ts - chain[i - 1].ts
                limit = f" (within {duration(step.within)})" if step.within is not None else ""
                items[f.event_id]["met"].append(
                    f"{duration(gap)} after the {present[i - 1].name}{limit}"
                )
        conditions.append(
            f"steps in order: {' then '.join(s.name for s in present)}, spanning "
            f"{duration(span)} (at most {duration(w)})"
        )
        absent = steps[-1] if steps[-1].absent else None
        if absent is not None and absent.within is not None:
            absence_until = last.ts + absent.within
            conditions.append(
                f"no {absent.name} ({describe_selectors(absent.select)}) with the same "
                f"{key.name if key else 'key'} within {duration(absent.within)} after the "
                f"{present[-1].name}: checked up to that time, decided once event time had "
                f"passed it by the rule's lateness ({duration(rule.allowed_lateness)})"
            )
            window_end = absence_until
        else:
            window_end = first.ts + w
    key_fields = {f.event_id: key_field(key, f) for f in evidence} if key is not None else {}
    return {
        "rule_type": t,
        "summary": summary(rule),
        "window_start": window_start,
        "window_end": max(window_end, last.ts),
        "key": key.name if key is not None else None,
        "key_fields": key_fields,
        "conditions": conditions,
        "absence_checked_until": absence_until,
        "evidence": [items[f.event_id] for f in evidence],
    }


def _km(a: Fact, b: Fact) -> float:
    return haversine_km(a.lat, a.lon, b.lat, b.lon)
