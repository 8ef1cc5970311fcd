"""Hostile input through the real worker: it never crashes, and every message is accepted or
dead-lettered with its reason; memory stays bounded."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import orjson

from tests.integration.conftest import Lab
from tests.integration.test_pipeline import event

TOPICS = ("detection", "suspect", "weapon", "track")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def hostile(rng: random.Random) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for _ in range(40):
        out.append((rng.choice(TOPICS), rng.randbytes(rng.randint(0, 300))))
    out.append(("detection", b"[" * 50_000 + b"]" * 50_000))  # deep
    out.append(("detection", orjson.dumps({"event_type": "detection", "pad": "x" * 150_000})))
    out.append(("track", b"null"))
    out.append(("track", b'"just a string"'))
    out.append(("weapon", json.dumps({**event("weapon"), "quantity": 10**30}).encode()))
    out.append(("weapon", json.dumps({**event("weapon"), "quantity": 1e308}).encode()))
    out.append(("track", b'{"speed_mps": NaN}'))
    out.append(
        ("detection", orjson.dumps({**event("detection"), "occurred_at": "0001-01-01T00:00:00Z"}))
    )
    out.append(
        ("detection", orjson.dumps({**event("detection"), "occurred_at": "9999-12-31T23:59:59Z"}))
    )
    out.append(
        ("detection", orjson.dumps({**event("detection"), "occurred_at": "2026-13-45T99:00:00Z"}))
    )
    out.append(("suspect", orjson.dumps(event("detection"))))  # wrong topic
    out.append(("track", orjson.dumps({**event("track"), "location": {"lat": "north", "lon": 0}})))
    out.append(("detection", orjson.dumps({**event("detection"), "event_id": "e" * 10_000})))
    for _ in range(20):  # valid ones among them
        out.append(("detection", orjson.dumps(event("detection", subject_kind="unknown"))))
    rng.shuffle(out)
    return out


def test_hostile_input_never_crashes_and_nothing_is_lost(lab: Lab) -> None:
    w = lab.worker()
    w.wait_ready()
    before = rss_kb(w.proc.pid)
    msgs = hostile(random.Random(2026))
    for etype, raw in msgs:
        lab.send(etype, raw)
    lab.flush()
    dead = lab.read("deadletter", len(msgs) - 20, timeout=60, settled=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and w.metric("fusion_events_received_total") < 20:
        time.sleep(0.2)
    received = w.metric("fusion_events_received_total")
    ingest_dead = [d for d in dead if d["error"]["kind"] != "late"]
    assert w.proc.poll() is None, w.logs()
    assert len(ingest_dead) + received == len(msgs), (len(ingest_dead), received, len(msgs))
    kinds = {d["error"]["kind"] for d in dead}
    assert {"json", "schema", "type_mismatch", "too_large", "future"} <= kinds, kinds
    assert all(d["error"]["message"] for d in dead)
    assert rss_kb(w.proc.pid) - before < 200_000
