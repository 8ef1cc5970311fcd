"""The bilateral review report without a broker: the audit record's key match written by the
release step, and the report's figures from hand-made audit records (directions, rules, policy
rules, actions, time buckets, withheld fields, keys matched across the border, policy
changes), its period parsing, and a self-contained HTML page drawn from the same figures."""

from __future__ import annotations

import ast
import dataclasses
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine.release import release, release_json
from schemas.audit import AuditRecord
from streams.tools.report.aggregate import aggregate, field_name
from streams.tools.report.model import Flow, Report
from streams.tools.report.period import bucket_size, bucket_starts, parse_when
from streams.tools.report.render import render_html
from tests.unit.test_policy import DEFAULT, DROP_MX_WEAPONS_FOR_US, KEYS, fact, raw_alert

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 5, 4, 0, 0, tzinfo=UTC)
SINCE, UNTIL = T0, T0 + timedelta(days=1)
P1 = {"id": "us-mx-border-sharing", "version": "2026.1", "sha256": "a" * 64}
P2 = {"id": "us-mx-border-sharing", "version": "2026.2", "sha256": "b" * 64}
XB = "cross-border-identifiers (MLAT art. 7)"


def record(
    alert_id: str,
    destination: str,
    actions: list[tuple[str, str, str, str]],
    *,
    at: datetime = T0 + timedelta(hours=1),
    rule_id: str = "watchlist-plate",
    policy: dict[str, str] = P1,
    match: list[tuple[str, str, str]] | None = None,
) -> AuditRecord:
    """An audit record; actions as (path, action, policy rule, origin), match fields as
    (path, origin, action)."""
    return AuditRecord.model_validate(
        {
            "alert_id": alert_id,
            "rule_id": rule_id,
            "destination": destination,
            "topic": f"alerts.{destination.lower()}",
            "released_at": at.isoformat(),
            "policy": policy,
            "actions": [
                {"path": p, "action": a, "policy_rule": r, "origin": o} for p, a, r, o in actions
            ],
            "match": None
            if match is None
            else {"fields": [{"path": p, "origin": o, "action": a} for p, o, a in match]},
        }
    )


# A US suspect and an MX sighting of the same plate: released to both countries.
WATCH_TO_MX = record(
    "a1",
    "MX",
    [
        ("evidence[0].fields.person_ref", "pseudonymize", XB, "US"),
        ("evidence[0].fields.plate", "pseudonymize", XB, "US"),
        ("evidence[0].fields.risk", "release", "cross-border-event-details", "US"),
        ("evidence[1].fields.plate", "release", "own-data", "MX"),
        ("evidence[1].fields.sensor_id", "release", "own-data", "MX"),
        ("location", "release", "cross-border-location-border-zone", "US"),
        ("location", "release", "own-data", "MX"),
    ],
    match=[
        ("evidence[0].fields.plate", "US", "pseudonymize"),
        ("evidence[1].fields.plate", "MX", "release"),
    ],
)
WATCH_TO_US = record(
    "a1",
    "US",
    [
        ("evidence[0].fields.person_ref", "release", "own-data", "US"),
        ("evidence[0].fields.plate", "release", "own-data", "US"),
        ("evidence[0].fields.risk", "release", "own-data", "US"),
        ("evidence[1].fields.plate", "pseudonymize", XB, "MX"),
        ("evidence[1].fields.sensor_id", "redact", "withheld-by-default", "MX"),
        ("location", "release", "own-data", "US"),
        ("location", "release", "cross-border-location-border-zone", "MX"),
    ],
    match=[
        ("evidence[0].fields.plate", "US", "release"),
        ("evidence[1].fields.plate", "MX", "pseudonymize"),
    ],
)
# A geographic alert on Mexican data only, sent to the US too (border zone), no key.
CROWD_TO_US = record(
    "a2",
    "US",
    [
        ("evidence[0].fields.subject_kind", "release", "cross-border-event-details", "MX"),
        ("evidence[0].fields.sensor_id", "redact", "withheld-by-default", "MX"),
        ("evidence[w9]", "drop", "no-weapons (Annex B)", "MX"),
        ("location", "generalize", "cross-border-location-elsewhere", "MX"),
    ],
    rule_id="coordinated-crossing",
    at=T0 + timedelta(hours=5, minutes=30),
)
CROWD_TO_MX = record(
    "a2",
    "MX",
    [
        ("evidence[0].fields.subject_kind", "release", "own-data", "MX"),
        ("evidence[0].fields.sensor_id", "release", "own-data", "MX"),
        ("evidence[1].fields.serial", "release", "own-data", "MX"),
        ("location", "release", "own-data", "MX"),
    ],
    rule_id="coordinated-crossing",
    at=T0 + timedelta(hours=5, minutes=30),
)
RECORDS = [WATCH_TO_MX, WATCH_TO_US, CROWD_TO_US, CROWD_TO_MX]


