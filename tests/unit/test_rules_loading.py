from __future__ import annotations

from pathlib import Path

import pytest

from engine.durations import parse_duration
from engine.errors import RuleSetError
from engine.rulefiles import load_rules, parse_rules_text

REPO = Path(__file__).resolve().parents[2]

GOOD = """
id: plate-watch
type: watchlist
title: A watched plate
severity: high
key: plate
list: {type: suspect, where: {risk: [high]}}
match: {type: detection}
window: 30d
"""


def test_default_pack_loads_and_every_rule_has_tests():
    rs = load_rules([REPO / "rules"])
    assert {"watchlist-plate", "coordinated-crossing"} <= set(rs.by_id)
    assert all(r.tests for r in rs.rules)


def test_good_rule_parses():
    rs = parse_rules_text(GOOD)
    rule = rs.by_id["plate-watch"]
    assert rule.window == 30 * 86400 and rule.allowed_lateness == rule.window


def test_unknown_type_lists_valid_options():
    with pytest.raises(
        RuleSetError,
        match=r"rule plate-watch: field type: unknown rule type "
        r"'watchlst'; valid options are \[.*'proximity'.*\]",
    ):
        parse_rules_text(GOOD.replace("type: watchlist", "type: watchlst"))


def test_one_table_of_rule_types():
    from engine.correlators import CORRELATORS, RULE_TYPES

    assert set(RULE_TYPES) == {
        "watchlist",
        "proximity",
        "event_count",
        "value_count",
        "temporal",
        "sequence",
        "incursion",
        "geofence",
    }
    for name, (model, correlator) in RULE_TYPES.items():
        assert model.type_name == name
        assert CORRELATORS[name] is correlator


def test_rule_types_import_without_a_loop():
    """Each side imports alone in a fresh interpreter: no registration by import order."""
    import subprocess
    import sys

    for first in ("engine.rules", "engine.correlators", "engine.correlators.sequence"):
        code = (
            f"import {first}\n"
            f"from engine.rulefiles import parse_rules_text\nparse_rules_text({GOOD!r})"
        )
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_bad_field_names_file_rule_and_field(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(GOOD.replace("window: 30d", "window: thirty days"))
    with pytest.raises(RuleSetError) as e:
        load_rules([f])
    msg = str(e.value)
    assert f"{f}: rule plate-watch: field window:" in msg
    assert "expected a duration like '90s'" in msg


def test_all_problems_reported_at_once(tmp_path):
    (tmp_path / "a.yaml").write_text(GOOD.replace("severity: high", "severity: huge"))
    (tmp_path / "b.yaml").write_text("id: x\n  bad: [yaml")
    (tmp_path / "c.yaml").write_text(
        GOOD.replace("plate-watch", "second").replace(
            "match: {type: detection}", "match: {type: sighting}"
        )
    )
    with pytest.raises(RuleSetError) as e:
        load_rules([tmp_path])
    assert len(e.value.errors) == 3
    text = str(e.value)
    assert "a.yaml: rule plate-watch: field severity" in text
    assert "b.yaml: not valid YAML at line" in text
    assert "c.yaml: rule second: field match.0.type" in text


def test_duplicate_ids_refused(tmp_path):
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD)
    with pytest.raises(RuleSetError, match="duplicate rule id, already defined in"):
        load_rules([tmp_path])


def test_unknown_field_refused():
    with pytest.raises(RuleSetError, match="field colour: Extra inputs are not permitted"):
        parse_rules_text(GOOD + "colour: red\n")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1h30m", 5400), ("30d", 2592000), ("2w", 1209600), (5, 5)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "10", "ten minutes", "-5m", True, -1])
def test_bad_durations(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)
