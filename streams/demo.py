"""The demo: local broker, worker and simulator; alerts printed per country as they arrive."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter

import orjson

from streams.cli import format_alert
from streams.keys import generate, write_keys
from streams.settings import REPO_ROOT, Settings

BROKER = REPO_ROOT / "deploy" / "kafka" / "broker.sh"


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"demo: the worker exited with code {proc.returncode}; see .demo/worker.log"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit("demo: the worker did not become ready in time; see .demo/worker.log")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to run")
    ap.add_argument("--rate", type=float, default=40.0, help="simulated events per second")
    ap.add_argument("--keep-broker", action="store_true", help="leave the broker running")
    args = ap.parse_args()

    s = Settings()
    logs = REPO_ROOT / ".demo"
    logs.mkdir(exist_ok=True)
    subprocess.run([str(BROKER), "start"], check=True)  # noqa: S603
    fusion = [sys.executable, "-m", "streams.cli"]
    subprocess.run([*fusion, "topics"], check=True, stdout=subprocess.DEVNULL)  # noqa: S603
    env = dict(os.environ)
    if not (env.get("FUSION_PSEUDONYM_KEYS_FILE") or env.get("FUSION_PSEUDONYM_KEYS")):
        # The demo's own pseudonymisation keys, made once and kept out of the repository.
        keys = logs / "pseudonym-keys.json"
        if not keys.exists():
            write_keys(keys, generate())
        env["FUSION_PSEUDONYM_KEYS_FILE"] = str(keys)
    procs: list[subprocess.Popen[bytes]] = []
    counts: Counter[str] = Counter()
    try:
        with (logs / "worker.log").open("wb") as wlog:
            worker = subprocess.Popen(  # noqa: S603
                [*fusion, "worker"],
                stdout=wlog,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO_ROOT,
            )
        procs.append(worker)
        print("demo: waiting for the worker to be ready...", flush=True)
        wait_ready(s.web_port, worker)
        with (logs / "simulator.log").open("wb") as slog:
            procs.append(
                subprocess.Popen(  # noqa: S603
                    [*fusion, "simulate", "--rate", str(args.rate), "--scenario-share", "0.03"],
                    stdout=slog,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=REPO_ROOT,
                )
            )
        print(
            f"demo: simulator publishing {args.rate:.0f} events/s; alerts per country follow "
            f"for {args.seconds:.0f} s (logs in .demo/)\n",
            flush=True,
        )
        from kafka import KafkaConsumer

        from streams.clients import kafka_python_config

        consumer = KafkaConsumer(
            *[s.alert_topic(p) for p in s.partners],
            group_id=None,
            auto_offset_reset="latest",
            consumer_timeout_ms=500,
            **kafka_python_config(s),
        )
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            for msg in consumer:
                a = orjson.loads(msg.value)
                counts[a["recipient"]] += 1
                print(format_alert(a), flush=True)
                if time.monotonic() >= end:
                    break
        consumer.close()
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
        if not args.keep_broker:
            subprocess.run([str(BROKER), "stop"], check=False)  # noqa: S603
    print(
        "\ndemo: alerts delivered per country: "
        + (", ".join(f"{c} {n}" for c, n in sorted(counts.items())) or "none")
    )
    return 0 if counts else 1


if __name__ == "__main__":
    sys.exit(main())
