"""The pipeline end to end on the real broker: events in with kafka-python, alerts out."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from tests.integration.conftest import REPO, Lab, until

NOGALES_US = (31.3404, -110.9343)  # US side of the border
NOGALES_MX = (31.3086, -110.9422)  # Mexican side
SONORA = (30.90, -110.60)  # well inside Mexico


def iso(offset_s: float = 0.0) -> str:
    return datetime.fromtimestamp(time.time() + offset_s, tz=UTC).isoformat()


def event(
    etype: str,
    *,
    country: str = "US",
    at: float = 0.0,
    where=NOGALES_US,
    eid: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": eid or f"{etype[:3]}-{uuid.uuid4().hex[:10]}",
        "event_type": etype,
        "occurred_at": iso(at),
        "source": {"agency": "CBP" if country == "US" else "GN", "country": country},
        "location": {"lat": where[0], "lon": where[1]},
    }
    defaults = {
        "detection": {"sensor_id": "S-1", "sensor_kind": "lpr", "subject_kind": "vehicle"},
        "suspect": {"person_ref": "P-77", "watchlist": "trafficking", "risk": "high"},
        "weapon": {"weapon_event": "seizure"},
        "track": {"track_id": "T-1", "subject_kind": "vehicle"},
    }[etype]
    return {**doc, **defaults, **fields}


def crossing(n: int, where=SONORA, country: str = "MX", start: float = -300.0) -> list[dict]:
    return [
        event(
            "detection",
            country=country,
            at=start + 30 * i,
            where=(where[0] + 0.001 * i, where[1]),
            sensor_kind="seismic",
            subject_kind="person",
        )
        for i in range(n)
    ]


def test_alerts_reach_the_right_country_topics(lab: Lab) -> None:
    w = lab.worker()
    w.wait_ready()
    suspect = event(
        "suspect", country="MX", at=-86400, where=NOGALES_MX, plate="XKZ-481", person_ref="MX-P-1"
    )
    sighting = event("detection", country="US", at=-5, plate="xkz 481")
    lab.send("suspect", suspect, key=b"anything")
    lab.send("detection", sighting)
    for e in crossing(5):  # Mexican agencies, Mexican territory: Mexico only
        lab.send("detection", e, key=uuid.uuid4().bytes)
    lab.flush()

    us = lab.read("US", 1, settled=True)
    mx = lab.read("MX", 2, settled=True)
    assert {a["rule_id"] for a in us} == {"watchlist-plate"}, us
    assert {a["rule_id"] for a in mx} == {"watchlist-plate", "coordinated-crossing"}, mx
    (us_alert,) = us
    mx_alert = next(a for a in mx if a["rule_id"] == "watchlist-plate")
    assert us_alert["alert_id"] == mx_alert["alert_id"]
    assert us_alert["recipient"] == "US" and us_alert["recipients"] == ["MX", "US"]
    assert us_alert["severity"] == "high" and us_alert["tlp"].startswith("TLP:")
    # The US gets Mexico's suspect with its person_ref and plate as pseudonyms, and says so.
    mx_ev = next(e for e in us_alert["evidence"] if e["event_type"] == "suspect")
    assert mx_ev["fields"]["person_ref"][0].startswith("pn:person_ref:ktest:")
    assert mx_ev["fields"]["plate"][0].startswith("pn:plate:ktest:")
    assert "MX-P-1" not in str(us_alert) and "XKZ-481" not in str(us_alert)
    assert {r["path"].rsplit(".", 1)[1] for r in us_alert["redactions"]} == {"person_ref", "plate"}
    assert us_alert["policy"]["id"] == "us-mx-border-sharing"
    # Mexico gets its own suspect as is, and the US sighting's plate as a pseudonym.
    mx_sus = next(e for e in mx_alert["evidence"] if e["event_type"] == "suspect")
    assert mx_sus["fields"]["person_ref"] == "MX-P-1"
    us_det = next(e for e in mx_alert["evidence"] if e["event_type"] == "detection")
    assert us_det["fields"]["plate"][0].startswith("pn:plate:ktest:")
    for key in (
        "alert_id",
        "rule_id",
        "title",
        "severity",
        "score",
        "raised_at",
        "first_seen",
        "last_seen",
        "location",
        "recipient",
        "recipients",
        "tlp",
        "evidence",
        "redactions",
        "policy",
    ):
        assert key in us_alert
    cc = next(a for a in mx if a["rule_id"] == "coordinated-crossing")
    assert cc["recipients"] == ["MX"] and len(cc["evidence"]) == 5
    audit = lab.read("audit", 3)
    assert {(a["alert_id"], a["destination"]) for a in audit} >= {
        (us_alert["alert_id"], "US"),
        (us_alert["alert_id"], "MX"),
        (cc["alert_id"], "MX"),
    }

    # Why it fired, as the US received it: from alerts.us, with the key as its pseudonym.
    why = fusion(lab, "explain", us_alert["alert_id"][:10], "--country", "us")
    assert f"alert {us_alert['alert_id']}: watchlist-plate" in why and "released to US" in why
    assert "matched plate: ['pn:plate:ktest:" in why and "XKZ-481" not in why
    assert f"{sighting['event_id']} as sighting: detection from CBP (US)" in why
    for c in us_alert["explanation"]["conditions"]:
        assert c in why
    # What the rules did with the sighting: replayed from the input topics.
    trace = fusion(lab, "explain", "--event", sighting["event_id"])
    assert "watchlist-plate: fired" in trace and us_alert["alert_id"] in trace
    assert "suspect-near-seizure: not selected" in trace  # it takes suspects and weapons


def fusion(lab: Lab, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=lab.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bad_input_is_dead_lettered_with_reason_and_payload(lab: Lab) -> None:
    w = lab.worker()
    w.wait_ready()
    wrong_topic = event("suspect")
    lab.send("detection", b'{"event_id": "x", oops')
    lab.send("detection", b"\xff\xfe\x00binary")
    lab.send("track", event("track", speed_mps=-3))
    lab.send("detection", wrong_topic)
    lab.send("weapon", event("weapon", at=3600))
    lab.flush()
    dead = lab.read("deadletter", 5, settled=True)
    by_kind = {d["error"]["kind"]: d for d in dead}
    assert set(by_kind) == {"json", "schema", "type_mismatch", "future"}, dead
    assert len(dead) == 5
    assert by_kind["type_mismatch"]["payload"].startswith("{")
    assert "publish it to the suspect topic" in by_kind["type_mismatch"]["error"]["message"]
    assert "speed_mps" in by_kind["schema"]["error"]["message"]
    assert by_kind["future"]["topic"] == lab.topics["weapon"]
    binary = next(d for d in dead if d.get("payload_encoding") == "base64")
    assert binary["error"]["kind"] == "json"
    for d in dead:
        assert {"received_at", "topic", "partition", "offset", "error", "payload"} <= set(d)


def test_a_duplicated_event_id_gives_one_alert(lab: Lab) -> None:
    w = lab.worker()
    w.wait_ready()
    events = crossing(5)
    for e in events:
        lab.send("detection", e)
    for e in events:  # the whole burst again, same ids, other keys
        lab.send("detection", e, key=b"resent")
    lab.flush()
    alerts = lab.read("MX", 1, settled=True)
    assert len(alerts) == 1, alerts
    until(lambda: w.metric("fusion_events_duplicate_total") >= 5, "five duplicates counted")
    assert w.metric("fusion_events_duplicate_total", event_type="detection") == 5


def test_cold_start_consumes_every_input_topic_each_time(lab: Lab) -> None:
    for attempt in range(3):
        w = lab.worker()
        w.wait_ready()
        for etype in ("detection", "suspect", "weapon", "track"):
            lab.send(etype, f"not json {attempt}".encode())
        lab.flush()
        dead = lab.read("deadletter", 4 * (attempt + 1), timeout=30)
        assert len(dead) == 4 * (attempt + 1), f"start {attempt}: {len(dead)} dead letters"
        w.stop()


def test_worker_killed_inside_an_open_window_still_fires_once(lab: Lab) -> None:
    w = lab.worker()
    w.wait_ready()
    events = crossing(5)
    for e in events[:3]:
        lab.send("detection", e)
    lab.flush()
    until(
        lambda: w.metric("fusion_state_partial_matches", rule="coordinated-crossing") >= 3,
        "three detections held towards a coordinated crossing",
    )
    assert w.metric("fusion_state_partial_matches", rule="coordinated-crossing") == 3
    lab.wait_committed(workers=(w,))  # a snapshot covers them: the next worker starts from it
    w.kill()
    w2 = lab.worker()
    w2.wait_ready()
    for e in events[3:]:
        lab.send("detection", e)
    lab.flush()
    alerts = lab.read("MX", 1, settled=True)
    assert len(alerts) == 1, alerts
    assert sorted(e["event_id"] for e in alerts[0]["evidence"]) == sorted(
        e["event_id"] for e in events
    )
