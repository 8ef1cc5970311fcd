"""A real Prometheus server scrapes a worker fed by the simulator; PromQL proves the metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REPO, Lab, free_port


def promql(port: int, query: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the Prometheus server is not installed: apt-get install prometheus "
                    "(.ci/run and `make test` do it)")
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    yield port, cfg
    # started by the test once the worker's port is known


def test_prometheus_scrapes_rates_and_latency(lab: Lab, prometheus: tuple[int, Path],
                                              tmp_path: Path) -> None:
    port, cfg = prometheus
    w = lab.worker()
    w.wait_ready()
    cfg.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [" + json.dumps(str(REPO / "deploy" / "prometheus" / "alerts.yml")) + "]\n"
        "scrape_configs:\n"
        "  - job_name: fusion-worker\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{w.metrics_port}']}}]\n"
    )
    prom_log = (tmp_path / "prometheus.log").open("wb")
    prom = subprocess.Popen(
        [shutil.which("prometheus") or "prometheus", f"--config.file={cfg}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=prom_log,
    )
    sim = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "simulate", "--rate", "150", "--seed", "5",
         "--scenario-share", "0.1", "--quiet"],
        env=lab.env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        received: list[dict[str, Any]] = []
        latency: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            time.sleep(2)
            try:
                received = promql(port, "sum by (topic, country) "
                                        "(rate(fusion_events_received_total[15s]))")
                latency = promql(port, "histogram_quantile(0.99, sum by (le) "
                                       "(rate(fusion_event_to_alert_seconds_bucket[30s])))")
            except OSError:
                continue
            countries = {r["metric"].get("country") for r in received
                         if float(r["value"][1]) > 0}
            if countries >= {"US", "MX"} and latency and latency[0]["value"][1] != "NaN":
                break
        assert {r["metric"]["country"] for r in received} >= {"US", "MX"}, received
        assert sum(float(r["value"][1]) for r in received) > 10
        assert latency and float(latency[0]["value"][1]) > 0, latency
        up = promql(port, 'up{job="fusion-worker"}')
        assert up and up[0]["value"][1] == "1"
        alerts = promql(port, "sum by (rule) (fusion_alerts_raised_total)")
        assert alerts, "no alerts counted"
        ready = promql(port, "fusion_worker_ready")
        assert ready and ready[0]["value"][1] == "1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5) as r:
            rules = json.loads(r.read())
        assert rules["data"]["groups"], "the alerting rules did not load"
    finally:
        sim.terminate()
        sim.wait(timeout=10)
        prom.terminate()
        prom.wait(timeout=10)
        prom_log.close()
