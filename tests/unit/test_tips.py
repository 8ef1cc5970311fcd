"""Community tips (issue 13): the event model and its JSON Schema, its topic and what lists the
input topics, validation at ingest, selection by rules, the Admiralty grade in the score, the
default pack's tip rule, and the sharing policy on tips. No broker."""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from engine.engine import CREDIBILITY_FACTOR, RELIABILITY_FACTOR, Engine, grade_factor, score
from engine.facts import Fact
from engine.hits import RawAlert, alert_id
from engine.ingest import Rejection, validate
from engine.policy import DEFAULT_WITHHOLD, Keyring, load_policy
from engine.release import release
from engine.replay import correlate_file
from engine.routing import Router
from engine.rulefiles import load_rules, parse_rule
from engine.rules import RuleSet
from engine.ruletests import DEFAULT_START, build_event, run_all
from engine.selectors import Selector
from schemas import EVENT_MODELS, Tip
from schemas.generate import MODELS, OUT, render
from streams.cli import tip_event
from streams.settings import Settings
from streams.tools.acls import acl_plan
from streams.topics import declared_topics

REPO = Path(__file__).resolve().parents[2]
RULES = load_rules([REPO / "rules"])
TIP_RULE = RULES.by_id["weapons-tip-near-seizure"]
KEYS = Keyring.parse(
    {
        kind: [{"id": "ktip", "secret": base64.b64encode(kind.encode().ljust(32, b"k")).decode()}]
        for kind in ("plate", "person_ref", "serial")
    },
    source="test-keys",
)
POLICY = load_policy(REPO / "rules" / "policy.yaml", KEYS)

NOGALES_US = (31.3404, -110.9343)  # ~1 km from the line: inside the border zone
INLAND_MX = (30.90, -110.60)  # Sonora, ~48 km from the line: outside it
TEXT = "Tres rifles en una camioneta blanca, rancho El Alamo, llamar a Juan 555-0199"

TIP: dict[str, Any] = {
    "event_id": "tip-1",
    "event_type": "tip",
    "occurred_at": "2026-01-05T12:00:00-07:00",
    "source": {"agency": "FGR-DENUNCIA", "country": "MX"},
    "location": {"lat": 31.30, "lon": -110.94},
    "uncertainty_m": 1500,
    "category": "weapons",
    "text": TEXT,
    "channel": "app",
    "reliability": "B",
    "credibility": 2,
}


def tip(**changes: Any) -> dict[str, Any]:
    doc = {**TIP, **changes}
    return {k: v for k, v in doc.items() if v is not DELETE}


DELETE = object()


def fact(**kw: Any) -> Fact:
    return build_event(kw, DEFAULT_START)


# -- the model ---------------------------------------------------------------------------------


def test_a_tip_validates_frozen_with_optional_links():
    t = Tip.model_validate(tip(plate="XKZ-481", person_ref="MX-P-9"))
    assert (t.category, t.channel, t.reliability, t.credibility) == ("weapons", "app", "B", 2)
    assert t.uncertainty_m == 1500 and t.text == TEXT
    assert t.plate == "XKZ-481" and t.person_ref == "MX-P-9"
    assert Tip.model_validate(tip()).plate is None
    with pytest.raises(ValidationError):
        t.credibility = 1  # type: ignore[misc]
    assert EVENT_MODELS["tip"] is Tip


@pytest.mark.parametrize("reliability", list("ABCDEF"))
@pytest.mark.parametrize("credibility", [1, 2, 3, 4, 5, 6])
def test_every_admiralty_grade_is_valid(reliability: str, credibility: int):
    t = Tip.model_validate(tip(reliability=reliability, credibility=credibility))
    assert (t.reliability, t.credibility) == (reliability, credibility)


