"""The demo: a local broker, a worker, the triage relay, one console per country (with one analyst
per country, whose passwords it prints) and the simulator. Every rule
of the pack fires in both countries within the first minute; alerts are printed as they
arrive and, at the end, which rules fired per country.

Each run has its own topics and consumer group (names tagged `demo-<date>-<time>`), so it
starts from nothing whatever earlier runs left on the broker; they are deleted at the end
(kept with --keep-broker), and those of earlier runs at the start.

Before the worker starts, the simulator's last hour is published at once: a quieter hour of
border traffic, opening with one scenario of every rule. The worker reads it as a backlog, in
event-time order, so the rule that waits for an absence (a vehicle at the line and no
inspection within 30 minutes, allowed 10 minutes late) decides within that hour of event
time instead of 40 minutes of wall-clock time. The live simulator then repeats every scenario
among background traffic (the absence rule's live ones fire 40 minutes after their crossing).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import orjson

from streams.cli import format_alert
from streams.keys import generate, write_keys
from streams.settings import REPO_ROOT, Settings
from streams.tools.accounts import add_user, new_password

BROKER = REPO_ROOT / "deploy" / "kafka" / "broker.sh"
LOGS = REPO_ROOT / ".demo"
FUSION = [sys.executable, "-m", "streams.cli"]
RUN_TAG = re.compile(r"demo-\d{8}-\d{6}")


class Clock:
    """Seconds since the demo started, for its messages and the summary."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def say(self, message: str) -> None:
        print(f"demo [{self.elapsed():5.1f} s] {message}", flush=True)


def run_overrides(settings: Settings, tag: str) -> dict[str, str]:
    """The run's own consumer group and topics, as settings field -> value."""
    out = {"app_id": f"{settings.app_id}-{tag}"}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if name.startswith("topic_"):
            out[name] = f"{value}.{tag}"
        elif name.endswith("_topic_prefix"):
            out[name] = f"{value}{tag}."
    return out


def delete_topics(settings: Settings, match: Callable[[str], bool]) -> list[str]:
    """Delete the broker's topics whose names `match`; returns their names."""
    from kafka import KafkaAdminClient

    from streams.clients import kafka_python_config

    admin = KafkaAdminClient(client_id="fusion-demo", **kafka_python_config(settings))
    try:
        names = sorted(t for t in admin.list_topics() if match(t))
        if names:
            admin.delete_topics(names)
        return names
    finally:
        admin.close()


