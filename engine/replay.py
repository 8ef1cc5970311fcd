"""Offline replay: the worker's stages over a JSON-lines file, with no broker.

Each line is validated as the topic of its `event_type` would validate it, then routed and
correlated by the same stage code as the worker. A file is bounded, so every event is known
before any is correlated: they go to the engine in event-time order, as the worker's
watermark puts them when every event arrives within its partition's allowed disorder. So
the same events give the same alerts, ids included, in replay and in the pipeline. At the
end, what still waits (absences) is decided as if time ran on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson

from engine.correlate import CorrelateOutput, CorrelateStage
from engine.hits import RawAlert
from engine.ingest import Rejection, validate
from engine.release import InterimPolicy, ReleasePolicy, recipients, release_json
from engine.routing import Origin, Router, route_items
from engine.rules import RuleSet
from engine.versions import standing
from schemas.alerts import alert_topic
from schemas.events import EVENT_MODELS


@dataclass
class ReplayStats:
    events: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    late: int = 0
    alerts: int = 0
    """Alert versions raised (in replay, in event-time order, mostly first versions)."""
    standing: int = 0
    """Alerts that stand at the end (not withdrawn)."""


def correlate_lines(
    src: BinaryIO, ruleset: RuleSet, stage: CorrelateStage, *, partners: frozenset[str]
) -> Iterator[tuple[Any, Rejection | CorrelateOutput]]:
    """Each non-blank line of a JSON-lines stream of events through `stage`: its event id
    (None if unreadable) and what became of it, refused or what the stage made of it. The
    caller drains the stage at the end."""
    router = Router(ruleset)
    for n, raw in enumerate(src):
        line = raw.strip()
        if not line:
            continue
        try:
            doc = orjson.loads(line)
            etype, eid = doc.get("event_type"), doc.get("event_id")
        except (orjson.JSONDecodeError, AttributeError):
            yield None, Rejection("json", "not a JSON object")
            continue
        if etype not in EVENT_MODELS:
            yield eid, Rejection("event_type", f"{etype!r} is not one of {', '.join(EVENT_MODELS)}")
            continue
        res = validate(line, etype, now=math.inf, partners=partners)
        if isinstance(res, Rejection):
            yield eid, res
            continue
        origin = Origin("replay", 0, n)
        items = route_items(res, router, ruleset.rules_taking(res), 1, res.ts, origin)
        yield eid, stage.take(it for _, it in items)


def correlate_file(
    src: BinaryIO, ruleset: RuleSet, *, partners: frozenset[str]
) -> tuple[list[RawAlert], ReplayStats]:
    """The raw alerts the rules raise over a JSON-lines stream of events, and the counts."""
    stats = ReplayStats()
    stage = CorrelateStage(ruleset, dedup_window_s=math.inf, dedup_max_ids=10**9)
    alerts: list[RawAlert] = []

    def collect(out: CorrelateOutput) -> None:
        stats.duplicates += len(out.duplicates)
        stats.late += len(out.late)
        alerts.extend(a for a, _ in out.alerts)

    for _, out in correlate_lines(src, ruleset, stage, partners=partners):
        stats.events += 1
        if isinstance(out, Rejection):
            stats.rejected += 1
            continue
        collect(out)
        if not out.duplicates:
            stats.accepted += 1
    collect(stage.drain())
    stats.alerts = len(alerts)
    stats.standing = len(standing(alerts))
    return alerts, stats


def replay(
    src: BinaryIO,
    out: BinaryIO,
    ruleset: RuleSet,
    *,
    partners: frozenset[str],
    destination: str | None = None,
    policy: ReleasePolicy | None = None,
) -> ReplayStats:
    """Read events, write one released alert per line (per destination), return counts."""
    policy = policy or InterimPolicy()
    alerts, stats = correlate_file(src, ruleset, partners=partners)
    for a in alerts:
        who = recipients(a, partners, policy)
        for dest in who:
            if destination and dest != destination.upper():
                continue
            res = release_json(a, dest, who, policy, now=a.raised_at, topic=alert_topic(dest))
            if res is not None:
                out.write(orjson.dumps(res[0]) + b"\n")
    return stats