@pytest.mark.parametrize(
    ("patch", "field", "message"),
    [
        ({"reliability": "G"}, "reliability", "'A', 'B', 'C', 'D', 'E' or 'F'"),
        ({"reliability": "b"}, "reliability", "'A', 'B', 'C', 'D', 'E' or 'F'"),
        ({"reliability": "B2"}, "reliability", "'A', 'B', 'C', 'D', 'E' or 'F'"),
        ({"credibility": 0}, "credibility", "greater than or equal to 1"),
        ({"credibility": 7}, "credibility", "less than or equal to 6"),
        ({"credibility": "2"}, "credibility", "valid integer"),
        ({"credibility": True}, "credibility", "valid integer"),
        ({"credibility": 2.5}, "credibility", "valid integer"),
        ({"category": "guns"}, "category", "'drugs', 'weapons', 'people' or 'money'"),
        ({"category": "Weapons"}, "category", "'drugs', 'weapons', 'people' or 'money'"),
        ({"channel": "email"}, "channel", "'hotline', 'app' or 'officer'"),
        ({"uncertainty_m": -1}, "uncertainty_m", "greater than or equal to 0"),
        ({"uncertainty_m": "far"}, "uncertainty_m", "valid number"),
        ({"uncertainty_m": DELETE}, "uncertainty_m", "Field required"),
        ({"reliability": DELETE}, "reliability", "Field required"),
        ({"text": ""}, "text", "at least 1 character"),
        ({"text": "x" * 2001}, "text", "at most 2000 characters"),
        ({"grade": "B2"}, "grade", "Extra inputs are not permitted"),
        ({"event_type": "weapon"}, "event_type", "'tip'"),
    ],
)
def test_tip_refusals_name_the_field(patch: dict[str, Any], field: str, message: str):
    with pytest.raises(ValidationError) as e:
        Tip.model_validate_json(orjson.dumps(tip(**patch)))
    errors = {str(err["loc"][0]): err["msg"] for err in e.value.errors()}
    assert field in errors, errors
    assert message in errors[field]


def test_uncertainty_zero_and_text_of_2000_are_accepted():
    t = Tip.model_validate(tip(uncertainty_m=0, text="x" * 2000))
    assert t.uncertainty_m == 0 and len(t.text) == 2000


def test_the_json_schema_file_is_current_and_describes_every_field():
    assert MODELS["tip"] is Tip
    path = OUT / "tip.schema.json"
    assert path.read_text() == render("tip", Tip)
    schema = json.loads(path.read_text())
    props = schema["properties"]
    assert set(schema["required"]) == {
        "event_id",
        "event_type",
        "occurred_at",
        "source",
        "location",
        "uncertainty_m",
        "category",
        "text",
        "channel",
        "reliability",
        "credibility",
    }
    assert props["reliability"]["enum"] == list("ABCDEF")
    assert (props["credibility"]["minimum"], props["credibility"]["maximum"]) == (1, 6)
    assert props["category"]["enum"] == ["drugs", "weapons", "people", "money"]
    assert props["channel"]["enum"] == ["hotline", "app", "officer"]
    assert props["uncertainty_m"]["minimum"] == 0
    assert props["text"]["maxLength"] == 2000
    assert schema["additionalProperties"] is False
    for name in ("uncertainty_m", "category", "text", "channel", "reliability", "credibility"):
        assert props[name].get("description"), f"{name} has no description"
    alert = json.loads((OUT / "alert.schema.json").read_text())
    assert "tip" in alert["$defs"]["Evidence"]["properties"]["event_type"]["enum"]


# -- the topic, and what lists the input topics --------------------------------------------------


def test_the_tips_topic_is_an_input_topic_everywhere():
    s = Settings(_env_file=None)
    assert s.topic_tips == "events.tips"
    assert s.input_topics["tip"] == "events.tips"
    assert s.caught_up_lag_s["tip"] == 2.0  # reports about the past, like suspects
    inputs = {t.name for t in declared_topics(s) if t.role == "input"}
    assert "events.tips" in inputs and len(inputs) == 7  # with events.authorizations.us, .mx
    writes = {(g.principal, g.name) for g in acl_plan(s) if g.operation == "WRITE"}
    assert {("producer-us", "events.tips"), ("producer-mx", "events.tips")} <= writes


