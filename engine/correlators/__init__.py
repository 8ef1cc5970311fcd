"""The rule types: what a YAML `type:` names, the model its rule is validated with, and the
correlator that evaluates it. One explicit table; nothing is registered by importing a module."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from engine.correlators.base import Correlator
from engine.correlators.event_count import EventCountCorrelator, EventCountRule
from engine.correlators.geofence import GeofenceCorrelator, GeofenceRule
from engine.correlators.incursion import IncursionCorrelator, IncursionRule
from engine.correlators.proximity import ProximityCorrelator, ProximityRule
from engine.correlators.sequence import SequenceCorrelator, SequenceRule
from engine.correlators.temporal import TemporalCorrelator, TemporalRule
from engine.correlators.value_count import ValueCountCorrelator, ValueCountRule
from engine.correlators.watchlist import WatchlistCorrelator, WatchlistRule
from engine.rules import RuleBase


class RuleType(NamedTuple):
    """A rule type: the model of its rules and the correlator that evaluates one."""

    rule: type[RuleBase]
    correlator: type[Correlator[Any]]


RULE_TYPES: dict[str, RuleType] = {
    t.rule.type_name: t
    for t in (
        RuleType(WatchlistRule, WatchlistCorrelator),
        RuleType(ProximityRule, ProximityCorrelator),
        RuleType(EventCountRule, EventCountCorrelator),
        RuleType(ValueCountRule, ValueCountCorrelator),
        RuleType(TemporalRule, TemporalCorrelator),
        RuleType(SequenceRule, SequenceCorrelator),
        RuleType(IncursionRule, IncursionCorrelator),
        RuleType(GeofenceRule, GeofenceCorrelator),
    )
}
"""`type:` name (the model's `type_name`) -> the rule type."""


class _CorrelatorColumn(Mapping[str, type[Correlator[Any]]]):
    def __getitem__(self, name: str) -> type[Correlator[Any]]:
        return RULE_TYPES[name].correlator

    def __iter__(self) -> Iterator[str]:
        return iter(RULE_TYPES)

    def __len__(self) -> int:
        return len(RULE_TYPES)


CORRELATORS: Mapping[str, type[Correlator[Any]]] = _CorrelatorColumn()
"""The correlator column of `RULE_TYPES`, read-only and read through to the table, so a type
added to it is found: `CORRELATORS[rule.type_name](rule)`."""

__all__ = ["CORRELATORS", "RULE_TYPES", "Correlator", "RuleType"]
