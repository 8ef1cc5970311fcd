"""Rule tests carried in the rule files: example events in, the alerts that must come out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.durations import parse_duration
from engine.engine import Engine
from engine.facts import Fact
from engine.hits import alert_id
from engine.rules import RuleBase, RuleSet, RuleTest
from engine.versions import standing
from schemas.events import EVENT_MODELS, EventType

DEFAULT_START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

_DEFAULTS: dict[EventType, dict[str, Any]] = {
    "detection": {"sensor_id": "S-1", "sensor_kind": "lpr", "subject_kind": "vehicle"},
    "suspect": {"person_ref": "P-0", "watchlist": "general", "risk": "high"},
    "weapon": {"weapon_event": "seizure"},
    "track": {"track_id": "T-1", "subject_kind": "vehicle"},
    "tip": {
        "uncertainty_m": 500,
        "category": "weapons",
        "text": "test tip",
        "channel": "hotline",
        "reliability": "F",
        "credibility": 6,
    },
    "authorization": {
        "action": "grant",
        "reference": "PERMIT-1",
        "guest_country": "US",
        "units": ["U-1"],
        "area": {"radius_m": 5000},
    },
}


def _offset(at: Any) -> timedelta:
    if isinstance(at, str) and at.startswith("-"):
        return -timedelta(seconds=parse_duration(at[1:]))
    return timedelta(seconds=parse_duration(at if at is not None else 0))


def build_event(spec: dict[str, Any], start: datetime) -> Fact:
    """A full event from a short test spec: `id`, `type`, `at` plus any event fields.

    Shorthands: `country`/`agency` for the source, `lat`/`lon` for the location; an
    authorization's `valid_from`/`valid_until` are offsets like `at` (default -1h and 12h).
    """
    s = dict(spec)
    etype = s.pop("type")
    doc: dict[str, Any] = {
        "event_id": s.pop("id"),
        "event_type": etype,
        "occurred_at": (start + _offset(s.pop("at", 0))).isoformat(),
        "source": {
            "agency": s.pop("agency", "CBP" if s.get("country", "US") == "US" else "GN"),
            "country": s.pop("country", "US"),
        },
        "location": {"lat": s.pop("lat", 31.3300), "lon": s.pop("lon", -110.9400)},
        **_DEFAULTS.get(etype, {}),
    }
    if etype == "authorization":  # validity as offsets from the test's start, like `at`
        if s.get("action", "grant") == "grant":
            s.setdefault("valid_from", "-1h")
            s.setdefault("valid_until", "12h")
        else:
            doc.pop("area", None)
            doc.pop("units", None)
        for name in ("valid_from", "valid_until"):
            if name in s:
                s[name] = (start + _offset(s[name])).isoformat()
    doc.update(s)
    return Fact(EVENT_MODELS[etype].model_validate(doc))


@dataclass
class TestOutcome:
    rule_id: str
    name: str
    passed: bool
    problems: list[str] = field(default_factory=list)


def run_rule_test(rule: RuleBase, test: RuleTest) -> TestOutcome:
    """Run one test of one rule in a fresh engine holding only that rule."""
    start = test.start or DEFAULT_START
    engine = Engine(RuleSet([rule]))
    problems: list[str] = []
    alerts = []
    try:
        facts = [build_event(e, start) for e in test.events]
    except Exception as e:
        return TestOutcome(rule.id, test.name, False, [f"test event is invalid: {e}"])
    for f in facts:
        alerts.extend(engine.process(f))
        alerts.extend(engine.advance(engine.watermark))
    alerts.extend(engine.flush(max(f.ts for f in facts)))
    final = standing(alerts)
    got = [sorted(f.event_id for f in a.evidence) for a in final.values()]
    for exp in test.expect:
        raised = final.get(alert_id(rule.id, exp.evidence))
        if raised is None:
            problems.append(
                f"expected an alert raised on {sorted(exp.evidence)}; the alerts that stand "
                f"hold {got}"
            )
        elif exp.final is not None and sorted(exp.final) != (
            held := sorted(f.event_id for f in raised.evidence)
        ):
            problems.append(
                f"expected the alert raised on {sorted(exp.evidence)} to end holding "
                f"{sorted(exp.final)}; it holds {held}"
            )
    want = test.expect_count if test.expect_count is not None else len(test.expect)
    if len(got) != want:
        problems.append(f"expected {want} alert(s), got {len(got)}: {got}")
    return TestOutcome(rule.id, test.name, not problems, problems)


def run_all(ruleset: RuleSet) -> tuple[list[TestOutcome], list[str]]:
    """Every test of every rule; and the ids of rules that carry no test."""
    outcomes = [run_rule_test(r, t) for r in ruleset.rules for t in r.tests]
    untested = [r.id for r in ruleset.rules if not r.tests]
    return outcomes, untested
