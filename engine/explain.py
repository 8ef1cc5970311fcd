"""Why a rule fired: the engine's record of a match, in words an officer can check.

Made when the alert is raised, from the rule and the evidence the correlator matched: each
line records the events and the field it rests on, so that the release step can give each
destination only what rests on what it receives (`released`). The matched key is named by
the evidence field that holds it; the release step points at that field as released (a
pseudonym across the border).
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


def said(
    text: str, refs: tuple[str, ...] = (), vague: str | None = None, needs: str | None = None
) -> dict[str, Any]:
    """One line of an explanation, as the engine records it: `text` rests on the events
    `refs` (and, if `needs` names a field, on their values of it); a destination that does
    not receive all of them, or not that field as is, gets `vague` instead (or nothing)."""
    return {"text": text, "refs": list(refs), "vague": vague, "needs": needs}


def explain_hit(rule: RuleBase, hit: Hit, evidence: tuple[Fact, ...]) -> dict[str, Any]:
    """The explanation of an alert, before release (see `released` for one destination's;
    times as epoch seconds).

    `evidence` is the hit's evidence in (time, id) order."""
    key = rule.route_key()
    w = rule.window
    first, last = evidence[0], evidence[-1]
    every = tuple(f.event_id for f in evidence)
    items: dict[str, dict[str, Any]] = {
        f.event_id: {"event_id": f.event_id, "role": role_of(rule, f), "met": []} for f in evidence
    }

    def met(f: Fact, line: dict[str, Any]) -> None:
        items[f.event_id]["met"].append(line)

    for f in evidence:
        sels = dict(roles(rule)).get(items[f.event_id]["role"], [])
        match = next((s for s in sels if s.matches(f)), None)
        if match is not None:
            met(f, said(f"is a {describe_selector(match)}"))
    conditions: list[dict[str, Any]] = []
    absence_until: float | None = None
    absence_ref: str | None = None
    window_end = first.ts + w
    window_start = first.ts
    if key is not None:
        conditions.append(said(f"every event has the same {key.name}"))
        for f in evidence:
            met(f, said(f"{key_field(key, f)} is the matched {key.name}"))
    span = last.ts - first.ts
    within = f"(at most {duration(w)})"
    if isinstance(rule, ProximityRule):
        radius = rule.radius_km
        centre = min(evidence, key=lambda c: max(_km(c, f) for f in evidence))
        crole = f"{items[centre.event_id]['role']} {centre.event_id}"
        met(centre, said("the point the others are measured from"))
        far = max(_km(centre, f) for f in evidence)
        conditions.append(
            said(
                f"all within {radius:g} km of {crole} (farthest {far:.1f} km)",
                every,
                f"all within {radius:g} km of one of them",
                needs="location",
            )
        )
        conditions.append(
            said(f"event times span {duration(span)} {within}", every, f"within {duration(w)}")
        )
        for f in evidence:
            if f is not centre:
                gap = f.ts - centre.ts
                when = f"{duration(gap)} {'after' if gap >= 0 else 'before'} it"
                met(
                    f,
                    said(
                        f"{_km(centre, f):.1f} km from {crole} (limit {radius:g} km), {when}",
                        (f.event_id, centre.event_id),
                        f"within {radius:g} km and {duration(w)} of the reference event",
                        needs="location",
                    ),
                )
        for name, n in rule.needed().items():
            got = sum(1 for i in items.values() if i["role"] == name)
            conditions.append(said(f"{got} {name} event{'s' if got != 1 else ''} (at least {n})"))
    elif isinstance(rule, EventCountRule):
        n = len(evidence)
        least = f"(at least {rule.threshold} within {duration(w)})"
        conditions.append(
            said(f"{n} events within {duration(span)} {least}", every, f"{n} events {least}")
        )
    elif isinstance(rule, ValueCountRule):
        fld = rule.field
        values = sorted({str(f.get(fld)) for f in evidence})
        least = f"(at least {rule.threshold})"
        conditions.append(
            said(
                f"{len(values)} different {fld} values: {', '.join(values)} {least} within "
                f"{duration(span)} {within}",
                every,
                f"{len(values)} different {fld} values {least} within {duration(w)}",
                needs=fld,
            )
        )
        for f in evidence:
            met(f, said(f"{fld} is {f.get(fld)}", (f.event_id,), f"has a {fld}", needs=fld))
    elif isinstance(rule, TemporalRule):
        kinds = ", ".join(n for n, _ in roles(rule))
        conditions.append(
            said(
                f"one event of each of {kinds}, spanning {duration(span)} {within}",
                every,
                f"one event of each of {kinds} within {duration(w)}",
            )
        )
    elif isinstance(rule, WatchlistRule):
        entries = hit.evidence[:-1]
        sighting = hit.evidence[-1]
        newest = max(entries, key=lambda e: e.ts)
        for e in entries:
            met(
                sighting,
                said(
                    f"seen {duration(sighting.ts - e.ts)} after a list entry (entries count "
                    f"for {duration(w)})",
                    (sighting.event_id, e.event_id),
                    f"seen within {duration(w)} after a list entry",
                ),
            )
        conditions.append(
            said(
                f"sighted {duration(sighting.ts - newest.ts)} after the newest list entry "
                f"{within}",
                (sighting.event_id, newest.event_id),
                f"sighted within {duration(w)} after a list entry",
            )
        )
        window_start, window_end = min(e.ts for e in entries), sighting.ts
    elif isinstance(rule, SequenceRule):
        steps = rule.steps
        present = [s for s in steps if not s.absent]
        chain = sorted(evidence, key=lambda f: (f.ts, f.event_id))
        for i, (step, f) in enumerate(zip(present, chain, strict=False)):
            if i:
                before = chain[i - 1]
                limit = f" (within {duration(step.within)})" if step.within is not None else ""
                met(
                    f,
                    said(
                        f"{duration(f.ts - before.ts)} after the {present[i - 1].name}{limit}",
                        (f.event_id, before.event_id),
                        f"after the {present[i - 1].name}{limit}",
                    ),
                )
        order = " then ".join(s.name for s in present)
        conditions.append(
            said(
                f"steps in order: {order}, spanning {duration(span)} {within}",
                every,
                f"steps in order: {order}, within {duration(w)}",
            )
        )
        absent = steps[-1] if steps[-1].absent else None
        if absent is not None and absent.within is not None:
            absence_until = last.ts + absent.within
            absence_ref = last.event_id
            conditions.append(
                said(
                    f"no {absent.name} ({describe_selectors(absent.select)}) with the same "
                    f"{key.name if key else 'key'} within {duration(absent.within)} after the "
                    f"{present[-1].name}: checked up to that time, decided once event time "
                    f"had passed it by the rule's lateness ({duration(rule.allowed_lateness)})"
                )
            )
            window_end = absence_until
    return {
        "rule_type": rule.type_name,
        "summary": summary(rule),
        "window_start": window_start,
        "window_end": max(window_end, last.ts),
        "key": key.name if key is not None else None,
        "key_fields": {f.event_id: key_field(key, f) for f in evidence} if key else {},
        "conditions": conditions,
        "absence_checked_until": absence_until,
        "absence_ref": absence_ref,
        "evidence": [items[f.event_id] for f in evidence],
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


def _km(a: Fact, b: Fact) -> float:
    return haversine_km(a.lat, a.lon, b.lat, b.lon)