def report_of(
    records: list[AuditRecord], since: datetime = SINCE, until: datetime = UNTIL
) -> Report:
    return aggregate(records, since=since, until=until, generated_at=UNTIL)


def flow(report: Report, origin: str, dest: str) -> Flow:
    flows = report.own_country if origin == dest else report.cross_border
    return next(f for f in flows if (f.origin, f.destination) == (origin, dest))


def mix(f: Any) -> dict[str, int]:
    return {a: n for a, n in f.model_dump().items() if a not in ("total", "withheld") and n}


# -- the audit record says which fields held the alert's key ---------------------------------


def test_release_records_which_fields_held_the_key_and_what_each_destination_got() -> None:
    listed = fact(id="s1", type="suspect", country="US", plate="ABC-123", person_ref="P-9")
    seen = fact(id="d1", type="detection", country="MX", plate="abc 123", sensor_kind="lpr")
    alert = dataclasses.replace(raw_alert(listed, seen), key="ABC123")
    who = ["MX", "US"]
    for dest, actions in (("MX", ["pseudonymize", "release"]), ("US", ["release", "pseudonymize"])):
        out = release(alert, dest, who, DEFAULT, now=0.0, topic="t")
        assert out is not None
        match = out[1].match
        assert match is not None
        got = [(f.path, f.origin, f.action) for f in match.fields]
        assert got == [
            ("evidence[0].fields.plate", "US", actions[0]),
            ("evidence[1].fields.plate", "MX", actions[1]),
        ]
        # The worker's JSON path writes the same.
        json_out = release_json(alert, dest, who, DEFAULT, now=0.0, topic="t")
        assert json_out is not None and json_out[1] == out[1].model_dump(mode="json")


def test_a_rule_without_a_key_records_no_match_and_a_dropped_event_keeps_its_key_field() -> None:
    from engine.policy import parse_policy

    listed = fact(id="s1", type="suspect", country="US", plate="ABC-123")
    out = release(raw_alert(listed), "MX", ["MX", "US"], DEFAULT, now=0.0, topic="t")
    assert out is not None and out[1].match is None

    pol = parse_policy(DROP_MX_WEAPONS_FOR_US, KEYS)
    gun = fact(id="w1", type="weapon", country="MX", serial="S1", plate="ZZ-1")
    det = fact(id="d1", type="detection", country="MX", plate="ZZ-1", sensor_kind="camera")
    alert = dataclasses.replace(raw_alert(gun, det), key="ZZ1")
    out = release(alert, "US", ["MX", "US"], pol, now=0.0, topic="t")
    assert out is not None and out[1].match is not None
    assert [(f.path, f.action) for f in out[1].match.fields] == [
        ("evidence[w1].fields.plate", "drop"),
        ("evidence[0].fields.plate", "redact"),
    ]


def test_old_audit_records_without_match_still_read() -> None:
    doc = WATCH_TO_MX.model_dump(mode="json")
    del doc["match"]
    assert AuditRecord.model_validate(doc).match is None


# -- figures --------------------------------------------------------------------------------


