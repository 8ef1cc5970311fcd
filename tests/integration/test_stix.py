"""STIX 2.1 through the broker: with the STIX topics on, a real worker writes a valid bundle to
`stix.<cc>` for every alert on `alerts.<cc>` (that country's copy, nothing of the other's),
and `fusion stix` exports the same bundles from the alert topics."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from interop.stix import bundle_json
from tests.integration.conftest import REPO, Lab
from tests.integration.test_pipeline import NOGALES_MX, crossing, event
from tests.unit.test_stix import assert_valid

pytestmark = pytest.mark.integration


def sighting(bundle: dict[str, Any]) -> dict[str, Any]:
    (s,) = [o for o in bundle["objects"] if o["type"] == "sighting"]
    return s


def alert_ref(bundle: dict[str, Any]) -> dict[str, Any]:
    return next(
        r
        for r in sighting(bundle)["external_references"]
        if r["source_name"] == "border-fusion-alert"
    )


def fusion(lab: Lab, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "stix", *args],
        env={**lab.env, **env},
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )


def test_bundles_on_stix_topics_and_from_fusion_stix(lab: Lab, tmp_path: Path) -> None:
    stix = {"FUSION_STIX_TOPICS": "true", "FUSION_STIX_TOPIC_PREFIX": f"stix.{lab.suffix}."}
    lab.create_run_topics(stix)
    w = lab.worker(**stix)
    w.wait_ready()
    lab.send(
        "suspect",
        event(
            "suspect",
            country="MX",
            at=-86400,
            where=NOGALES_MX,
            plate="XKZ-481",
            person_ref="MX-P-1",
        ),
    )
    lab.send("detection", event("detection", country="US", at=-5, plate="xkz 481"))
    for e in crossing(5):  # Mexican agencies, Mexican territory: Mexico only
        lab.send("detection", e, key=uuid.uuid4().bytes)
    lab.flush()

    alerts = {"US": lab.read("US", 1, settled=True), "MX": lab.read("MX", 2, settled=True)}
    bundles = {
        cc: lab.read(f"stix.{lab.suffix}.{cc.lower()}", len(alerts[cc]), settled=True)
        for cc in ("US", "MX")
    }
    for cc in ("US", "MX"):
        by_alert = {alert_ref(b)["external_id"]: b for b in bundles[cc]}
        # One bundle per alert the country received, and none for any other alert.
        assert set(by_alert) == {a["alert_id"] for a in alerts[cc]}, cc
        assert len(bundles[cc]) == len(alerts[cc])
        for a in alerts[cc]:
            b = by_alert[a["alert_id"]]
            assert_valid(orjson.dumps(b))
            # Exactly the converter's bundle of the alert as that country received it.
            url = alert_ref(b)["url"]
            assert b == orjson.loads(bundle_json([a], urls=[url]))
            assert url.endswith(f"#alert={a['alert_id']}")
    us_text = orjson.dumps(bundles["US"]).decode()
    # Mexico's suspect: its person_ref and plate never reach the US bundle raw (the US
    # detection's own plate, "xkz 481", does: it is US data).
    for raw in ("MX-P-1", "XKZ-481", "XKZ481"):
        assert raw not in us_text, raw
    assert "pn:person_ref:ktest:" in us_text  # the suspect's person_ref went as a pseudonym

    # fusion stix ALERT_ID --country: the same bundle as the topic's, valid.
    (us_alert,) = alerts["US"]
    out = fusion(lab, stix, us_alert["alert_id"], "--country", "us")
    assert out.returncode == 0, out.stderr.decode()
    printed = orjson.loads(out.stdout)
    assert_valid(out.stdout)
    assert printed == next(
        b for b in bundles["US"] if alert_ref(b)["external_id"] == us_alert["alert_id"]
    )
    # Without --country, an alert both countries received is refused: each has its own copy.
    both = fusion(lab, stix, us_alert["alert_id"])
    assert both.returncode == 2 and b"say which with --country" in both.stderr
    missing = fusion(lab, stix, "0" * 32, "--country", "mx", "--timeout", "10")
    assert missing.returncode == 1 and b"no alert" in missing.stderr

    # fusion stix --since --country --out: every alert Mexico received, in one bundle.
    target = tmp_path / "mx.json"
    out = fusion(lab, stix, "--since", "1h", "--country", "mx", "--out", str(target))
    assert out.returncode == 0, out.stderr.decode()
    assert_valid(target.read_bytes())
    merged = orjson.loads(target.read_bytes())
    sightings = [o for o in merged["objects"] if o["type"] == "sighting"]
    assert {
        r["external_id"]
        for s in sightings
        for r in s["external_references"]
        if r["source_name"] == "border-fusion-alert"
    } == {a["alert_id"] for a in alerts["MX"]}
    future = fusion(lab, stix, "--since", "2099-01-01T00:00:00Z", "--country", "mx")
    assert future.returncode == 1 and b"no alerts" in future.stderr
