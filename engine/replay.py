"""Offline replay: the worker's semantics over a JSON-lines stream, with no broker.

Per line, in order: validate (as the event's `event_type` topic would), drop duplicate ids,
refuse events too late for every rule, correlate; at the end, decide what still waits.
The clock is event time throughout, so the same input always gives the same output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import BinaryIO

import orjson

from engine.dedup import Deduplicator
from engine.engine import Engine
from engine.hits import RawAlert
from engine.ingest import Rejection, validate
from engine.release import InterimPolicy, SharingPolicy, recipients, release
from engine.rules import RuleSet


@dataclass
class ReplayStats:
    events: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    late: int = 0
    alerts: int = 0


def replay(
    src: BinaryIO,
    out: BinaryIO,
    ruleset: RuleSet,
    *,
    partners: frozenset[str],
    destination: str | None = None,
    policy: SharingPolicy | None = None,
) -> ReplayStats:
    """Read events, write one released alert per line (per destination), return counts."""
    policy = policy or InterimPolicy()
    engine = Engine(ruleset)
    dedup = Deduplicator()
    stats = ReplayStats()
    clock = -math.inf

    def emit(alerts: list[RawAlert]) -> None:
        for a in alerts:
            stats.alerts += 1
            who = recipients(a, partners, policy)
            for dest in who:
                if destination and dest != destination.upper():
                    continue
                res = release(a, dest, who, policy, now=a.raised_at, topic=f"alerts.{dest.lower()}")
                if res is not None:
                    out.write(orjson.dumps(res[0].model_dump(mode="json")) + b"\n")

    for line in src:
        if not line.strip():
            continue
        stats.events += 1
        try:
            etype = orjson.loads(line).get("event_type")
        except (orjson.JSONDecodeError, AttributeError):
            etype = None
        if etype not in ("detection", "suspect", "weapon", "track"):
            stats.rejected += 1
            continue
        res = validate(line.strip(), etype, now=math.inf, partners=partners)
        if isinstance(res, Rejection):
            stats.rejected += 1
            continue
        clock = max(clock, res.ts)
        if dedup.seen(res.event_id, clock):
            stats.duplicates += 1
            continue
        if ruleset.late_reason(res, engine.watermark) is not None:
            stats.late += 1
            continue
        stats.accepted += 1
        emit(engine.process(res, now=res.ts))
        emit(engine.advance(engine.watermark))
    if not math.isinf(clock):
        emit(engine.advance(clock))
        emit(engine.flush(clock))
    return stats
