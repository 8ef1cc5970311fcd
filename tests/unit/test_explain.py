"""`fusion explain` on every default-pack rule: what it prints holds for the evidence."""

from __future__ import annotations

import io
import math
import re
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.correlators.event_count import EventCountRule
from engine.correlators.incursion import IncursionRule, depth_m
from engine.correlators.proximity import ProximityRule
from engine.correlators.sequence import SequenceRule
from engine.correlators.temporal import TemporalRule
from engine.correlators.value_count import ValueCountRule
from engine.correlators.watchlist import WatchlistRule
from engine.engine import Engine
from engine.explain import duration
from engine.facts import Fact
from engine.geo import haversine_km
from engine.hits import RawAlert
from engine.policy import Keyring, load_policy
from engine.release import InterimPolicy, recipients, release_json
from engine.replay import correlate_file
from engine.rulefiles import load_rules
from engine.rules import RuleBase, RuleSet, RuleTest
from engine.ruletests import DEFAULT_START, build_event
from engine.trace import trace_event
from schemas.alerts import Alert
from streams.keys import generate
from streams.tools.explain_show import _lookup, format_explanation, format_trace
from streams.tools.explain_show import main as explain_main

REPO = Path(__file__).resolve().parents[2]
RULESET = load_rules([REPO / "rules"])
PARTNERS = frozenset({"US", "MX"})


def firing_tests() -> list[tuple[RuleBase, RuleTest]]:
    return [(r, t) for r in RULESET.rules for t in r.tests if t.expect]


def events_of(test: RuleTest) -> list[Fact]:
    start = test.start or DEFAULT_START
    return [build_event(spec, start) for spec in test.events]


def ndjson(facts: list[Fact]) -> bytes:
    return b"\n".join(orjson.dumps(f.doc) for f in facts) + b"\n"


def alerts_for(rule: RuleBase, facts: list[Fact]) -> list[RawAlert]:
    """The rule's alerts over the facts in the order given (as its own tests run it)."""
    engine = Engine(RuleSet([rule]))
    alerts = []
    for f in facts:
        alerts.extend(engine.process(f))
        alerts.extend(engine.advance(engine.watermark))
    alerts.extend(engine.flush(max(f.ts for f in facts)))
    return alerts


def replayed(rule: RuleBase, facts: list[Fact]) -> list[RawAlert]:
    """The rule's alerts when the whole pack replays the facts as a file (event-time order)."""
    alerts, _ = correlate_file(io.BytesIO(ndjson(facts)), RULESET, partners=PARTNERS)
    return [a for a in alerts if a.rule_id == rule.id]