def test_counts_per_direction_with_own_country_apart() -> None:
    r = report_of(RECORDS)
    assert [f.label for f in r.cross_border] == ["US → MX", "MX → US"]
    assert [f.label for f in r.own_country] == ["US → US", "MX → MX"]
    t = r.totals
    assert (t.releases, t.alerts) == (4, 2)
    assert t.releases_by_destination == {"US": 2, "MX": 2}
    us_mx = flow(r, "US", "MX")
    assert (us_mx.releases, us_mx.alerts) == (1, 1)
    assert mix(us_mx.fields) == {"pseudonymize": 2, "release": 2}
    mx_us = flow(r, "MX", "US")
    assert (mx_us.releases, mx_us.alerts) == (2, 2)
    assert mix(mx_us.fields) == {
        "release": 2,
        "pseudonymize": 1,
        "generalize": 1,
        "redact": 2,
        "drop": 1,
    }
    assert mx_us.fields.withheld == 3
    mx_mx = flow(r, "MX", "MX")
    assert (mx_mx.releases, mx_mx.alerts) == (2, 2)
    assert mix(mx_mx.fields) == {"release": 7}
    assert mix(flow(r, "US", "US").fields) == {"release": 4}
    assert mix(t.cross_border) == {
        "release": 4,
        "pseudonymize": 3,
        "generalize": 1,
        "redact": 2,
        "drop": 1,
    }
    assert t.own_country.total == 11
    # Every field action of every record is counted once, in exactly one direction.
    assert t.cross_border.total + t.own_country.total == sum(len(x.actions) for x in RECORDS)


def test_per_rule_policy_rule_and_field() -> None:
    r = report_of(RECORDS)
    mx_us = flow(r, "MX", "US")
    rules = {row.name: (row.releases, row.alerts, mix(row.fields)) for row in mx_us.rules}
    assert rules == {
        "coordinated-crossing": (1, 1, {"release": 1, "redact": 1, "drop": 1, "generalize": 1}),
        "watchlist-plate": (1, 1, {"pseudonymize": 1, "redact": 1, "release": 1}),
    }
    prules = {row.name: (row.releases, mix(row.fields)) for row in mx_us.policy_rules}
    assert prules["withheld-by-default"] == (2, {"redact": 2})
    assert prules[XB] == (1, {"pseudonymize": 1})
    fields = {row.name: mix(row.fields) for row in mx_us.fields_by_name}
    assert fields == {
        "sensor_id": {"redact": 2},
        "plate": {"pseudonymize": 1},
        "subject_kind": {"release": 1},
        "whole event": {"drop": 1},
        "alert location": {"release": 1, "generalize": 1},
    }
    totals = {x.rule_id: (x.alerts, x.releases, mix(x.cross_border)) for x in r.totals.rules}
    assert totals["watchlist-plate"] == (
        1,
        {"US": 1, "MX": 1},
        {"pseudonymize": 3, "release": 3, "redact": 1},
    )


def test_what_was_withheld_by_field_and_policy_rule() -> None:
    r = report_of(RECORDS)
    withheld = [(w.field, w.policy_rule, w.action, w.count) for w in flow(r, "MX", "US").withheld]
    assert withheld == [
        ("sensor_id", "withheld-by-default", "redact", 2),
        ("whole event", "no-weapons (Annex B)", "drop", 1),
    ]
    assert flow(r, "US", "MX").withheld == []


def test_keys_matched_across_the_border() -> None:
    r = report_of(RECORDS)
    for origin, dest in (("US", "MX"), ("MX", "US")):
        m = flow(r, origin, dest).matches
        assert (m.releases_with_key, m.pseudonymized, m.released_as_is, m.withheld) == (1, 1, 0, 0)
        assert (m.linked, m.linked_pseudonymized) == (1, 1)
        assert [(row.name, mix(row.fields)) for row in m.by_field] == [
            ("plate", {"pseudonymize": 1})
        ]
    own = flow(r, "US", "US").matches
    assert (own.releases_with_key, own.released_as_is, own.linked) == (1, 1, 0)
    assert (r.totals.pseudonyms_matched, r.totals.pseudonyms_linked) == (2, 2)
    # A key only in the other country's data, withheld: counted, not linked, not a pseudonym.
    lone = record(
        "a3",
        "MX",
        [("evidence[0].fields.serial", "redact", "no-serials", "US")],
        match=[("evidence[0].fields.serial", "US", "redact")],
    )
    m = flow(report_of([lone]), "US", "MX").matches
    assert (m.releases_with_key, m.pseudonymized, m.withheld, m.linked) == (1, 0, 1, 0)


