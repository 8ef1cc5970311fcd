"""Alert versions on the real broker: a crossing that grows is updated under one id, an
inspection that comes in late withdraws a crossing-without-inspection alert on both
countries' topics, in TAK and in STIX, one that comes after the corrections span is counted
and leaves the alert standing, and a plate read 100 times gives a bounded number of versions.

Each phase is published once the one before has been taken (all inputs then go idle, and
event time is the newest event's), so that "late" means late for the pipeline."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from engine.versions import MAX_EVIDENCE
from tests.integration.conftest import Lab, Worker, until
from tests.integration.test_pipeline import SONORA, event
from tests.integration.test_stix import fusion, sighting
from tests.integration.test_tak import CONSOLE, TakClient, TakServer, cot_time, uid
from tests.integration.test_tak import tak_servers as tak_servers
from tests.integration.test_tak import taky as taky
from tests.unit.test_stix import assert_valid

pytestmark = pytest.mark.integration

BORDER = (31.3330, -110.9400)  # within 1 km of the line at Nogales: both countries receive
TUCSON = (32.2226, -110.9747)
H, M = 3600.0, 60.0


def send(lab: Lab, *events: dict[str, Any]) -> None:
    for e in events:
        lab.send(e["event_type"], e, key=uuid.uuid4().bytes)
    lab.flush()


def versions(lab: Lab, cc: str, rule: str) -> dict[str, list[dict[str, Any]]]:
    """Every version on a country's topic of the rule's alerts, by alert id, in order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for a in lab.read_all(cc):
        if a["rule_id"] == rule:
            out.setdefault(a["alert_id"], []).append(a)
    return {aid: sorted(vs, key=lambda v: v["version"]) for aid, vs in out.items()}


def plate_alert(lab: Lab, cc: str, rule: str, event_id: str) -> list[dict[str, Any]]:
    """The versions of the rule's alert on a country's topic whose evidence holds the event."""
    for vs in versions(lab, cc, rule).values():
        if any(e["event_id"] == event_id for v in vs for e in v["evidence"]):
            return vs
    return []


def wait_for(lab: Lab, w: Worker, what: str, check: Callable[[], bool]) -> None:
    def ready() -> bool:
        assert w.proc.poll() is None, f"worker exited:\n{w.logs()}"
        return check()

    until(ready, what, timeout=90)


def event_time_reaches(lab: Lab, w: Worker, at: float) -> None:
    """Wait until every correlate partition's event time has reached `at` (seconds from now
    when the event was made): the marks reach a partition with nothing routed to it a moment
    after the rest."""
    routed = lab.env["FUSION_TOPIC_ROUTED"]
    partitions = len(lab.end_offsets([routed]))
    target = time.time() + at - 60  # the events were made up to a minute ago

    def reached() -> bool:
        marks = [
            float(line.rsplit(" ", 1)[1])
            for line in w.metrics().splitlines()
            if line.startswith("fusion_watermark_seconds{") and 'stage="correlate"' in line
        ]
        return len(marks) >= partitions and min(marks) >= target

    wait_for(lab, w, f"event time {at / H:.1f} h from now on every partition", reached)


def lpr(plate: str, at: float) -> dict[str, Any]:
    return event("detection", at=at, where=BORDER, plate=plate, sensor_kind="lpr")


def inspection(plate: str, at: float) -> dict[str, Any]:
    return event("detection", at=at, where=BORDER, plate=plate, sensor_kind="inspection")


def clock(at: float) -> dict[str, Any]:
    """An event that moves event time on and that no rule turns into an alert."""
    return event("track", at=at, where=TUCSON, track_id=f"CLK-{uuid.uuid4().hex[:6]}")