def _num(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in {text!r}"
    return float(m.group(1))


def check_conditions(rule: RuleBase, alert: RawAlert, ex: dict[str, Any]) -> None:
    """Recompute each printed condition from the evidence, and check it holds."""
    # the explanation is of the match that raised the alert; events that joined it later are
    # in the evidence too
    named = {e["event_id"] for e in ex["evidence"]}
    ev = tuple(f for f in alert.evidence if f.event_id in named)
    span = ev[-1].ts - ev[0].ts
    text = " | ".join(c["text"] for c in ex["conditions"])
    assert ex["summary"]
    assert named == {f.event_id for f in ev}
    assert all(e["met"] for e in ex["evidence"])
    key = rule.route_key()
    if key is not None:
        assert len({key.value(f) for f in ev}) == 1, "the evidence shares the key"
        assert ex["key"] == key.name
    if isinstance(rule, ProximityRule):
        far = _num(r"farthest ([\d.]+) km", text)
        best = min(max(haversine_km(c.lat, c.lon, f.lat, f.lon) for f in ev) for c in ev)
        assert far == pytest.approx(round(best, 1), abs=0.051)
        assert best <= rule.radius_km
        assert span <= rule.window
        assert f"span {duration(span)}" in text
        for name, n in rule.needed().items():
            got = sum(1 for f in ev if rule.select[name].matches(f))
            assert got >= n
    elif isinstance(rule, EventCountRule):
        assert f"{len(ev)} events within {duration(span)}" in text
        assert len(ev) >= rule.threshold and span <= rule.window
    elif isinstance(rule, ValueCountRule):
        values = {str(f.get(rule.field)) for f in ev}
        assert f"{len(values)} different {rule.field} values" in text
        assert len(values) >= rule.threshold and span <= rule.window
    elif isinstance(rule, TemporalRule):
        assert span <= rule.window
        for name, sel in rule.kinds.items():
            assert any(sel.matches(f) for f in ev), name
    elif isinstance(rule, WatchlistRule):
        sighting, entries = ev[-1], ev[:-1]
        assert rule.list_.matches(entries[-1]) and any(s.matches(sighting) for s in rule.match)
        gap = sighting.ts - max(e.ts for e in entries)
        assert f"sighted {duration(gap)} after the newest list entry" in text
        assert 0 <= gap <= rule.window
    elif isinstance(rule, SequenceRule):
        present = [s for s in rule.steps if not s.absent]
        for step, f in zip(present, ev, strict=True):
            assert step.matches(f)
        assert span <= rule.window
        absent = rule.absence
        if absent is not None:
            assert absent.within is not None
            assert ex["absence_checked_until"] == pytest.approx(ev[-1].ts + absent.within)
    elif isinstance(rule, IncursionRule):
        assert f"inside for {duration(span)} (at least {duration(rule.dwell)})" in text
        assert span >= rule.dwell
        for f in ev:
            assert depth_m(f) > rule.min_depth_m
            assert f"{depth_m(f):.0f} m inside {f.get('territory')} territory" in " ".join(
                m["text"] for e in ex["evidence"] for m in e["met"]
            )
    else:  # a rule type added later must be explained and checked here
        pytest.fail(f"no check for rule type {rule.type_name}")


@pytest.mark.parametrize(
    ("rule", "test"), firing_tests(), ids=lambda x: getattr(x, "id", getattr(x, "name", ""))
)
def test_the_explanation_holds_for_the_evidence(rule: RuleBase, test: RuleTest) -> None:
    facts = events_of(test)
    alerts = alerts_for(rule, facts)
    assert alerts, f"{rule.id}: {test.name} raised nothing in replay"
    for a in alerts:
        assert a.explanation is not None
        check_conditions(rule, a, a.explanation)
        ex = a.explanation
        named = {e["event_id"] for e in ex["evidence"]}
        times = [f.ts for f in a.evidence if f.event_id in named]
        assert ex["window_start"] <= min(times) and ex["window_end"] >= max(times)


def test_every_default_rule_is_explained() -> None:
    explained = {r.id for r, t in firing_tests() if alerts_for(r, events_of(t))}
    assert explained == {r.id for r in RULESET.rules}


@pytest.mark.parametrize("rule", RULESET.rules, ids=lambda r: r.id)
def test_fusion_explain_prints_it_for_an_alert_replayed_from_a_file(
    rule: RuleBase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    facts, alerts = next(
        (fs, al) for t in rule.tests if t.expect if (al := replayed(rule, fs := events_of(t)))
    )
    src = tmp_path / "events.ndjson"
    src.write_bytes(ndjson(facts))
    alert = alerts[0]
    assert explain_main([alert.alert_id[:12], "--input", str(src)]) == 0
    out = capsys.readouterr().out
    assert f"alert {alert.alert_id}: {rule.id}" in out
    assert alert.explanation is not None
    for c in alert.explanation["conditions"]:
        assert c["text"] in out or (c["vague"] or "") in out
    for f in alert.evidence:
        assert f"{f.event_id} as " in out


def test_the_released_explanation_points_at_the_key_as_released() -> None:
    rule = RULESET.by_id["watchlist-plate"]
    test = next(t for t in rule.tests if t.expect)
    facts = [
        build_event({**spec, "country": "MX", "agency": "FGR"}, DEFAULT_START)
        if spec.get("type") == "suspect"
        else build_event(spec, DEFAULT_START)
        for spec in test.events
    ]
    alert = alerts_for(rule, facts)[0]
    policy = load_policy(REPO / "rules" / "policy.yaml", Keyring.parse(generate(), source="t"))
    who = recipients(alert, PARTNERS, policy)
    assert who == ["MX", "US"]
    for dest in who:
        out = release_json(alert, dest, who, policy, now=alert.raised_at, topic="alerts.x")
        assert out is not None
        body = out[0]
        model = Alert.model_validate(body)
        assert model.explanation is not None and model.explanation.key == "plate"
        path = model.explanation.key_path
        assert path is not None and path.endswith(".plate")
        text = format_explanation(body)
        assert "matched plate: " in text and path in text
        value = _lookup(body, path)
        raw = next(f.doc["plate"] for f in alert.evidence if f.event_type == "suspect")
        if dest == "MX":
            assert value == raw
        else:  # the MX entry's plate reaches the US as pseudonyms only
            assert value and raw not in orjson.dumps(value).decode()


def test_an_explanation_names_no_withheld_event() -> None:
    """Evidence the policy drops for a destination is not in its explanation."""
    rule = RULESET.by_id["suspect-near-seizure"]
    test = next(t for t in rule.tests if t.expect)
    alert = alerts_for(rule, events_of(test))[0]

    class DropSuspects(InterimPolicy):
        def action(
            self,
            origin: str,
            destination: str,
            event_type: str,
            field: str,
            at: tuple[float, float] | None = None,
        ) -> tuple[str, str]:
            if event_type == "suspect" and field == "*":
                return "drop", "no-suspects"
            return super().action(origin, destination, event_type, field, at)

    out = release_json(alert, "US", ["US"], DropSuspects(), now=0.0, topic="alerts.us")
    assert out is not None
    ex = out[0]["explanation"]
    kept = {e["event_id"] for e in out[0]["evidence"]}
    assert {e["event_id"] for e in ex["evidence"]} == kept
    assert all(f.event_type != "suspect" or f.event_id not in kept for f in alert.evidence)


def test_explain_event_says_which_rules_took_it_and_why_not_the_others() -> None:
    rule = RULESET.by_id["suspect-near-seizure"]
    test = next(t for t in rule.tests if t.expect)
    facts = events_of(test)
    alert = replayed(rule, facts)[0]
    target = alert.evidence[-1].event_id
    trace = trace_event(io.BytesIO(ndjson(facts)), RULESET, target, partners=PARTNERS)
    assert trace.rules[rule.id].outcome == "fired"
    assert trace.rules[rule.id].alerts == [alert.alert_id]
    # every other rule is accounted for, with a reason
    assert set(trace.rules) == {r.id for r in RULESET.rules}
    for rec in trace.rules.values():
        assert rec.why
    not_selected = [r for r in trace.rules.values() if r.outcome == "not selected"]
    assert not_selected and all("takes" in r.why or "needs" in r.why for r in not_selected)
    text = format_trace(trace)
    assert f"{rule.id}: fired" in text and alert.alert_id in text


def test_explain_event_too_late_and_no_key() -> None:
    rule = RULESET.by_id["crossing-without-inspection"]
    start = DEFAULT_START
    ahead = build_event(
        {
            "id": "a1",
            "type": "detection",
            "at": "0m",
            "plate": "ABC1",
            "sensor_kind": "lpr",
            "lat": 31.3330,
            "lon": -110.9400,
        },
        start,
    )
    later = build_event(
        {
            "id": "b1",
            "type": "detection",
            "at": "3h",
            "plate": "XYZ9",
            "sensor_kind": "lpr",
            "lat": 31.3330,
            "lon": -110.9400,
        },
        start,
    )
    old = build_event(
        {
            "id": "c1",
            "type": "detection",
            "at": "1h",
            "plate": "ABC1",
            "sensor_kind": "inspection",
            "lat": 31.3330,
            "lon": -110.9400,
        },
        start,
    )
    plateless = build_event(
        {
            "id": "d1",
            "type": "detection",
            "at": "3h",
            "subject_kind": "vehicle",
            "sensor_kind": "lpr",
        },
        start,
    )
    src = ndjson([ahead, later])
    # `old` arrives after the watermark has moved 2 h past it: a worker meets it late
    stream = src + ndjson([old, plateless])
    trace = trace_event(io.BytesIO(stream), RULESET, "c1", partners=PARTNERS)
    assert trace.fact is not None
    assert math.isfinite(trace.fact.ts)
    # in a file replay every event is put in order first: nothing is late
    assert trace.rules[rule.id].outcome in ("taken", "fired")
    no_key = trace_event(io.BytesIO(stream), RULESET, "d1", partners=PARTNERS)
    assert all(r.outcome != "fired" for r in no_key.rules.values())


def test_explain_event_reports_a_refused_or_missing_event(tmp_path: Path) -> None:
    bad = b'{"event_id": "z1", "event_type": "detection", "occurred_at": "yesterday"}\n'
    trace = trace_event(io.BytesIO(bad), RULESET, "z1", partners=PARTNERS)
    assert trace.rejected and "occurred_at" in trace.rejected
    assert "refused at validation" in format_trace(trace)
    src = tmp_path / "e.ndjson"
    src.write_bytes(bad)
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert explain_main(["--event", "nope", "--input", str(src)]) == 1
    assert "not found" in buf.getvalue()


def _crossing_with_one_mexican_report() -> RawAlert:
    """Four US detections and one Mexican, in Sonora, 50 km from the line (outside the
    policy's border zone: Mexico's location reaches the US generalised)."""
    rule = RULESET.by_id["coordinated-crossing"]
    spots = [(30.9000, -110.6000), (30.9040, -110.6050), (30.8970, -110.5930),
             (30.9060, -110.5960), (30.8950, -110.6070)]
    facts = [
        build_event({"id": f"us-{i}", "type": "detection", "at": f"{i}m", "lat": lat,
                     "lon": lon, "subject_kind": "person"}, DEFAULT_START)
        for i, (lat, lon) in enumerate(spots[1:], start=1)
    ]
    facts.insert(0, build_event({"id": "mx-1", "type": "detection", "at": "0m",
                                 "lat": spots[0][0], "lon": spots[0][1], "country": "MX",
                                 "agency": "GN", "subject_kind": "person"}, DEFAULT_START))
    (alert,) = alerts_for(rule, facts)
    return alert


def test_distances_never_undo_a_generalised_location() -> None:
    """A partner that receives an event's location generalised gets no distance measured
    from or to it: four exact distances would pin it inside its cell."""
    alert = _crossing_with_one_mexican_report()
    policy = load_policy(REPO / "rules" / "policy.yaml", Keyring.parse(generate(), source="t"))
    out = release_json(alert, "US", ["MX", "US"], policy, now=0.0, topic="alerts.us")
    assert out is not None
    body = out[0]
    mx = next(e for e in body["evidence"] if e["event_id"] == "mx-1")
    assert mx["fields"]["location"]["precision_m"] == 1000  # generalised for the US
    ex = body["explanation"]
    lines = ex["conditions"] + [m for e in ex["evidence"] for m in e["met"]]
    measured = [ln for ln in lines if re.search(r"\d+\.\d km", ln)]
    # every distance printed to the US is between two of its own exact locations
    assert all("mx-1" not in ln for ln in measured), measured
    mx_lines = next(e["met"] for e in ex["evidence"] if e["event_id"] == "mx-1")
    assert not any(re.search(r"\d+\.\d km", ln) for ln in mx_lines), mx_lines
    assert not any("farthest" in ln for ln in ex["conditions"])
    # a destination with every location exact (here: a policy releasing locations) gets them
    own = release_json(alert, "US", ["US"], InterimPolicy(), now=0.0, topic="alerts.us")
    assert own is not None
    assert any("farthest" in ln for ln in own[0]["explanation"]["conditions"])


def test_withheld_evidence_is_not_named_or_timed_in_the_explanation() -> None:
    alert = _crossing_with_one_mexican_report()

    class DropMexico(InterimPolicy):
        def action(self, origin: str, destination: str, event_type: str, field: str,
                   at: tuple[float, float] | None = None) -> tuple[str, str]:
            if origin == "MX" and destination == "US" and field == "*":
                return "drop", "no-mexican-events"
            return super().action(origin, destination, event_type, field, at)

    out = release_json(alert, "US", ["US"], DropMexico(), now=0.0, topic="alerts.us")
    assert out is not None
    ex = out[0]["explanation"]
    assert "mx-1" not in orjson.dumps(ex).decode()
    kept = [f.ts for f in alert.evidence if f.event_id != "mx-1"]
    assert Alert.model_validate(out[0]).explanation is not None
    assert ex["window_start"] == out[0]["evidence"][0]["occurred_at"]
    assert min(kept) > min(f.ts for f in alert.evidence)
