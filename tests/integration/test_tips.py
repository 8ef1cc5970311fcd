"""Community tips on the real broker: a tip published with `fusion tip` and a seizure nearby
come out as an alert scored by the tip's grade; a tip's free text reaches its own country's
alert and not the other's; malformed tips are dead-lettered with a reason a person can act on."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import orjson
import pytest

from tests.integration.conftest import REPO, Lab
from tests.integration.test_pipeline import NOGALES_MX, NOGALES_US, event, iso

pytestmark = pytest.mark.integration

TUCSON = (32.2226, -110.9747)  # ~95 km from the line: US territory, outside the border zone
NEAR_TUCSON = (32.2406, -110.9747)  # 2 km north
TEXT_US = "Two men loading rifles into a white pickup behind the feed store on Ajo Way"
TEXT_MX = "Tres rifles en una camioneta blanca, rancho El Alamo; llamar a Juan al 555-0199"
TIP_TEXT_RULE = "cross-border-tip-text (MLAT art. 7)"


def with_tips(lab: Lab) -> dict[str, str]:
    """The setting naming this test's own tips topic (the lab creates it)."""
    return {"FUSION_TOPIC_TIPS": lab.topics["tip"]}


def tip(country: str = "MX", at: float = -7200.0, where=NOGALES_MX, **fields: Any) -> dict:
    doc = event("weapon", country=country, at=at, where=where)
    for name in ("weapon_event", "quantity"):
        doc.pop(name, None)
    doc["event_id"] = doc["event_id"].replace("wea-", "tip-")
    doc["source"]["agency"] = "FGR-DENUNCIA" if country == "MX" else "CBP-TIPS"
    base = {
        "event_type": "tip",
        "uncertainty_m": 1000,
        "category": "weapons",
        "text": TEXT_MX if country == "MX" else TEXT_US,
        "channel": "app",
        "reliability": "C",
        "credibility": 3,
    }
    return {**doc, **base, **fields}