def test_the_tips_topic_and_its_lag_are_settings(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FUSION_TOPIC_TIPS", "tips.other")
    monkeypatch.setenv("FUSION_CAUGHT_UP_LAG_S", '{"tip": 30}')
    s = Settings(_env_file=None)
    assert s.input_topics["tip"] == "tips.other"
    assert s.caught_up_lag_s["tip"] == 30.0 and s.caught_up_lag_s["suspect"] == 2.0


# -- ingest ------------------------------------------------------------------------------------


NOW = 1_767_643_200.0  # 2026-01-05T20:00:00Z: after the tip's time


def test_ingest_accepts_a_tip_on_its_topic():
    res = validate(orjson.dumps(tip()), "tip", now=NOW, partners=frozenset({"US", "MX"}))
    assert isinstance(res, Fact)
    assert (res.event_type, res.get("category"), res.get("credibility")) == ("tip", "weapons", 2)


@pytest.mark.parametrize(
    ("raw", "topic_type", "kind", "message"),
    [
        (
            orjson.dumps(tip(credibility=9)),
            "tip",
            "schema",
            "not a valid tip event: field 'credibility': Input should be less than or equal to 6",
        ),
        (
            orjson.dumps(tip(reliability="Z")),
            "tip",
            "schema",
            "field 'reliability': Input should be 'A', 'B', 'C', 'D', 'E' or 'F' (got 'Z')",
        ),
        (
            orjson.dumps(tip(uncertainty_m=DELETE)),
            "tip",
            "schema",
            "field 'uncertainty_m': Field required",
        ),
        (
            orjson.dumps(tip()),
            "weapon",
            "type_mismatch",
            "a tip event was published to the topic of weapon events; publish it to the tip topic",
        ),
        (
            orjson.dumps(tip(event_type="weapon")),
            "tip",
            "type_mismatch",
            "a weapon event was published to the topic of tip events",
        ),
        (b'{"event_type": "tip", ', "tip", "json", "not valid UTF-8 JSON"),
    ],
)
def test_ingest_refuses_a_bad_tip_saying_what_to_fix(
    raw: bytes, topic_type: str, kind: str, message: str
):
    res = validate(raw, topic_type, now=NOW, partners=frozenset({"US", "MX"}))
    assert isinstance(res, Rejection)
    assert res.kind == kind
    assert message in res.message


# -- rules select tips ----------------------------------------------------------------------------


def test_selectors_take_tips_by_type_and_fields():
    sel = Selector.model_validate(
        {"type": "tip", "where": {"category": ["weapons", "drugs"], "reliability": ["A", "B"]}}
    )
    assert sel.matches(fact(id="t1", type="tip", category="drugs", reliability="A"))
    assert not sel.matches(fact(id="t2", type="tip", category="people", reliability="A"))
    assert not sel.matches(fact(id="t3", type="tip", category="drugs", reliability="F"))
    assert not sel.matches(fact(id="w1", type="weapon"))
    graded = Selector.model_validate({"type": "tip", "where": {"credibility": {"lte": 2}}})
    assert graded.matches(fact(id="t4", type="tip", credibility=2))
    assert not graded.matches(fact(id="t5", type="tip", credibility=3))


def test_a_rule_over_tips_loads_and_an_unknown_type_is_refused():
    rule = parse_rule(
        {
            "id": "tips-about-money",
            "type": "event_count",
            "title": "Many money tips",
            "severity": "low",
            "key": "plate",
            "select": {"type": "tip", "where": {"category": "money"}},
            "threshold": 2,
            "window": "1d",
        },
        file="inline.yaml",
        index=0,
    )
    assert rule.selectors()[0].type == ["tip"]
    engine = Engine(RuleSet([rule]))
    money = [
        fact(id="t1", type="tip", category="money", plate="ab 12"),
        fact(id="t2", type="tip", at="3h", category="drugs", plate="AB12"),
        fact(id="t3", type="tip", at="5h", category="money", plate="AB-12", channel="officer"),
    ]
    alerts = [a for f in money for a in engine.process(f)]
    assert [[f.event_id for f in a.evidence] for a in alerts] == [["t1", "t3"]]
    with pytest.raises(
        ValidationError, match="'detection', 'suspect', 'weapon', 'track', 'tip' or 'authorization'"
    ):
        Selector.model_validate({"type": "tips"})


def test_the_default_pack_tip_rule_carries_passing_tests():
    outcomes, untested = run_all(RuleSet([TIP_RULE]))
    assert not untested and len(outcomes) >= 8
    assert all(o.passed for o in outcomes), [o for o in outcomes if not o.passed]


def test_tips_are_routed_to_their_region_for_the_geographic_rule():
    t = fact(id="t1", type="tip", category="weapons")
    assert RULES.rules_taking(t) == [TIP_RULE]
    routes = Router(RULES).routes(t)
    assert routes and all(key.startswith("geo:") for key, _ in routes)
    assert not RULES.rules_taking(fact(id="t2", type="tip", category="drugs"))


def test_replay_takes_tips_from_a_jsonl_file():
    seizure = {
        **{k: TIP[k] for k in ("source", "location")},
        "event_id": "w-1",
        "event_type": "weapon",
        "occurred_at": "2026-01-05T15:00:00-07:00",
        "weapon_event": "seizure",
    }
    lines = b"\n".join(orjson.dumps(d) for d in (tip(), seizure))
    alerts, stats = correlate_file(io.BytesIO(lines), RULES, partners=frozenset({"US", "MX"}))
    assert stats.accepted == 2 and stats.rejected == 0
    assert [(a.rule_id, [f.event_id for f in a.evidence]) for a in alerts] == [
        ("weapons-tip-near-seizure", ["tip-1", "w-1"])
    ]


# -- the grade in the score -----------------------------------------------------------------------


def seizure_and(*tips: Fact) -> tuple[Fact, ...]:
    return (*tips, fact(id="w1", type="weapon", at="1h", weapon_event="seizure"))


def graded(eid: str, grade: str) -> Fact:
    return fact(id=eid, type="tip", reliability=grade[0], credibility=int(grade[1]))


def test_the_grade_table():
    assert RELIABILITY_FACTOR == {"A": 1.2, "B": 1.1, "C": 1.0, "D": 0.85, "E": 0.7, "F": 1.0}
    assert CREDIBILITY_FACTOR == {1: 1.2, 2: 1.1, 3: 1.0, 4: 0.85, 5: 0.7, 6: 1.0}
    assert grade_factor("A", 1) == pytest.approx(1.44)
    assert grade_factor("E", 5) == pytest.approx(0.49)
    assert grade_factor("F", 6) == grade_factor("C", 3) == 1.0
    # Better grades never score lower.
    letters, digits = "ABCDE", [1, 2, 3, 4, 5]
    for a, b in itertools.pairwise(letters):
        assert RELIABILITY_FACTOR[a] > RELIABILITY_FACTOR[b]
    for x, y in itertools.pairwise(digits):
        assert CREDIBILITY_FACTOR[x] > CREDIBILITY_FACTOR[y]


def test_an_ungraded_tip_neither_boosts_nor_zeroes_the_score():
    without_tip = score(TIP_RULE, seizure_and())
    assert without_tip == 70  # high severity, no confidence or grade to weigh
    assert score(TIP_RULE, seizure_and(graded("t1", "F6"))) == 70
    assert score(TIP_RULE, seizure_and(graded("t1", "C3"))) == 70


def test_a_good_grade_raises_the_score_and_a_poor_one_lowers_it():
    a1 = score(TIP_RULE, seizure_and(graded("t1", "A1")))
    b2 = score(TIP_RULE, seizure_and(graded("t1", "B2")))
    d4 = score(TIP_RULE, seizure_and(graded("t1", "D4")))
    e5 = score(TIP_RULE, seizure_and(graded("t1", "E5")))
    assert a1 == 100  # 70 x 1.44, capped
    assert b2 == round(70 * 1.21)
    assert d4 == round(70 * 0.85 * 0.85)
    assert e5 == round(70 * 0.49)
    assert a1 > b2 > 70 > d4 > e5 > 0


def test_several_tips_count_by_their_mean_grade():
    ev = seizure_and(graded("t1", "A1"), graded("t2", "E5"))
    bonus = TIP_RULE.score.per_event  # three events: one past the first two
    assert score(TIP_RULE, ev) == round((70 + bonus) * (1.44 + 0.49) / 2)


def test_a_rule_can_leave_the_grade_out():
    rule = TIP_RULE.model_copy(update={"score": TIP_RULE.score.model_copy(update={"grade": False})})
    assert score(rule, seizure_and(graded("t1", "E5"))) == 70
    assert score(rule, seizure_and(graded("t1", "A1"))) == 70


def test_the_grade_is_read_from_a_fact_held_as_plain_values():
    t = graded("t1", "B2")
    held = Fact.from_doc(orjson.loads(orjson.dumps(t.doc)))
    assert score(TIP_RULE, seizure_and(held)) == score(TIP_RULE, seizure_and(t)) == 85


# -- the sharing policy on tips --------------------------------------------------------------------


def tip_alert(where: tuple[float, float], **kw: Any) -> RawAlert:
    t = fact(
        id="t1",
        type="tip",
        country="MX",
        agency="FGR-DENUNCIA",
        channel="app",
        text=TEXT,
        reliability="B",
        credibility=2,
        uncertainty_m=1500,
        lat=where[0],
        lon=where[1],
        **kw,
    )
    w = fact(
        id="w1",
        type="weapon",
        at="2h",
        country="MX",
        agency="SEDENA",
        weapon_event="seizure",
        lat=where[0],
        lon=where[1],
    )
    return RawAlert(
        alert_id=alert_id(TIP_RULE.id, ["t1", "w1"]),
        rule_id=TIP_RULE.id,
        title=TIP_RULE.title,
        severity="high",
        score=85,
        raised_at=w.ts,
        first_seen=t.ts,
        last_seen=w.ts,
        lat=where[0],
        lon=where[1],
        evidence=(t, w),
        key=None,
        extra_recipients=(),
    )


def released(alert: RawAlert, dest: str) -> tuple[Any, Any]:
    res = release(alert, dest, ["MX", "US"], POLICY, now=0.0, topic=f"alerts.{dest.lower()}")
    assert res is not None
    return res


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("text", ("redact", "cross-border-tip-text (MLAT art. 7)")),
        ("category", ("release", "cross-border-tip-details (MLAT art. 7)")),
        ("channel", ("release", "cross-border-tip-details (MLAT art. 7)")),
        ("uncertainty_m", ("release", "cross-border-tip-details (MLAT art. 7)")),
        ("reliability", ("release", "cross-border-tip-details (MLAT art. 7)")),
        ("credibility", ("release", "cross-border-tip-details (MLAT art. 7)")),
        ("plate", ("pseudonymize", "cross-border-identifiers (MLAT art. 7)")),
        ("person_ref", ("pseudonymize", "cross-border-identifiers (MLAT art. 7)")),
        ("*", ("release", "cross-border-event-details (MLAT art. 7)")),
        ("tipster_phone", ("redact", DEFAULT_WITHHOLD)),
    ],
)
def test_default_policy_on_each_tip_field_across_the_border(field: str, expected: Any):
    for origin, dest in (("MX", "US"), ("US", "MX")):
        assert POLICY.action(origin, dest, "tip", field, at=NOGALES_US) == expected
        assert POLICY.action(origin, dest, "tip", field, at=INLAND_MX) == expected


