"""Own forces on the real broker: a US patrol 300 m into Chihuahua past the dwell time raises
a critical alert on both alerts.us and alerts.mx, carrying its jurisdiction; a unit Mexico
authorized with `fusion authorize` raises none, and a permit issued after the fact withdraws
the alert on both topics; permits published by the wrong country (for
its neighbour's territory, or on another partner's topic) and malformed ones are
dead-lettered with what to fix; every alert of the default pack (one of
each simulator scenario) carries the jurisdiction of its precise location."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from typing import Any

import orjson
import pytest

from engine.areas import default_areas
from engine.hits import alert_id
from engine.replay import correlate_file
from engine.rulefiles import load_rules
from streams.tools.simulator import Simulator
from tests.integration.conftest import REPO, Lab, until
from tests.integration.test_pipeline import event

pytestmark = pytest.mark.integration

IN_CHIHUAHUA = (31.78363 - 0.0027, -107.5)  # 300 m south of the 31°47' line, west of El Paso
CHIHUAHUA = {"country": "MX", "area_id": "mx-chh", "area_name": "Chihuahua"}


def positions(unit: str) -> list[dict[str, Any]]:
    return [
        event(
            "track",
            at=back,
            where=IN_CHIHUAHUA,
            track_id=f"TRK-{unit}",
            patrol_unit=unit,
            source={"agency": "USBP", "country": "US"},
        )
        for back in (-420.0, -210.0, 0.0)
    ]


def authorize(lab: Lab, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "authorize", *args],
        env=lab.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_an_unauthorized_patrol_alerts_both_countries_and_an_authorized_one_does_not(lab: Lab):
    w = lab.worker()
    w.wait_ready()
    where = ["--lat", str(IN_CHIHUAHUA[0]), "--lon", str(IN_CHIHUAHUA[1])]
    authorize(lab, "OP-7", "--country", "MX", "--agency", "SEDENA", "--guest", "US",
              "--unit", "USBP-J1", "--valid-from", _iso(-3600), *where)  # fmt: skip
    # The wrong country: the US cannot authorize Mexico's units in Mexico.
    wrong = event("track", where=IN_CHIHUAHUA, track_id="x")  # the common fields
    wrong = {k: wrong[k] for k in ("event_id", "occurred_at", "location")}
    wrong |= {
        "event_type": "authorization",
        "source": {"agency": "USBP", "country": "US"},
        "action": "grant",
        "reference": "OP-8",
        "guest_country": "MX",
        "units": ["GN-4"],
        "area": {"radius_m": 5000},
        "valid_from": _iso(-3600),
        "valid_until": _iso(3600),
    }
    lab.send("authorization-us", wrong)
    # A permit claiming to be Mexico's, published on the US topic: refused too.
    spoofed = {**wrong, "event_id": wrong["event_id"] + "-s", "guest_country": "US"}
    spoofed |= {"source": {"agency": "SEDENA", "country": "MX"}, "units": ["USBP-L1"]}
    lab.send("authorization-us", spoofed)
    malformed = {
        **wrong,
        "event_id": wrong["event_id"] + "-m",
        "source": {"agency": "SEDENA", "country": "MX"},
    }
    lab.send(
        "authorization-mx",
        {
            **malformed,
            "guest_country": "US",
            "area": {"radius_m": 5000, "polygon": [[31.7, -107.5]] * 4},
        },
    )
    lab.send(
        "authorization-mx",
        {**malformed, "event_id": malformed["event_id"] + "2", "guest_country": "US", "units": []},
    )
    lone, joint = positions("USBP-L1"), positions("USBP-J1")
    for doc in (*lone, *joint):
        lab.send("track", doc)
    lab.flush()
    want = alert_id("unauthorized-incursion", [lone[0]["event_id"], lone[-1]["event_id"]])
    got = lab.wait_alerts({want}, workers=(w,))
    assert want in got
    for cc in ("us", "mx"):
        alerts = [
            a
            for a in lab.read_all(lab.topics[cc.upper()])
            if a["rule_id"] == "unauthorized-incursion"
        ]
        assert [a["alert_id"] for a in alerts] == [want], cc  # none for the authorized unit
        (alert,) = alerts
        assert alert["severity"] == "critical"
        assert alert["recipients"] == ["MX", "US"]
        assert alert["jurisdiction"] == {**CHIHUAHUA, "areas_version": default_areas().version}
    dead = lab.read("deadletter", 4, timeout=60)
    errors = sorted((d["error"]["kind"], d["error"]["message"]) for d in dead)
    assert len(errors) == 4, errors
    assert errors[0][0] == "schema" and "a grant needs units" in errors[0][1]
    assert errors[1][0] == "schema" and "give exactly one of radius_m" in errors[1][1]
    assert errors[2] == (
        "wrong_issuer",
        "source.country is MX on US's authorizations topic: each partner publishes only its "
        "own authorizations, on its own topic",
    )
    assert errors[3] == (
        "wrong_issuer",
        f"the authorization's location ({IN_CHIHUAHUA[0]}, {IN_CHIHUAHUA[1]}) is in MX "
        "territory; only MX may authorize operations there, and source.country is US: have "
        "MX's agency issue it",
    )
    # Mexico authorizes the lone unit after the fact: its alert is withdrawn on both topics.
    authorize(lab, "OP-9", "--country", "MX", "--agency", "SEDENA", "--guest", "US",
              "--unit", "USBP-L1", "--valid-from", _iso(-3600), *where)  # fmt: skip

    def last(cc: str) -> dict[str, Any]:
        versions = [a for a in lab.read_all(cc) if a["alert_id"] == want]
        return max(versions, key=lambda a: a["version"])

    until(
        lambda: all(last(cc)["change"] == "withdrawn" for cc in ("US", "MX")),
        "the incursion alert withdrawn on both topics",
        timeout=60,
    )
    for cc in ("US", "MX"):
        revision = last(cc)["revision"]
        assert last(cc)["version"] == 2 and revision["superseded_by"] is None
        assert len(revision["records"]) == 1 and revision["reason"]


def test_every_alert_of_the_default_pack_carries_its_jurisdiction(lab: Lab):
    sim = Simulator(seed=21, run_id=lab.suffix, tips=True)
    now = time.time()
    events = [e for scenario in sim.scenarios() for e in scenario(now)]
    data = b"\n".join(orjson.dumps(doc) for _, doc in events)
    rules = load_rules([REPO / "rules"])
    replayed, _ = correlate_file(io.BytesIO(data), rules, partners=frozenset({"US", "MX"}))
    # Rules deciding on an absence wait for event time to pass; the live run is not asked to.
    expected = {a.alert_id: a for a in replayed if a.rule_id != "crossing-without-inspection"}
    w = lab.worker()
    w.wait_ready()
    for etype, doc in events:
        if etype == "authorization":
            lab.send(f"authorization-{doc['source']['country'].lower()}", doc)
        else:
            lab.send(etype, doc)
    lab.flush()
    got = lab.wait_alerts(set(expected), workers=(w,))
    assert set(expected) <= got
    fired = set()
    areas = default_areas()
    for cc in ("US", "MX"):
        for alert in lab.read_all(lab.topics[cc]):
            fired.add(alert["rule_id"])
            raw = expected.get(alert["alert_id"])
            if raw is not None:  # decided on the precise location, whatever this copy shows
                assert alert["jurisdiction"] == areas.jurisdiction(raw.lat, raw.lon)
            assert alert["jurisdiction"]["areas_version"] == areas.version
    assert fired >= {r.id for r in rules.rules} - {"crossing-without-inspection"}


def _iso(offset: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(time.time() + offset, tz=UTC).isoformat()
