"""The deployment files agree with the code: compose, Dockerfile, Prometheus, alerts, Grafana.

No broker and no Docker needed. The promtool checks are skipped when promtool is not on PATH
(Debian: apt-get install prometheus).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import streams.cli
from streams.settings import Settings
from streams.tools.relay import TriageMetrics
from streams.tools.transparency.witness import WitnessMetrics
from streams.topics import declared_topics
from streams.worker.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROM_DIR = ROOT / "deploy" / "prometheus"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yml"
DASHBOARD = GRAFANA_DIR / "dashboards" / "fusion.json"
MAKE_DASHBOARD = GRAFANA_DIR / "make_dashboard.py"

APP_SERVICES = ("topics", "worker", "relay", "simulator")
WORKER_JOB = "fusion-worker"
# Labels Prometheus adds to every scraped series; `le` is the histogram bucket label.
TARGET_LABELS = {"job", "instance"}
# Grafana's interval variables, replaced by a duration so promtool can parse the expressions.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


# -- helpers -------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(obj: Any) -> Any:
    """Compose's `${VAR:-default}` with every variable unset (the file's own defaults)."""
    if isinstance(obj, str):
        return _VAR.sub(lambda m: m.group(2) or "", obj)
    if isinstance(obj, list):
        return [interpolate(v) for v in obj]
    if isinstance(obj, dict):
        return {k: interpolate(v) for k, v in obj.items()}
    return obj


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = interpolate(load_yaml(COMPOSE))
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return dict(compose["services"])


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def ports_of(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host part, container port) of each published port, short syntax."""
    out = []
    for p in service.get("ports", []):
        parts = str(p).split("/")[0].split(":")
        out.append((":".join(parts[:-1]), int(parts[-1])))
    return out