def fusion_tip(lab: Lab, env: dict[str, str], *args: str) -> str:
    """Run `fusion tip` against the lab's broker; its output."""
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "tip", *args],
        env={**lab.env, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_tip_published_with_fusion_tip_and_a_seizure_nearby_raise_an_alert(lab: Lab) -> None:
    env = with_tips(lab)
    w = lab.worker(**env)
    w.wait_ready()
    out = fusion_tip(
        lab,
        env,
        "weapons",
        "--lat",
        str(TUCSON[0]),
        "--lon",
        str(TUCSON[1]),
        "--uncertainty-m",
        "1500",
        "--grade",
        "B2",
        "--channel",
        "hotline",
        "--country",
        "US",
        "--at",
        iso(-3 * 3600),
        "--id",
        f"tip-{lab.suffix}",
        "--person-ref",
        "US-P-42",
        "--text",
        TEXT_US,
    )
    assert f"sent tip tip-{lab.suffix} to {env['FUSION_TOPIC_TIPS']}" in out
    seizure = event("weapon", country="US", at=-3600, where=NEAR_TUCSON, serial="AR-1")
    lab.send("weapon", seizure)
    lab.flush()

    (alert,) = lab.read("US", 1, timeout=60, settled=True)
    assert alert["rule_id"] == "weapons-tip-near-seizure" and alert["severity"] == "high"
    assert [e["event_id"] for e in alert["evidence"]] == [f"tip-{lab.suffix}", seizure["event_id"]]
    # high (70) x the B2 grade (1.1 x 1.1): 85.
    assert alert["score"] == 85
    assert alert["recipients"] == ["US"]
    fields = alert["evidence"][0]["fields"]
    assert fields["text"] == TEXT_US and fields["person_ref"] == "US-P-42"  # its own data
    assert (fields["category"], fields["channel"], fields["uncertainty_m"]) == (
        "weapons",
        "hotline",
        1500,
    )
    assert (fields["reliability"], fields["credibility"]) == ("B", 2)
    assert alert["redactions"] == []
    assert lab.read("MX", 0, timeout=5, settled=True) == []  # a US matter, far from the border
    assert w.metric("fusion_events_received_total", event_type="tip", country="US") == 1


def test_a_tips_text_stays_in_its_own_country(lab: Lab) -> None:
    env = with_tips(lab)
    w = lab.worker(**env)
    w.wait_ready()
    mx_tip = tip(plate="XKZ-481", person_ref="MX-P-9", reliability="A", credibility=1)
    seizure = event("weapon", country="US", at=-3600, where=NOGALES_US, serial="AR-2")
    lab.send("tip", mx_tip)
    lab.send("weapon", seizure)
    lab.flush()

    (mx,) = lab.read("MX", 1, timeout=60, settled=True)
    (us,) = lab.read("US", 1, timeout=30, settled=True)
    assert mx["alert_id"] == us["alert_id"] and us["rule_id"] == "weapons-tip-near-seizure"
    assert us["score"] == mx["score"] == 100  # 70 x 1.44 (A1), capped
    # Mexico, the tip's home, gets it as it is.
    home = next(e for e in mx["evidence"] if e["event_type"] == "tip")["fields"]
    assert home["text"] == TEXT_MX
    assert (home["plate"], home["person_ref"]) == ("XKZ-481", "MX-P-9")
    assert not any(r["path"].startswith("evidence[0]") for r in mx["redactions"])
    # The US gets what the tip is about and its grade, never its words or raw identifiers.
    i, away = next((i, e) for i, e in enumerate(us["evidence"]) if e["event_type"] == "tip")
    fields = away["fields"]
    assert "text" not in fields
    raw = orjson.dumps(us).decode()
    for secret in (TEXT_MX, "555-0199", "El Alamo", "XKZ-481", "MX-P-9"):
        assert secret not in raw
    assert (fields["category"], fields["channel"]) == ("weapons", "app")
    assert (fields["reliability"], fields["credibility"], fields["uncertainty_m"]) == ("A", 1, 1000)
    assert fields["plate"][0].startswith("pn:plate:ktest:")
    assert fields["person_ref"][0].startswith("pn:person_ref:ktest:")
    redactions = {r["path"]: (r["action"], r["policy_rule"]) for r in us["redactions"]}
    assert redactions[f"evidence[{i}].fields.text"] == ("redact", TIP_TEXT_RULE)
    assert redactions[f"evidence[{i}].fields.plate"][0] == "pseudonymize"
    # And the audit record of the US delivery says the text was withheld, and why.
    deadline = time.monotonic() + 20
    audit: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not audit:
        audit = [
            a
            for a in lab.read("audit", 2, timeout=5)
            if a["alert_id"] == us["alert_id"] and a["destination"] == "US"
        ]
    (record,) = audit
    actions = {a["path"]: a for a in record["actions"]}
    text_action = actions[f"evidence[{i}].fields.text"]
    assert (text_action["action"], text_action["policy_rule"]) == ("redact", TIP_TEXT_RULE)
    assert text_action["origin"] == "MX"


def test_malformed_tips_are_dead_lettered_with_a_reason_to_act_on(lab: Lab) -> None:
    env = with_tips(lab)
    w = lab.worker(**env)
    w.wait_ready()
    bad_grade = tip(reliability="G", credibility=9)
    no_radius = tip()
    del no_radius["uncertainty_m"]
    bad_category = tip(category="guns")
    lab.send("tip", bad_grade)
    lab.send("tip", no_radius)
    lab.send("tip", bad_category)
    lab.send("tip", b'{"event_type": "tip", "text": "cut off')
    lab.send("weapon", tip())  # a tip on the weapons topic
    lab.send("tip", tip(text=""))
    lab.flush()

    dead = lab.read("deadletter", 6, timeout=60, settled=True)
    assert len(dead) == 6, dead
    by_id: dict[str, dict[str, Any]] = {}
    for d in dead:
        try:
            by_id[orjson.loads(d["payload"])["event_id"]] = d
        except (orjson.JSONDecodeError, KeyError):
            by_id["not-json"] = d
    tips_topic = env["FUSION_TOPIC_TIPS"]

    def error(doc: dict[str, Any] | str) -> tuple[str, str]:
        d = by_id[doc if isinstance(doc, str) else doc["event_id"]]
        assert d["topic"] in (tips_topic, lab.topics["weapon"])
        return d["error"]["kind"], d["error"]["message"]

    kind, msg = error(bad_grade)
    assert kind == "schema" and msg.startswith("not a valid tip event: ")
    assert "field 'reliability': Input should be 'A', 'B', 'C', 'D', 'E' or 'F' (got 'G')" in msg
    assert "field 'credibility': Input should be less than or equal to 6 (got '9')" in msg
    kind, msg = error(no_radius)
    assert kind == "schema" and "field 'uncertainty_m': Field required" in msg
    kind, msg = error(bad_category)
    assert kind == "schema"
    assert "field 'category': Input should be 'drugs', 'weapons', 'people' or 'money'" in msg
    kind, msg = error("not-json")
    assert kind == "json" and "not valid UTF-8 JSON" in msg
    assert by_id["not-json"]["payload"] == '{"event_type": "tip", "text": "cut off'
    misplaced = [d for d in dead if d["topic"] == lab.topics["weapon"]]
    assert [d["error"]["kind"] for d in misplaced] == ["type_mismatch"]
    assert "publish it to the tip topic" in misplaced[0]["error"]["message"]
    empty = [d for d in dead if "field 'text'" in d["error"]["message"]]
    assert len(empty) == 1 and "at least 1 character" in empty[0]["error"]["message"]
    # The original payload is kept whole, for the sender to fix and send again.
    assert orjson.loads(by_id[bad_grade["event_id"]]["payload"]) == bad_grade
    assert w.metric("fusion_events_rejected_total", topic=tips_topic, reason="schema") == 4
    assert lab.read("US", 0, timeout=3, settled=True) == []
    assert lab.read("MX", 0, timeout=3, settled=True) == []