def test_counts_over_time_in_hours_or_days_and_only_inside_the_period() -> None:
    before = record(
        "a0", "MX", [("location", "release", "own-data", "MX")], at=T0 - timedelta(seconds=1)
    )
    at_end = record("a9", "MX", [("location", "release", "own-data", "MX")], at=UNTIL)
    r = report_of([*RECORDS, before, at_end])
    assert r.bucket == "hour" and len(r.totals.timeline) == 24
    assert r.totals.releases == 4
    per_hour = {b.start.hour: b.releases for b in r.totals.timeline if any(b.releases.values())}
    assert per_hour == {1: {"US": 1, "MX": 1}, 5: {"US": 1, "MX": 1}}
    mx_us = flow(r, "MX", "US")
    assert [(b.start.hour, b.releases, b.fields.total) for b in mx_us.timeline if b.releases] == [
        (1, 1, 3),
        (5, 1, 4),
    ]
    week = report_of(RECORDS, SINCE - timedelta(days=6), UNTIL)
    assert week.bucket == "day" and len(week.totals.timeline) == 7
    assert sum(b.releases for b in flow(week, "MX", "US").timeline) == 2


def test_buckets_are_aligned_and_sized_to_the_span() -> None:
    start = datetime(2026, 5, 4, 10, 17, tzinfo=UTC)
    assert bucket_size(start, start + timedelta(hours=48)) == "hour"
    assert bucket_size(start, start + timedelta(hours=49)) == "day"
    hours = bucket_starts(start, start + timedelta(hours=3), "hour")
    assert [h.hour for h in hours] == [10, 11, 12, 13]
    days = bucket_starts(start, start + timedelta(days=3), "day")
    assert [d.day for d in days] == [4, 5, 6, 7] and days[0].hour == 0


def test_policy_versions_first_and_last_use_and_what_changed() -> None:
    later = T0 + timedelta(hours=8)
    tightened = record(
        "a4",
        "MX",
        [
            ("evidence[0].fields.plate", "redact", "no-plates (art. 9)", "US"),
            ("evidence[0].fields.risk", "release", "cross-border-event-details", "US"),
            ("location", "release", "cross-border-location-border-zone", "US"),
        ],
        at=later,
        policy=P2,
    )
    r = report_of([*RECORDS, tightened])
    assert [(p.version, p.releases, p.alerts) for p in r.policies] == [
        ("2026.1", 4, 2),
        ("2026.2", 1, 1),
    ]
    first, second = r.policies
    assert first.first_used == T0 + timedelta(hours=1)
    assert first.last_used == T0 + timedelta(hours=5, minutes=30)
    assert first.first_used == first.first_used and second.first_used == second.last_used == later
    assert first.cross_border.total == 11
    assert first.cross_border_share["pseudonymize"] == round(100 * 3 / 11, 1)
    assert second.cross_border_share == {
        "release": 66.7,
        "pseudonymize": 0.0,
        "generalize": 0.0,
        "redact": 33.3,
        "drop": 0.0,
    }
    (change,) = r.policy_changes
    assert change.before == "us-mx-border-sharing 2026.1 (sha256 aaaaaaaaaaaa)"
    assert change.after.startswith("us-mx-border-sharing 2026.2") and change.at == later
    assert change.share_change["redact"] == round(33.3 - round(100 * 2 / 11, 1), 1)
    assert [(c.flow, c.field, c.before, c.after) for c in change.fields] == [
        ("US → MX", "plate", ["pseudonymize"], ["redact"]),
    ]
    assert report_of(RECORDS).policy_changes == []


def test_field_names_from_paths() -> None:
    assert field_name("evidence[3].fields.plate") == "plate"
    assert field_name("location") == "alert location"
    assert field_name("evidence[1].fields.location") == "location"
    assert field_name("evidence[ev-1]") == "whole event"
    assert field_name("evidence[ev-1].fields.serial") == "serial"


def test_an_empty_period_still_shows_both_directions() -> None:
    r = report_of([])
    assert [f.label for f in r.cross_border] == ["US → MX", "MX → US"]
    assert r.totals.releases == 0 and r.policies == [] and r.policy_changes == []
    assert "nothing released in this period" in render_html(r)


# -- the period -----------------------------------------------------------------------------


def test_since_and_until_as_times_or_durations_back_from_now() -> None:
    now = datetime(2026, 5, 10, 12, 0, tzinfo=UTC)
    assert parse_when("7d", now) == now - timedelta(days=7)
    assert parse_when("1h30m", now) == now - timedelta(minutes=90)
    assert parse_when("now", now) == now
    assert parse_when("2026-05-01T00:00:00Z", now) == datetime(2026, 5, 1, tzinfo=UTC)
    assert parse_when("2026-05-01T02:00:00-06:00", now) == datetime(2026, 5, 1, 8, tzinfo=UTC)
    assert parse_when("2026-05-01", now) == datetime(2026, 5, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match=r"expected an RFC 3339 time .* got 'last week'"):
        parse_when("last week", now)