def command_of(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command")
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def setting_default(name: str) -> Any:
    """The default of a setting, whatever FUSION_* variables this process has."""
    return Settings.model_fields[name].default


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical: list[str] = []
    buf = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        logical.append(buf + stripped)
        buf = ""
    out = []
    for item in logical:
        instr, _, rest = item.partition(" ")
        out.append((instr.upper(), rest.strip()))
    return out


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instr, rest in dockerfile_instructions():
        if instr == "ENV":
            for tok in shlex.split(rest):
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    env[k] = v
    return env


def fusion_entrypoint() -> list[str]:
    entries = [
        json.loads(rest) for instr, rest in dockerfile_instructions() if instr == "ENTRYPOINT"
    ]
    assert entries, "the Dockerfile has no ENTRYPOINT"
    return list(entries[-1])


@pytest.fixture
def parse_cli(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """argv -> the parsed argparse.Namespace, through streams.cli.main with no command run."""
    calls: list[argparse.Namespace] = []

    def record(args: argparse.Namespace) -> int:
        calls.append(args)
        return 0

    for name in dir(streams.cli):
        if name.startswith("cmd_"):
            monkeypatch.setattr(streams.cli, name, record)

    def parse(argv: list[str]) -> argparse.Namespace:
        calls.clear()
        assert streams.cli.main(argv) == 0
        assert len(calls) == 1, f"`fusion {' '.join(argv)}` ran no command"
        return calls[0]

    yield parse


def exported_series() -> dict[str, set[str]]:
    """Every series name the worker, the triage relay and the witnesses export (with _total,
    _bucket...) -> its label names."""
    out: dict[str, set[str]] = {}
    for m in (Metrics(), TriageMetrics(), WitnessMetrics()):
        for c in vars(m).values():
            if isinstance(c, MetricWrapperBase) and c._labelnames:
                c.labels(*["x"] * len(c._labelnames))  # a child, so labelled metrics show samples
        for family in m.registry.collect():
            for s in family.samples:
                out.setdefault(s.name, set()).update(s.labels)
    return out


_METRIC = re.compile(r"\b(fusion_[a-zA-Z0-9_]+)\b")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")


def labels_used(expr: str) -> set[str]:
    used: set[str] = set()
    for group in _GROUPING.findall(expr):
        used.update(x.strip() for x in group.split(",") if x.strip())
    for selector in re.findall(r"\{([^}]*)\}", expr):
        used.update(_MATCHER.findall(selector))
    return used


def check_expr(expr: str, series: dict[str, set[str]], where: str) -> set[str]:
    """Assert the metric names and labels of one PromQL expression exist; return its labels."""
    names = set(_METRIC.findall(expr))
    missing = sorted(n for n in names if n not in series)
    assert not missing, f"{where}: {missing} not exported by streams.worker.metrics ({expr})"
    known = set().union(*(series[n] for n in names)) | TARGET_LABELS
    bad = labels_used(expr) - known
    assert not bad, f"{where}: labels {sorted(bad)} exist on none of {sorted(names)} ({expr})"
    return known


def alert_rules() -> list[dict[str, Any]]:
    doc = load_yaml(ALERTS)
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def load_make_dashboard() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_dashboard", MAKE_DASHBOARD)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def dashboard_panels() -> list[dict[str, Any]]:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out = []
    for p in doc["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # panels inside collapsed rows
    return out


def dashboard_exprs() -> list[tuple[str, str, str]]:
    """(panel title, expr, legendFormat) of every query."""
    return [
        (p["title"], t["expr"], t.get("legendFormat", ""))
        for p in dashboard_panels()
        for t in p.get("targets", [])
    ]


# -- compose -------------------------------------------------------------------------------


def test_compose_has_the_stack(services: dict[str, Any]) -> None:
    assert set(services) >= {"kafka", *APP_SERVICES, "prometheus", "grafana"}
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for name in ("kafka", "prometheus", "grafana"):
        assert ":latest" not in services[name]["image"], f"{name}: pin the image version"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_build_the_repo_image(services: dict[str, Any], name: str) -> None:
    svc = services[name]
    build = svc["build"]
    context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (context / dockerfile).resolve() == DOCKERFILE
    assert "entrypoint" not in svc, "the image's entrypoint is `fusion`; set `command` only"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_commands_are_fusion_subcommands(
    services: dict[str, Any], parse_cli: Any, name: str
) -> None:
    assert fusion_entrypoint() == ["fusion"]
    argv = command_of(services[name])
    assert argv, f"{name}: no command"
    args = parse_cli(argv)
    assert args.cmd == argv[0]


def test_compose_commands_are_the_expected_ones(services: dict[str, Any], parse_cli: Any) -> None:
    assert parse_cli(command_of(services["topics"])).cmd == "topics"
    assert parse_cli(command_of(services["worker"])).cmd == "worker"
    assert parse_cli(command_of(services["relay"])).cmd == "relay"
    sim = parse_cli(command_of(services["simulator"]))
    assert (sim.cmd, sim.rest) == ("simulate", ["--rate", "50"])


def test_dockerfile(parse_cli: Any) -> None:
    instrs = dockerfile_instructions()
    assert instrs[0] == ("FROM", "python:3.11-slim")
    runs = [rest for instr, rest in instrs if instr == "RUN"]
    assert any(re.search(r"\bpip install\b", r) for r in runs)
    # `fusion ...` run at build time and the default command are valid invocations.
    for r in runs:
        for part in r.split("&&"):
            argv = shlex.split(part)
            if argv and argv[0] == "fusion":
                parse_cli(argv[1:])
    cmd = [json.loads(rest) for instr, rest in instrs if instr == "CMD"]
    if cmd:
        parse_cli(cmd[-1])
    # The rules are not in the package: the image copies them and points the setting there.
    rules_path = dockerfile_env().get("FUSION_RULES_PATH")
    assert rules_path, "the Dockerfile must set FUSION_RULES_PATH"
    copies = [shlex.split(rest) for instr, rest in instrs if instr == "COPY"]
    assert any(c[-2:] == ["rules", rules_path] for c in copies), "rules not copied there"
    exposed = {int(p) for instr, rest in instrs if instr == "EXPOSE" for p in rest.split()}
    assert {setting_default("web_port"), setting_default("metrics_port")} <= exposed
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fusion"] == "streams.cli:main"


def test_package_lists_every_subpackage() -> None:
    """`pip install .` (the Dockerfile) installs only what [tool.setuptools] packages names."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = cfg.get("packages")
    if not isinstance(listed, list):
        pytest.skip("packages are discovered, not listed")
    found = sorted(
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in listed
        if "." not in top
        for init in (ROOT / top).rglob("__init__.py")
    )
    missing = [p for p in found if p not in listed]
    assert not missing, (
        f"pyproject.toml [tool.setuptools] packages lacks {missing}: a non-editable install "
        "(the Docker image) would not contain them"
    )


def test_the_image_copies_every_listed_package() -> None:
    """`pip install /src` in the Dockerfile fails on a listed package it was not given."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    tops = {p for p in cfg["packages"] if "." not in p}
    copied = {
        shlex.split(rest)[-1]
        for instr, rest in dockerfile_instructions()
        if instr == "COPY" and shlex.split(rest)[-1].startswith("/src/")
    }
    assert sorted(f"/src/{p}" for p in tops if f"/src/{p}" not in copied) == []


def test_bootstrap_servers_are_kafkas_internal_listener(services: dict[str, Any]) -> None:
    env = env_of(services["kafka"])
    listeners = dict(x.split("://", 1) for x in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(x.split("://", 1) for x in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocol_map = env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    protocols = dict(x.split(":", 1) for x in protocol_map.split(","))
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert set(listeners) <= set(protocols)
    assert controller in listeners and controller not in advertised
    assert set(advertised) <= set(listeners)
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    # Containers reach the broker by its service name on an advertised listener.
    names = {"kafka", services["kafka"].get("hostname", "kafka")}
    in_network = {v for v in advertised.values() if v.split(":")[0] in names}
    for name in APP_SERVICES:
        bootstrap = env_of(services[name]).get("FUSION_BOOTSTRAP_SERVERS")
        assert bootstrap in in_network, f"{name}: FUSION_BOOTSTRAP_SERVERS={bootstrap}"
        assert advertised_port(bootstrap) == listener_port(listeners, advertised, bootstrap)
    # The published host port is the one advertised to the host.
    for host, container in ports_of(services["kafka"]):
        name = next(n for n, v in listeners.items() if listener_port_of(v) == container)
        assert name in advertised, f"port {container} is published but {name} not advertised"
        host_port = int(host.split(":")[-1])
        assert advertised_port(advertised[name]) == host_port


def advertised_port(hostport: str) -> int:
    return int(hostport.rsplit(":", 1)[1])


def listener_port_of(bind: str) -> int:
    return int(bind.rsplit(":", 1)[1])


def listener_port(listeners: dict[str, str], advertised: dict[str, str], hostport: str) -> int:
    name = next(n for n, v in advertised.items() if v == hostport)
    return listener_port_of(listeners[name])


def test_kafka_is_a_single_kraft_node(services: dict[str, Any]) -> None:
    env = env_of(services["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    voter_id, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert voter_id == env["KAFKA_NODE_ID"]
    listeners = dict(x.split("://", 1) for x in env["KAFKA_LISTENERS"].split(","))
    controller = listeners[env["KAFKA_CONTROLLER_LISTENER_NAMES"]]
    assert advertised_port(voter) == listener_port_of(controller)
    for k, v in env.items():
        if k.endswith(("_REPLICATION_FACTOR", "_MIN_ISR")):
            assert v == "1", f"{k}={v} on a single node"
    biggest = max(int(t.config.get("max.message.bytes", 0)) for t in declared_topics(Settings()))
    assert int(env["KAFKA_MESSAGE_MAX_BYTES"]) >= biggest
    assert "healthcheck" in services["kafka"]


def test_depends_on_conditions(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: use depends_on with conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            cond = spec["condition"]
            if cond == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck"
            elif cond == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{dep} must be one-shot"
            else:
                assert cond == "service_started"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("worker", "simulator"):
        assert services[name]["depends_on"]["topics"]["condition"] == (
            "service_completed_successfully"
        )


def test_worker_ports_and_healthcheck_match_settings(services: dict[str, Any]) -> None:
    worker = services["worker"]
    env = env_of(worker)
    web = int(env.get("FUSION_WEB_PORT", setting_default("web_port")))
    metrics = int(env.get("FUSION_METRICS_PORT", setting_default("metrics_port")))
    assert (web, metrics) == (setting_default("web_port"), setting_default("metrics_port"))
    assert {web, metrics} <= {c for _, c in ports_of(worker)}
    hc = healthcheck_text(worker)
    assert f":{web}/health/ready" in hc


# -- Prometheus and alerts -----------------------------------------------------------------


def test_prometheus_scrapes_the_worker_metrics_port(services: dict[str, Any]) -> None:
    cfg = load_yaml(PROM_CONFIG)
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    targets = [t for sc in jobs[WORKER_JOB]["static_configs"] for t in sc["targets"]]
    assert targets == [f"worker:{setting_default('metrics_port')}"]
    assert targets[0].split(":")[0] in services
    for rf in cfg["rule_files"]:
        assert (PROM_CONFIG.parent / rf).is_file(), rf
    # compose mounts deploy/prometheus where --config.file looks.
    prom = services["prometheus"]
    mounts = dict(str(v).split(":")[:2] for v in prom["volumes"] if str(v).startswith("./"))
    config_flag = next(a for a in prom["command"] if a.startswith("--config.file="))
    config_in_container = Path(config_flag.split("=", 1)[1])
    assert mounts["./deploy/prometheus"] == str(config_in_container.parent)
    assert config_in_container.name == PROM_CONFIG.name


def test_alerts_use_exported_metrics_and_labels() -> None:
    series = exported_series()
    jobs = {j["job_name"] for j in load_yaml(PROM_CONFIG)["scrape_configs"]}
    rules = alert_rules()
    assert rules
    for r in rules:
        known = check_expr(r["expr"], series, r["alert"])
        for job in re.findall(r'job\s*=\s*"([^"]*)"', r["expr"]):
            assert job in jobs, f"{r['alert']}: job {job} is not scraped"
        templated = re.findall(r"\$labels\.(\w+)", json.dumps(r["annotations"]))
        assert set(templated) <= known | {"alertname"}, r["alert"]


def test_alerts_have_severity_and_guidance() -> None:
    names = [r["alert"] for r in alert_rules()]
    assert len(names) == len(set(names))
    for r in alert_rules():
        assert r["labels"]["severity"] in {"critical", "warning", "info"}, r["alert"]
        assert r["annotations"]["summary"].strip(), r["alert"]
        assert len(r["annotations"]["description"]) > 80, f"{r['alert']}: say what to check"
    exprs = " ".join(r["expr"] for r in alert_rules())
    for needed in (
        "fusion_events_received_total",
        "absent(",
        "fusion_consumer_lag",
        "fusion_event_to_alert_seconds_bucket",
        "fusion_events_rejected_total",
        "up{",
        "fusion_state_evictions_total",
        'fusion_watermark_seconds{stage="correlate"}',
        "fusion_witness_refusals_total",
    ):
        assert needed in exprs, f"no alert uses {needed}"


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    tests = load_yaml(ALERTS_TEST)
    assert tests["rule_files"] == [ALERTS.name]
    firing: set[str] = set()
    silent: set[str] = set()
    for t in tests["tests"]:
        for case in t.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested not firing"
    assert (firing | silent) <= names, "tests name alerts that do not exist"


# -- Grafana -------------------------------------------------------------------------------


def test_dashboard_is_up_to_date() -> None:
    mod = load_make_dashboard()
    assert DASHBOARD.read_text(encoding="utf-8") == mod.render(), (
        "fusion.json is stale: run python deploy/grafana/make_dashboard.py"
    )
    assert mod.OUT == DASHBOARD


def test_dashboard_is_valid() -> None:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert doc["uid"] and doc["title"]
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    ds_uid = load_yaml(DATASOURCES)["datasources"][0]["uid"]
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] != "row":
            assert p["datasource"]["uid"] == ds_uid, p["title"]
            assert p["targets"], p["title"]
            for t in p["targets"]:
                assert t["datasource"]["uid"] == ds_uid, p["title"]
    titles = " ".join(p["title"].lower() for p in panels)
    for needed in (
        "rejections",
        "duplicates",
        "late",
        "alerts raised",
        "destination",
        "event-to-alert",
        "ingest-to-alert",
        "lag",
        "keys",
        "partial",
        "evictions",
        "reloads",
        "ready",
        "watermark lag",
        "idle input",
        "reorder buffer",
        "behind the watermark",
    ):
        assert needed in titles, f"no panel about {needed}"


def test_dashboard_watermark_panels() -> None:
    exprs = {e for _, e, _ in dashboard_exprs()}
    lag = [e for e in exprs if "fusion_watermark_seconds" in e]
    assert lag and all("time() -" in e and "stage" in e and "partition" in e for e in lag)
    late = [e for e in exprs if "fusion_events_late_total" in e]
    assert late and all(labels_used(e) >= {"topic", "agency"} for e in late), late


def test_dashboard_uses_exported_metrics_and_labels() -> None:
    series = exported_series()
    for title, expr, legend in dashboard_exprs():
        known = check_expr(expr, series, f"panel {title!r}")
        legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        assert legend_labels <= known, f"panel {title!r}: legend {legend}"
    used = {n for _, e, _ in dashboard_exprs() for n in _METRIC.findall(e)}
    unused = sorted(
        n
        for n in exported_series()
        if not n.endswith("_created")
        and n not in used
        and not (n.endswith(("_sum", "_count")) and n.rsplit("_", 1)[0] + "_bucket" in used)
    )
    assert not unused, f"metrics on no dashboard panel: {unused}"


def test_grafana_provisioning_matches_compose(services: dict[str, Any]) -> None:
    ds = load_yaml(DATASOURCES)["datasources"]
    assert [d["uid"] for d in ds] == ["prometheus"]
    url = ds[0]["url"]
    host, port = url.split("://", 1)[1].rstrip("/").split(":")
    assert host in services and int(port) == 9090
    providers = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    path = providers[0]["options"]["path"]
    grafana = services["grafana"]
    mounts = dict(str(v).split(":")[:2] for v in grafana["volumes"] if str(v).startswith("./"))
    assert mounts["./deploy/grafana/dashboards"] == path
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    env = env_of(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert home == f"{path}/{DASHBOARD.name}"
    assert 3000 in {c for _, c in ports_of(grafana)}


# -- promtool ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not on PATH (Debian: apt-get install prometheus)")
    return path


def run_promtool(promtool: str, *args: str) -> None:
    res = subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert res.returncode == 0, f"promtool {' '.join(args)}:\n{res.stdout}\n{res.stderr}"


def test_promtool_check_config(promtool: str) -> None:
    run_promtool(promtool, "check", "config", str(PROM_CONFIG))


def test_promtool_check_rules(promtool: str) -> None:
    run_promtool(promtool, "check", "rules", str(ALERTS))


def test_promtool_test_rules(promtool: str) -> None:
    run_promtool(promtool, "test", "rules", str(ALERTS_TEST))


def test_promtool_parses_dashboard_queries(promtool: str, tmp_path: Path) -> None:
    rules = []
    for i, (_, expr, _) in enumerate(dashboard_exprs()):
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    f = tmp_path / "dashboard_queries.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool(promtool, "check", "rules", str(f))