def publish_backlog(
    settings: Settings, seconds: float, events: int, seed: int, scenario_share: float
) -> int:
    """The simulator's last `seconds`, in `events` draws, published at once; returns the count."""
    from streams.tools.simulator import Simulator, publish

    sim = Simulator(seed=seed, scenario_share=scenario_share, tips=True)
    now = time.time()
    return publish(settings, sim.backlog(now - seconds, now, events))


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Until `url` answers 200 (True), the process exits or the time is up (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 (our own http URL)
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def start(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A process with its output to .demo/<name>.log."""
    with (LOGS / f"{name}.log").open("wb") as log:
        return subprocess.Popen(  # noqa: S603
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT
        )


def summary(
    rule_ids: list[str],
    partners: list[str],
    counts: Counter[tuple[str, str]],
    first: dict[tuple[str, str], float],
    out: IO[str],
) -> list[tuple[str, str]]:
    """The table of alerts per rule and country (and when the first came); returns the
    (rule, country) pairs that had none."""
    missing = [(r, c) for r in rule_ids for c in partners if not counts[(r, c)]]
    width = max(len(r) for r in rule_ids)
    print("\ndemo: alerts per rule and country (first one, seconds after start)", file=out)
    print(f"  {'rule':{width}}" + "".join(f"  {c:>16}" for c in partners), file=out)
    for r in rule_ids:
        cells = [
            f"{counts[(r, c)]:5} ({first[(r, c)]:5.1f} s)" if counts[(r, c)] else f"{'-':>16}"
            for c in partners
        ]
        print(f"  {r:{width}}" + "".join(f"  {cell:>16}" for cell in cells), file=out)
    return missing


def demo_accounts(partners: list[str], env: dict[str, str]) -> dict[str, str]:
    """One analyst per country (new passwords every run) and one binational task force of
    them, in .demo/ (outside the repository's tracked files); the settings point there."""
    users = LOGS / "users.json"
    users.unlink(missing_ok=True)
    passwords = {}
    for cc in partners:
        passwords[cc] = new_password()
        add_user(users, f"analyst-{cc.lower()}", cc, "analyst", passwords[cc])
    forces = LOGS / "task-forces.yaml"
    members = "".join(f"\n      - {{user: analyst-{cc.lower()}, country: {cc}}}" for cc in partners)
    forces.write_text(
        f"task_forces:\n  - name: border-joint\n    title: Joint border task force\n"
        f"    members:{members}\n",
        encoding="utf-8",
    )
    if len(partners) < 2:
        forces.write_text("task_forces: []\n", encoding="utf-8")
    env["FUSION_USERS_FILE"] = str(users)
    env["FUSION_TASK_FORCES_FILE"] = str(forces)
    return passwords


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to run, from the start")
    ap.add_argument("--rate", type=float, default=40.0, help="simulated events per second, live")
    ap.add_argument("--scenario-share", type=float, default=0.03, help="of the simulated events")
    ap.add_argument(
        "--backlog", type=float, default=3600.0, help="seconds of past to publish first"
    )
    ap.add_argument("--backlog-events", type=int, default=3600, help="events in that past")
    ap.add_argument("--seed", type=int, default=int(time.time()), help="the simulator's seed")
    ap.add_argument("--keep-broker", action="store_true", help="leave the broker and topics")
    args = ap.parse_args()

    clock = Clock()
    base = Settings()
    tag = time.strftime("demo-%Y%m%d-%H%M%S")
    overrides = run_overrides(base, tag)
    s = base.model_copy(update=overrides)
    rule_ids = sorted(_rule_ids(s.rules_path))
    LOGS.mkdir(exist_ok=True)
    env = {**os.environ, **{f"FUSION_{k.upper()}": v for k, v in overrides.items()}}
    if not (env.get("FUSION_PSEUDONYM_KEYS_FILE") or env.get("FUSION_PSEUDONYM_KEYS")):
        # The demo's own pseudonymisation keys, made once and kept out of the repository.
        keys = LOGS / "pseudonym-keys.json"
        if not keys.exists():
            write_keys(keys, generate())
        env["FUSION_PSEUDONYM_KEYS_FILE"] = str(keys)

    passwords = demo_accounts(s.partners, env)

    subprocess.run([str(BROKER), "start"], check=True)  # noqa: S603
    clock.say("broker up")
    old = delete_topics(s, lambda t: RUN_TAG.search(t) is not None)
    if old:
        clock.say(f"deleted {len(old)} topics of earlier demo runs")
    subprocess.run(  # noqa: S603
        [*FUSION, "topics"], check=True, stdout=subprocess.DEVNULL, env=env, cwd=REPO_ROOT
    )
    clock.say(f"this run's topics and group are tagged {tag}; logs in .demo/")
    procs: list[subprocess.Popen[bytes]] = []
    counts: Counter[tuple[str, str]] = Counter()
    first: dict[tuple[str, str], float] = {}
    try:
        consoles = {}
        for cc in s.partners:
            port = str(s.console_port_of(cc))
            consoles[cc] = start(
                f"console-{cc.lower()}", [*FUSION, "console", cc, "--port", port], env
            )
            procs.append(consoles[cc])
        procs.append(start("relay", [*FUSION, "relay"], env))
        for cc in s.partners:
            clock.say(
                f"{cc} console: {s.console_url(cc)}  (log in as analyst-{cc.lower()}, "
                f"password {passwords[cc]})"
            )
        n = publish_backlog(s, args.backlog, args.backlog_events, args.seed, args.scenario_share)
        clock.say(
            f"published the simulator's last {args.backlog / 60:.0f} minutes at once "
            f"({n} events, one scenario of every rule first)"
        )
        worker = start("worker", [*FUSION, "worker"], env)
        procs.append(worker)
        clock.say("waiting for the worker to be ready...")
        if not wait_http(f"http://127.0.0.1:{s.web_port}/health/ready", worker, 90):
            raise SystemExit("demo: the worker did not become ready; see .demo/worker.log")
        live = ["--rate", str(args.rate), "--scenario-share", str(args.scenario_share)]
        live += ["--seed", str(args.seed + 1)]
        simulator = [sys.executable, "-m", "streams.tools.simulator", *live]
        procs.append(start("simulator", simulator, env))
        clock.say(
            f"worker ready; simulator live at {args.rate:.0f} events/s, a scenario in "
            f"{args.scenario_share:.0%} of them; alerts per country follow"
        )
        for cc, proc in consoles.items():
            if not wait_http(s.console_url(cc), proc, 5):
                clock.say(f"WARNING: the {cc} console is not answering; see .demo/console-*.log")
        _follow(s, clock, args.seconds, counts, first)
    except KeyboardInterrupt:
        pass
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        if args.keep_broker:
            prefix = overrides["alert_topic_prefix"]
            clock.say(f"kept: FUSION_ALERT_TOPIC_PREFIX={prefix} .venv/bin/fusion tail mx")
        else:
            delete_topics(s, lambda t: tag in t)
            subprocess.run([str(BROKER), "stop"], check=False)  # noqa: S603
    missing = summary(rule_ids, s.partners, counts, first, sys.stdout)
    if missing:
        lines = [f"!!! {rule} did not fire in {cc}" for rule, cc in missing]
        print("\n".join(["", "!" * 72, *lines, "!" * 72]), file=sys.stderr)
        return 1
    print(f"demo: every rule ({len(rule_ids)}) fired in every country ({', '.join(s.partners)})")
    return 0


def _rule_ids(path: Path) -> list[str]:
    from engine.rulefiles import load_rules

    return [r.id for r in load_rules([path]).rules]


def _follow(
    settings: Settings,
    clock: Clock,
    seconds: float,
    counts: Counter[tuple[str, str]],
    first: dict[tuple[str, str], float],
) -> None:
    """Print the run's alerts as they arrive until `seconds` after the start, counting per
    (rule, country) how many came and when the first did."""
    from kafka import KafkaConsumer

    from streams.clients import kafka_python_config

    consumer = KafkaConsumer(
        *[settings.alert_topic(p) for p in settings.partners],
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=500,
        **kafka_python_config(settings),
    )
    try:
        while clock.elapsed() < seconds:
            for msg in consumer:
                a: dict[str, Any] = orjson.loads(msg.value)
                key = (a["rule_id"], a["recipient"])
                if a.get("change", "raised") == "raised":  # alerts, not their later versions
                    counts[key] += 1
                    first.setdefault(key, clock.elapsed())
                print(format_alert(a), flush=True)
                if clock.elapsed() >= seconds:
                    break
    finally:
        consumer.close()


if __name__ == "__main__":
    sys.exit(main())