# -- the page -------------------------------------------------------------------------------


def test_the_page_is_self_contained_and_shows_the_figures() -> None:
    r = report_of(RECORDS)
    html = render_html(r)
    assert html.startswith("<!doctype html>")
    assert "<script" not in html and "src=" not in html and "@import" not in html
    assert "url(" not in html and "<link" not in html
    # The only URL is the SVG namespace, which is a name, not a request.
    assert set(re.findall(r"https?://[^'\" ]+", html)) == {"http://www.w3.org/2000/svg"}
    assert "Content-Security-Policy" in html
    for text in (
        "2026-05-04 00:00 UTC to 2026-05-05 00:00 UTC",
        "us-mx-border-sharing 2026.1 (sha256 aaaaaaaaaaaa)",
        "US → MX",
        "MX → US",
        "Own-country releases",
        "no-weapons (Annex B)",
        "withheld-by-default",
        "Keys matched across the border",
    ):
        assert text in html, text
    assert html.index("id='totals'") < html.index("id='flow-US-MX'") < html.index("id='policy'")
    assert html.count("<svg") == 1 + 2 + 1  # overview, each cross-border direction, policies


def test_the_page_escapes_what_it_quotes() -> None:
    evil = record(
        "a5",
        "MX",
        [("evidence[0].fields.<b>x</b>", "redact", "<script>alert(1)</script>", "US")],
        rule_id="watchlist-plate",
    )
    html = render_html(report_of([evil]))
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>x</b>" not in html


def test_every_figure_on_the_page_is_in_the_json_twin() -> None:
    """The page is drawn from the report alone: each number in its text is a figure of the
    JSON twin (or a date, a percent or a bucket label made from one)."""
    r = report_of(RECORDS)
    html = render_html(r)
    # Charts' axes are scales, not figures (each bar's own figure is in its tooltip); dates and
    # hours are the period's.
    text = re.sub(r"<style>.*?</style>|<svg.*?</svg>", " ", html, flags=re.S)
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d|\d\d [A-Z][a-z]{2}( \d\d:00)?", " ", text)
    text = re.sub(r"<[^>]+>", " ", text)
    numbers = {
        int(n.replace(",", "")) for n in re.findall(r"(?<![\w.:-])\d[\d,]*(?![\w.:-])", text)
    }
    figures: set[int] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, int) and not isinstance(node, bool):
            figures.add(node)

    walk(r.model_dump(mode="json"))
    assert numbers, text
    assert numbers - figures == set()


def test_the_pure_part_imports_no_kafka_client() -> None:
    banned = (
        "kafka",
        "aiokafka",
        "faust",
        "prometheus_client",
        "streams.clients",
        "streams.settings",
    )
    for name in ("model", "aggregate", "period", "charts", "render"):
        tree = ast.parse((REPO / "streams" / "tools" / "report" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            for mod in mods:
                assert not mod.startswith(banned), f"streams/tools/report/{name}.py imports {mod}"


def test_dispositions_per_country_and_rule_from_the_triage_of_the_periods_alerts() -> None:
    from engine.triage import TriageState
    from streams.tools.report.read import disposition_rows

    states = [
        TriageState("a1", "MX", revision=3, status="closed", reason="false_positive"),
        TriageState("a1", "US", revision=1, status="acknowledged"),
        TriageState("elsewhere", "MX", revision=2, status="closed", reason="duplicate"),
    ]
    rows = disposition_rows(states, [WATCH_TO_MX, record("a1", "US", [])])
    assert [(r.country, r.rule_id, r.triaged, r.open, r.closed, r.share) for r in rows] == [
        ("MX", "watchlist-plate", 1, 0, {"false_positive": 1}, {"false_positive": 100.0}),
        ("US", "watchlist-plate", 1, 1, {}, {}),
    ]
    report = aggregate([WATCH_TO_MX], since=SINCE, until=UNTIL, generated_at=UNTIL)
    html = render_html(report.model_copy(update={"dispositions": rows}))
    assert "<table class='dispositions' data-country='MX'>" in html
    assert "false positive" in html and "1 (100 %)" in html