def test_alerts_are_updated_withdrawn_and_bounded(
    lab: Lab,
    tak_servers: Callable[[], TakServer],
) -> None:
    rule = "crossing-without-inspection"
    us_tak = tak_servers()
    us_client = TakClient(us_tak, "us-field")
    stix = {"FUSION_STIX_TOPICS": "true", "FUSION_STIX_TOPIC_PREFIX": f"stix.{lab.suffix}."}
    lab.create_run_topics(stix)
    w = lab.worker(
        FUSION_TAK_SERVERS=json.dumps({"US": us_tak.url}),
        FUSION_CONSOLE_PUBLIC_URL=CONSOLE,
        **stix,
    )
    w.wait_ready()

    # 1. An inspection after the corrections span (2 h): counted, and the alert stands.
    late_y, insp_y = lpr("LATE-Y1", -6 * H), inspection("LATE-Y1", -5 * H - 50 * M)
    send(lab, late_y, clock(-5 * H - 25 * M))
    wait_for(
        lab, w, "the first alert", lambda: bool(plate_alert(lab, "US", rule, late_y["event_id"]))
    )
    send(lab, clock(-3 * H))
    event_time_reaches(lab, w, -3 * H)
    send(lab, insp_y)
    until(
        lambda: w.metric("fusion_alerts_refuted_late_total", rule=rule) >= 1,
        "the late refutation counted",
        timeout=60,
    )
    lab.wait_committed(workers=(w,))
    stands = plate_alert(lab, "US", rule, late_y["event_id"])
    assert [v["change"] for v in stands] == ["raised"]
    assert f"{insp_y['event_id']} refute it but came after its corrections span" in w.logs()

    # 2. An inspection within the span: the alert is withdrawn on both topics, in TAK and STIX.
    late_x, insp_x = lpr("LATE-X2", -2 * H), inspection("LATE-X2", -H - 50 * M)
    send(lab, late_x, clock(-H - 25 * M))
    for cc in ("US", "MX"):
        wait_for(
            lab,
            w,
            f"the alert on {cc}",
            lambda cc=cc: bool(plate_alert(lab, cc, rule, late_x["event_id"])),  # type: ignore[misc]
        )
    raised = plate_alert(lab, "US", rule, late_x["event_id"])[0]
    us_client.collect(lambda got: uid(raised) in got)
    send(lab, insp_x)
    for cc in ("US", "MX"):
        wait_for(
            lab,
            w,
            f"the withdrawal on {cc}",
            lambda cc=cc: (
                plate_alert(lab, cc, rule, late_x["event_id"])[-1]["change"]  # type: ignore[misc]
                == "withdrawn"
            ),
        )
        vs = plate_alert(lab, cc, rule, late_x["event_id"])
        assert [(v["version"], v["change"]) for v in vs] == [(1, "raised"), (2, "withdrawn")]
        assert {v["alert_id"] for v in vs} == {raised["alert_id"]}
        assert vs[-1]["revision"]["records"] == [insp_x["event_id"]]
        assert "did not hold" in vs[-1]["revision"]["reason"]
    # TAK: the same uid again, stale at once and force-deleted, so that clients drop it.
    got = us_client.collect(
        lambda events: (
            uid(raised) in events
            and events[uid(raised)].get("stale") == events[uid(raised)].get("time")
        )
    )
    cot = got[uid(raised)]
    assert cot_time(cot.get("stale", "")) <= cot_time(cot.get("time", ""))
    detail = cot.find("detail")
    assert detail is not None and detail.find("__forcedelete") is not None
    assert "WITHDRAWN (version 2)" in (detail.findtext("remarks") or "")
    # STIX: the exported sighting is revoked, and the bundle is valid.
    out = fusion(lab, stix, raised["alert_id"], "--country", "us")
    assert out.returncode == 0, out.stderr.decode()
    bundle = orjson.loads(out.stdout)
    assert sighting(bundle)["revoked"] is True
    assert sighting(bundle)["modified"] > sighting(bundle)["created"]
    assert_valid(out.stdout)

    # 3. A coordinated crossing that grows from 5 to 9: one alert, updated, holding all 9.
    people = [
        event(
            "detection",
            country="MX",
            at=-40 * M + i * M,
            where=(SONORA[0] + 0.001 * i, SONORA[1]),
            sensor_kind="seismic",
            subject_kind="person",
        )
        for i in range(9)
    ]
    send(lab, *people[:5])
    crossing = "coordinated-crossing"
    wait_for(
        lab,
        w,
        "the crossing",
        lambda: bool(plate_alert(lab, "MX", crossing, people[0]["event_id"])),
    )
    send(lab, *people[5:])

    def grown() -> bool:
        vs = plate_alert(lab, "MX", crossing, people[0]["event_id"])
        return bool(vs) and len(vs[-1]["evidence"]) == 9

    wait_for(lab, w, "the crossing updated to 9 detections", grown)
    vs = plate_alert(lab, "MX", crossing, people[0]["event_id"])
    assert len(vs) >= 2 and len({v["alert_id"] for v in vs}) == 1
    assert [v["version"] for v in vs] == list(range(1, len(vs) + 1))
    assert {e["event_id"] for e in vs[-1]["evidence"]} == {p["event_id"] for p in people}
    assert all(v["change"] == "updated" for v in vs[1:])

    # 4. No storm: a listed plate read 100 times in 10 minutes.
    suspect = event("suspect", country="MX", at=-24 * H, where=TUCSON, plate="STORM-Z9")
    reads = [
        event("track", at=-30 * M + 6 * i, where=TUCSON, track_id="T-Z9", plate="STORM-Z9")
        for i in range(100)
    ]
    send(lab, suspect, *reads)
    lab.wait_committed(workers=(w,))
    send(lab, clock(-5 * M))  # event time past the last read's update span
    lab.wait_committed(workers=(w,))
    vs = plate_alert(lab, "US", "watchlist-plate", reads[-1]["event_id"]) or plate_alert(
        lab, "US", "watchlist-plate", reads[0]["event_id"]
    )
    assert vs, "the watchlist alert"
    most = 1 + math.ceil(600 / 30)  # raised, then at most one update per 30 s of event time
    assert 2 <= len(vs) <= most, [(v["version"], len(v["evidence"])) for v in vs]
    assert len(vs[-1]["evidence"]) == MAX_EVIDENCE
    updates = w.metric("fusion_alert_versions_total", rule="watchlist-plate", change="updated")
    assert updates >= len(vs) - 1