@pytest.mark.parametrize("field", ["text", "category", "plate", "person_ref", "credibility"])
def test_a_countrys_own_tips_go_as_is(field: str):
    assert POLICY.action("MX", "MX", "tip", field, at=INLAND_MX) == ("release", "own-data")


def test_a_tips_text_stays_home_and_the_rest_crosses_as_the_policy_says():
    alert = tip_alert(NOGALES_US, plate="XKZ-481", person_ref="MX-P-9")
    mx, _ = released(alert, "MX")
    us, us_audit = released(alert, "US")
    home = mx.evidence[0].fields
    assert home["text"] == TEXT and home["plate"] == "XKZ-481" and home["person_ref"] == "MX-P-9"
    assert not mx.redactions
    away = us.evidence[0].fields
    assert "text" not in away
    assert TEXT not in us.model_dump_json() and "555-0199" not in us.model_dump_json()
    assert {k: away[k] for k in ("category", "channel", "uncertainty_m")} == {
        "category": "weapons",
        "channel": "app",
        "uncertainty_m": 1500,
    }
    assert (away["reliability"], away["credibility"]) == ("B", 2)
    assert away["plate"][0].startswith("pn:plate:ktip:")
    assert away["person_ref"][0].startswith("pn:person_ref:ktip:")
    assert away["location"] == {"lat": NOGALES_US[0], "lon": NOGALES_US[1]}  # border zone
    assert {(r.path, r.action, r.policy_rule) for r in us.redactions} == {
        ("evidence[0].fields.text", "redact", "cross-border-tip-text (MLAT art. 7)"),
        ("evidence[0].fields.plate", "pseudonymize", "cross-border-identifiers (MLAT art. 7)"),
        (
            "evidence[0].fields.person_ref",
            "pseudonymize",
            "cross-border-identifiers (MLAT art. 7)",
        ),
    }
    audited = {a.path: (a.action, a.policy_rule) for a in us_audit.actions}
    assert audited["evidence[0].fields.text"] == ("redact", "cross-border-tip-text (MLAT art. 7)")


