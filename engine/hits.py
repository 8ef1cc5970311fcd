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
    refuted_by: tuple[Fact, ...] = ()
    """Non-empty: not a match but a correction. The alert this rule raised on `evidence` is
    withdrawn, because of these facts (within the rule's `corrections` span)."""
    reason: str = ""
    """For a correction: why, in words."""


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
    version: int = 1
    change: str = "raised"
    """`raised`, `updated` or `withdrawn`."""
    revision: dict[str, Any] | None = None
    """For an update or a withdrawal: `reason`, `records` (event ids), `superseded_by`."""


def alert_id(rule_id: str, evidence_ids: list[str] | tuple[str, ...]) -> str:
    """Same rule, same evidence, same id, whatever the order the evidence came in."""
    h = hashlib.sha256(rule_id.encode())
    for eid in sorted(set(evidence_ids)):
        h.update(b"\x00")
        h.update(eid.encode())
    return h.hexdigest()[:32]
