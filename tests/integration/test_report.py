"""The bilateral review report from a real run: a worker correlates simulated traffic and the
default pack's own test events (alerts both ways across the border), `fusion report` reads
that run's audit topic, its counts equal the audit records read independently from the topic,
and the page opens in headless Chromium with no error and no request off the host (the test
saves the screenshot the README shows)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.tools.simulator import Simulator
from tests.browser import browser_page, chromium_available
from tests.integration.conftest import REPO, Lab, Worker
from tests.integration.test_event_time import rule_test_burst, ts_of

pytestmark = pytest.mark.integration

ACTIONS = ("release", "pseudonymize", "generalize", "redact", "drop")
SCREENSHOT = REPO / "docs" / "report.png"
REPORT = [sys.executable, "-m", "streams.cli", "report"]


def simulated(start: float, count: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """Simulator traffic (scenarios often) with event times from `start`, a second apart."""
    sim = Simulator(seed=seed, scenario_share=0.25, run_id=f"rep{uuid.uuid4().hex[:6]}")
    clock = iter(range(count * 4))
    out = []
    for etype, ev in sim.stream(lambda: start + float(next(clock))):
        out.append((etype, ev))
        if len(out) >= count:
            return out
    return out


def final_audit(
    lab: Lab, worker: Worker, rules: int, timeout: float = 120.0
) -> list[dict[str, Any]]:
    """Every record of the run's audit topic, once releases of at least `rules` rules are
    there and the worker has committed all its input; the worker is then stopped, so that
    nothing more is written and the report reads exactly these records."""
    deadline = time.monotonic() + timeout
    while len({r["rule_id"] for r in lab.read_all("audit")}) < rules:
        assert worker.proc.poll() is None, worker.logs()
        assert time.monotonic() < deadline, f"releases of fewer than {rules} rules"
        time.sleep(0.5)
    lab.wait_committed(workers=(worker,))
    worker.stop()
    return lab.read_all("audit")


def field_of(path: str) -> str:
    if path == "location":
        return "alert location"
    if ".fields." in path:
        return path.rpartition(".fields.")[2]
    return "whole event"


def expected(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's figures counted straight from the audit records (no report code)."""
    flows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        dest = r["destination"]
        origins = {a["origin"] for a in r["actions"]}
        for origin in origins:
            f = flows.setdefault(
                (origin, dest),
                {
                    "releases": 0,
                    "alerts": set(),
                    "fields": Counter(),
                    "rules": Counter(),
                    "withheld": Counter(),
                    "key_pseudonymized": 0,
                },
            )
            f["releases"] += 1
            f["alerts"].add(r["alert_id"])
            f["rules"][r["rule_id"]] += 1
            for a in r["actions"]:
                if a["origin"] == origin:
                    f["fields"][a["action"]] += 1
                    if a["action"] in ("redact", "drop"):
                        f["withheld"][(field_of(a["path"]), a["policy_rule"], a["action"])] += 1
            keys = [k for k in (r.get("match") or {}).get("fields", []) if k["origin"] == origin]
            if any(k["action"] == "pseudonymize" for k in keys):
                f["key_pseudonymized"] += 1
    return {
        "releases": len(records),
        "alerts": len({r["alert_id"] for r in records}),
        "by_destination": Counter(r["destination"] for r in records),
        "rules": Counter((r["rule_id"], r["destination"]) for r in records),
        "policies": Counter(
            (r["policy"]["id"], r["policy"]["version"], r["policy"]["sha256"]) for r in records
        ),
        "flows": flows,
    }


def check_flow(got: dict[str, Any], want: dict[str, Any]) -> None:
    label = got["label"]
    assert got["releases"] == want["releases"], label
    assert got["alerts"] == len(want["alerts"]), label
    assert {a: got["fields"][a] for a in ACTIONS} == {a: want["fields"][a] for a in ACTIONS}, label
    assert {row["name"]: row["releases"] for row in got["rules"]} == dict(want["rules"]), label
    withheld = {(w["field"], w["policy_rule"], w["action"]): w["count"] for w in got["withheld"]}
    assert withheld == dict(want["withheld"]), label
    assert got["matches"]["pseudonymized"] == want["key_pseudonymized"], label
    # Each table of the direction adds up to its fields.
    for table in ("rules", "policy_rules", "fields_by_name"):
        assert sum(row["fields"]["total"] for row in got[table]) == got["fields"]["total"], table
    assert sum(b["releases"] for b in got["timeline"]) == got["releases"], label


