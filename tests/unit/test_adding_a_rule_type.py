"""A rule type added as docs/rules.md says (one module, one row in `RULE_TYPES`) is parsed,
correlated and explained end to end, and released per destination line by line."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.correlators import RULE_TYPES, RuleType
from engine.engine import Engine
from engine.errors import RuleSetError
from engine.hits import RawAlert
from engine.release import InterimPolicy, release_json
from engine.rulefiles import parse_rules_text
from engine.ruletests import DEFAULT_START, build_event
from tests.unit.followed_by import FollowedByCorrelator, FollowedByRule

ROOT = Path(__file__).resolve().parents[2]
MODULE = Path(__file__).with_name("followed_by.py")

RULE = """\
id: seizure-then-crossing
type: followed_by
title: A plate named in a seizure is read at a crossing soon after
severity: high
key: plate
trigger: {type: weapon, where: {weapon_event: seizure, plate: {exists: true}}}
response: {type: detection, where: {sensor_kind: lpr}}
window: 2h
"""


@pytest.fixture
def followed_by() -> Iterator[None]:
    """`followed_by` in the table for one test; the shipped table as it was afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(RULE_TYPES, "followed_by", RuleType(FollowedByRule, FollowedByCorrelator))
        yield
    assert "followed_by" not in RULE_TYPES


def alerts() -> list[RawAlert]:
    ruleset = parse_rules_text(RULE)
    assert isinstance(ruleset.rules[0], FollowedByRule)
    engine = Engine(ruleset)
    facts = [
        build_event(
            {"id": "w1", "type": "weapon", "at": "0m", "plate": "ABC-123", "country": "MX"},
            DEFAULT_START,
        ),
        build_event({"id": "d0", "type": "detection", "at": "10m", "plate": "XYZ9"}, DEFAULT_START),
        build_event(
            {"id": "d1", "type": "detection", "at": "35m", "plate": "abc 123"}, DEFAULT_START
        ),
    ]
    out: list[RawAlert] = []
    for f in facts:
        out.extend(engine.process(f))
        out.extend(engine.advance(engine.watermark))
    out.extend(engine.flush(max(f.ts for f in facts)))
    return out


def line(text: str, refs: list[str], vague: str | None = None) -> dict[str, Any]:
    return {"text": text, "refs": refs, "vague": vague, "needs": None}


@pytest.mark.usefixtures("followed_by")
def test_an_added_rule_type_explains_its_alert() -> None:
    (alert,) = alerts()
    start = DEFAULT_START.timestamp()
    assert alert.explanation == {
        "rule_type": "followed_by",
        "summary": "a response with the same plate within 2 h after a trigger "
        "(trigger: weapon with weapon_event = seizure, plate present; "
        "response: detection with sensor_kind = lpr)",
        "window_start": start,
        "window_end": start + 2 * 3600,
        "key": "plate",
        "key_fields": {"w1": "plate", "d1": "plate"},
        "conditions": [
            line("every event has the same plate", []),
            line(
                "response 35 min after the trigger (at most 2 h)",
                ["d1", "w1"],
                "response within 2 h after a trigger",
            ),
        ],
        "absence_checked_until": None,
        "absence_ref": None,
        "evidence": [
            {
                "event_id": "w1",
                "role": "trigger",
                "met": [
                    line("is a weapon with weapon_event = seizure, plate present", []),
                    line("plate is the matched plate", []),
                ],
            },
            {
                "event_id": "d1",
                "role": "response",
                "met": [
                    line("is a detection with sensor_kind = lpr", []),
                    line("plate is the matched plate", []),
                    line("35 min after trigger w1", ["d1", "w1"], "after a trigger"),
                ],
            },
        ],
    }


@pytest.mark.usefixtures("followed_by")
def test_an_added_rule_types_lines_are_released_per_destination() -> None:
    """A line resting on an event a destination does not receive reaches it vague."""
    (alert,) = alerts()

    class NoMexicanEventsForTheUS(InterimPolicy):
        def action(
            self,
            origin: str,
            destination: str,
            event_type: str,
            field: str,
            at: tuple[float, float] | None = None,
        ) -> tuple[str, str]:
            if origin == "MX" and destination == "US" and field == "*":
                return "drop", "no-mexican-events"
            return super().action(origin, destination, event_type, field, at)

    policy = NoMexicanEventsForTheUS()
    us = release_json(alert, "US", ["MX", "US"], policy, now=0.0, topic="alerts.us")
    mx = release_json(alert, "MX", ["MX", "US"], policy, now=0.0, topic="alerts.mx")
    assert us is not None and mx is not None
    assert us[0]["explanation"]["conditions"] == [
        "every event has the same plate",
        "response within 2 h after a trigger",
    ]
    assert [e["event_id"] for e in us[0]["explanation"]["evidence"]] == ["d1"]
    assert us[0]["explanation"]["evidence"][0]["met"][-1] == "after a trigger"
    assert (
        mx[0]["explanation"]["conditions"][-1] == "response 35 min after the trigger (at most 2 h)"
    )
    assert mx[0]["explanation"]["evidence"][1]["met"][-1] == "35 min after trigger w1"


def test_an_unregistered_type_is_refused() -> None:
    with pytest.raises(RuleSetError, match=r"unknown rule type 'followed_by'; valid options are"):
        parse_rules_text(RULE)


def test_docs_show_the_module_and_the_rule_of_this_test() -> None:
    """docs/rules.md "Adding a rule type" shows this module, its row and its rule file."""
    text = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    section = text.split("## Adding a rule type", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```(\w+)\n(.*?)^```", section, re.M | re.S)
    assert blocks[0] == ("python", MODULE.read_text(encoding="utf-8"))
    assert "RuleType(FollowedByRule, FollowedByCorrelator)," in blocks[1][1]
    assert blocks[2] == ("yaml", RULE)
