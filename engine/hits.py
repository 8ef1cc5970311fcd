"""What a correlator reports, and the raw (unreleased) alert the engine makes of it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from engine.facts import Fact


@dataclass(frozen=True, slots=True)
class Hit:
    """A rule matched: the facts that are its evidence, the key, and where."""

    rule_id: str
    evidence: tuple[Fact, ...]
    key: str | None
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class RawAlert:
    """An alert inside the pipeline, holding raw evidence; the release step makes it wire-ready."""

    alert_id: str
    rule_id: str
    title: str
    severity: str
    score: int
    raised_at: float
    first_seen: float
    last_seen: float
    lat: float
    lon: float
    evidence: tuple[Fact, ...]
    key: str | None
    extra_recipients: tuple[str, ...]
    explanation: dict[str, Any] | None = None
    """Why the rule fired (`engine.explain.explain_hit`), before release."""


def alert_id(rule_id: str, evidence_ids: list[str] | tuple[str, ...]) -> str:
    """Same rule, same evidence, same id, whatever the order the evidence came in."""
    h = hashlib.sha256(rule_id.encode())
    for eid in sorted(set(evidence_ids)):
        h.update(b"\x00")
        h.update(eid.encode())
    return h.hexdigest()[:32]