@contextmanager
def served(directory: Path) -> Iterator[str]:
    """The directory over HTTP on 127.0.0.1 (the browser is cut off from everything else)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_report_counts_equal_the_audit_records_and_the_page_opens(lab: Lab, tmp_path: Path) -> None:
    w = lab.worker()
    w.wait_ready()
    now = time.time()
    burst = sorted(rule_test_burst(now - 2 * 3600), key=lambda te: ts_of(te[1]))
    # Only the event types this run has input topics for.
    events = [
        te for te in (*burst, *simulated(now - 40 * 60, 1200, seed=12)) if te[0] in lab.topics
    ]
    for etype, e in events:
        lab.send(etype, e)
    lab.flush()
    records = final_audit(lab, w, rules=4)
    want = expected(records)
    assert ("US", "MX") in want["flows"] and ("MX", "US") in want["flows"], want["flows"].keys()

    out = tmp_path / "report"
    done = subprocess.run(
        [*REPORT, "--since", "3h", "--until", "now", "--out", str(out)],
        env=lab.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(out / "report.html"), str(out / "report.json")]
    report = orjson.loads((out / "report.json").read_bytes())

    since = datetime.fromisoformat(report["since"])
    until = datetime.fromisoformat(report["until"])
    assert timedelta(hours=3) == until - since
    assert until <= datetime.now(tz=UTC) and report["bucket"] == "hour"
    assert report["source"] == lab.topics["audit"] and report["skipped"] == 0

    totals = report["totals"]
    assert totals["releases"] == want["releases"] == len(records)
    assert totals["alerts"] == want["alerts"]
    assert totals["releases_by_destination"] == dict(want["by_destination"])
    assert sum(sum(b["releases"].values()) for b in totals["timeline"]) == len(records)
    rules = {
        (row["rule_id"], dest): n for row in totals["rules"] for dest, n in row["releases"].items()
    }
    assert {k: n for k, n in rules.items() if n} == dict(want["rules"])
    assert len({rule for rule, _ in want["rules"]}) >= 4, want["rules"]

    flows = {(f["origin"], f["destination"]): f for f in report["cross_border"]}
    flows |= {(f["origin"], f["destination"]): f for f in report["own_country"]}
    assert set(want["flows"]) <= set(flows)
    for key, f in flows.items():
        if key in want["flows"]:
            check_flow(f, want["flows"][key])
        else:
            assert f["releases"] == 0
    assert [f["label"] for f in report["cross_border"]] == ["US → MX", "MX → US"]
    cross = [want["flows"][k] for k in want["flows"] if k[0] != k[1]]
    assert totals["pseudonyms_matched"] == sum(f["key_pseudonymized"] for f in cross) > 0
    for action in ACTIONS:
        assert totals["cross_border"][action] == sum(f["fields"][action] for f in cross)

    policy_sha = hashlib.sha256((REPO / "rules" / "policy.yaml").read_bytes()).hexdigest()
    assert [(p["id"], p["version"], p["sha256"]) for p in report["policies"]] == list(
        want["policies"]
    )
    assert report["policies"][0]["sha256"] == policy_sha
    assert report["policies"][0]["releases"] == len(records)
    assert report["policy_changes"] == []

    if not chromium_available():
        pytest.skip("no Chromium at /usr/bin/chromium")
    with served(out) as base, browser_page(viewport=(1280, 1500)) as (page, log):
        page.goto(f"{base}/report.html", wait_until="load")
        assert page.title().startswith(report["title"])
        assert page.locator("svg.chart").count() == 1 + 2 + 1
        for chart in page.locator("svg.chart").all():
            box = chart.bounding_box()
            assert box is not None and box["height"] > 50
        cards = page.locator(".card .n").all_inner_texts()
        assert cards[:2] == [f"{totals['alerts']:,}", f"{totals['releases']:,}"]
        assert page.get_by_role("heading", name="Keys matched across the border").count() == 2
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))
        assert log.errors == [], log.errors
        assert log.blocked == [], log.blocked
