"""The `geofence` rule type (engine/correlators/geofence.py): jitter narrower than the
hysteresis never flaps; a track that truly crosses and dwells fires once; detections can only
be `inside`; an unknown area is refused with the valid options."""

from __future__ import annotations

import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.border import default_border
from engine.correlators.geofence import GeofenceCorrelator, GeofenceRule
from engine.errors import RuleSetError
from engine.facts import Fact
from engine.rulefiles import parse_rules_text
from engine.ruletests import DEFAULT_START, build_event

LON = -110.5
BUFFER_M = 50.0
M_PER_DEG_LAT = 110_900.0  # at 31° N


def _line_lat() -> float:
    line = shapely.LineString([(lon, lat) for lat, lon in default_border().line])
    return float(line.intersection(shapely.LineString([(LON, 30.0), (LON, 33.0)])).y)


LINE_LAT = _line_lat()


def rule(transition: str, dwell: str = "2m") -> GeofenceRule:
    text = f"""\
id: fence-{transition}
type: geofence
title: A track {transition} the other country
severity: high
key: track_id
select: {{type: track}}
areas: other-country
transition: {transition}
buffer_m: {BUFFER_M}
dwell: {dwell}
window: 1d
"""
    (r,) = parse_rules_text(text).rules
    assert isinstance(r, GeofenceRule)
    return r


def fix(n: int, seconds: float, south_m: float) -> Fact:
    """A US track's position `south_m` metres south of the border line (negative: north)."""
    spec = {"id": f"p{n}", "type": "track", "at": f"{seconds}s", "track_id": "T-1"}
    spec |= {"lat": LINE_LAT - south_m / M_PER_DEG_LAT, "lon": LON}
    return build_event(spec, DEFAULT_START)


def hits(transition: str, offsets: list[float], step_s: float = 20.0) -> list[list[str]]:
    c = GeofenceCorrelator(rule(transition))
    out = []
    for n, south in enumerate(offsets):
        f = fix(n, n * step_s, south)
        out += [[e.event_id for e in h.evidence] for h in c.on_fact(f, "T-1", True, f.ts)]
    return out


jitter = st.lists(st.floats(-(BUFFER_M - 10), BUFFER_M - 10), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(start=st.sampled_from([-500.0, 500.0]), wobble=jitter)
def test_jitter_narrower_than_the_buffer_never_flaps(start, wobble):
    for transition in ("enter", "exit"):
        assert hits(transition, [start, *wobble]) == []
    # inside: a track starting deep in Mexico fires once, whatever it does near the line
    assert len(hits("inside", [start, *wobble])) <= (1 if start > 0 else 0)


@settings(max_examples=60, deadline=None)
@given(
    before=jitter,
    depth=st.floats(BUFFER_M + 20, 3000),
    stay=st.lists(st.floats(-10, 10), min_size=8, max_size=30),
)
def test_a_true_crossing_that_dwells_fires_once(before, depth, stay):
    offsets = [-500.0, *before, *(depth + s for s in stay)]  # 20 s apart: >= 2 min inside
    got = hits("enter", offsets)
    assert len(got) == 1
    first, last = got[0]
    assert int(first[1:]) == 1 + len(before)  # the first position past the buffer
    assert int(last[1:]) - int(first[1:]) >= 6  # two minutes later
    assert hits("exit", offsets) == []


def test_a_crossing_that_does_not_dwell_does_not_fire():
    assert hits("enter", [-500.0, 300.0, 300.0, -300.0, -300.0, -300.0, 300.0]) == []


def test_detections_can_only_be_inside():
    text = """\
id: fence-detections
type: geofence
title: Detections entering the other country
severity: high
select: {type: detection}
areas: other-country
transition: enter
buffer_m: 50
dwell: 0s
window: 1h
"""
    with pytest.raises(RuleSetError, match="a geofence over detections can only ask `inside`"):
        parse_rules_text(text)
    (r,) = parse_rules_text(text.replace("transition: enter", "transition: inside")).rules
    assert isinstance(r, GeofenceRule)
    c = GeofenceCorrelator(r)
    spec = {"id": "d1", "type": "detection", "lat": LINE_LAT - 0.01, "lon": LON}
    d = build_event(spec, DEFAULT_START)  # ~1 km into Mexico, reported by the US
    (hit,) = c.on_fact(d, None, True, d.ts)
    assert hit.evidence == (d,) and hit.reason == "MX territory"


def test_an_unknown_area_is_refused_with_the_valid_options():
    bad = """\
id: fence-x
type: geofence
title: Into an unknown area
severity: low
key: track_id
select: {type: track}
areas: [usbp-xyz]
transition: enter
buffer_m: 10
dwell: 0s
window: 1h
"""
    with pytest.raises(
        RuleSetError,
        match=r"unknown area 'usbp-xyz'; valid options are \['other-country', 'usbp-sdc'",
    ):
        parse_rules_text(bad)


def test_an_area_of_responsibility_as_fence():
    r = rule("enter").model_copy(update={"areas": ["usbp-tca"]})
    c = GeofenceCorrelator(r)
    phoenix = build_event(
        {"id": "a", "type": "track", "at": "0s", "lat": 33.45, "lon": -112.07}, DEFAULT_START
    )
    inside = [
        build_event(
            {"id": f"b{i}", "type": "track", "at": f"{60 * i}s", "lat": 31.5, "lon": -111.0},
            DEFAULT_START,
        )
        for i in range(1, 5)
    ]
    got = [h for f in (phoenix, *inside) for h in c.on_fact(f, "T-1", True, f.ts)]
    assert [[e.event_id for e in h.evidence] for h in got] == [["b1", "b3"]]
    assert got[0].reason == "Tucson Sector"