def test_a_tip_outside_the_border_zone_crosses_generalised():
    us, _ = released(tip_alert(INLAND_MX), "US")
    loc = us.evidence[0].fields["location"]
    assert loc["precision_m"] == 1000 and loc != {"lat": INLAND_MX[0], "lon": INLAND_MX[1]}
    assert "text" not in us.evidence[0].fields


def test_the_policy_file_refuses_an_unknown_tip_field():
    from engine.errors import PolicyError
    from engine.policy import parse_policy

    text = (
        (REPO / "rules" / "policy.yaml")
        .read_text()
        .replace("      text: redact", "      texts: redact")
    )
    with pytest.raises(PolicyError, match="unknown field 'texts' for event types \\['tip'\\]"):
        parse_policy(text, Keyring.parse({}, source="none"))


# -- `fusion tip` ----------------------------------------------------------------------------------


def cli_args(**kw: Any) -> argparse.Namespace:
    base: dict[str, Any] = {
        "category": "weapons",
        "lat": 31.335,
        "lon": -110.94,
        "text": "rifles in a white van",
        "uncertainty_m": 1000.0,
        "channel": "hotline",
        "grade": "b2",
        "country": "us",
        "agency": None,
        "at": "2026-01-05T12:00:00-07:00",
        "id": "tip-cli",
        "plate": None,
        "person_ref": None,
    }
    return argparse.Namespace(**{**base, **kw})


def test_fusion_tip_builds_a_valid_tip_from_its_arguments():
    doc = tip_event(cli_args())
    assert doc["source"] == {"agency": "CBP-TIPS", "country": "US"}
    assert (doc["reliability"], doc["credibility"]) == ("B", 2)
    assert Tip.model_validate(doc).event_id == "tip-cli"
    assert tip_event(cli_args(country="MX"))["source"]["agency"] == "FGR-DENUNCIA"
    assert tip_event(cli_args(plate="ABC-1"))["plate"] == "ABC-1"
    with pytest.raises(ValidationError, match="credibility"):
        tip_event(cli_args(grade="B9"))
    with pytest.raises(ValidationError, match="reliability"):
        tip_event(cli_args(grade="X2"))
