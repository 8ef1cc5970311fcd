"""Hot reload: a rule added while the worker runs takes effect; a broken edit is refused."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tests.integration.conftest import REPO, Lab
from tests.integration.test_pipeline import crossing, event

NEW_RULE = """
id: track-loiter
type: event_count
title: A track reported three times within ten minutes
severity: low
select: {type: track}
key: track_id
threshold: 3
window: 10m
suppress: {by: [key], for: 1h}
tests:
  - name: three updates fire
    events:
      - {id: t1, type: track, at: 0m, track_id: T-9}
      - {id: t2, type: track, at: 1m, track_id: T-9}
      - {id: t3, type: track, at: 2m, track_id: T-9}
    expect:
      - evidence: [t1, t2, t3]
"""


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_rules_reload_while_running_and_refuse_broken_edits(lab: Lab, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    w = lab.worker(FUSION_RULES_PATH=str(rules), FUSION_RULES_RELOAD_S="0.5")
    w.wait_ready()

    (rules / "track-loiter.yaml").write_text(NEW_RULE)
    assert wait_for(lambda: w.metric("fusion_rule_reloads_total", result="success") >= 1), w.logs()
    track = "T-" + lab.suffix
    for i in range(3):
        lab.send("track", event("track", at=-60 + i, track_id=track, subject_kind="vessel",
                                where=(30.9, -110.6), country="MX"))
    lab.flush()
    alerts = lab.read("MX", 1)
    assert [a["rule_id"] for a in alerts] == ["track-loiter"]

    (rules / "broken.yaml").write_text("id: broken\ntype: proximty\n")
    assert wait_for(lambda: w.metric("fusion_rule_reloads_total", result="refused") >= 1)
    assert "unknown rule type 'proximty'" in w.logs()
    (rules / "broken.yaml").unlink()
    bad_test = NEW_RULE.replace("threshold: 3", "threshold: 4").replace("track-loiter", "tl2")
    (rules / "tl2.yaml").write_text(bad_test)
    assert wait_for(lambda: w.metric("fusion_rule_reloads_total", result="refused") >= 2)
    assert "failing rule tests" in w.logs()

    for e in crossing(5):  # the running rules still work
        lab.send("detection", e)
    lab.flush()
    alerts = lab.read("MX", 2)
    assert {a["rule_id"] for a in alerts} == {"track-loiter", "coordinated-crossing"}
