"""Which events a rule takes: event type plus field filters (equality, sets, ranges)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.facts import Fact

EventTypeName = Literal["detection", "suspect", "weapon", "track"]


class Condition(BaseModel):
    """A test on one field; every operator given must hold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    eq: Any = None
    ne: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")
    not_in: list[Any] | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    exists: bool | None = None

    def _ranged(self) -> bool:
        return (
            self.gt is not None
            or self.gte is not None
            or self.lt is not None
            or (self.lte is not None)
        )

    def test(self, value: Any) -> bool:
        """Whether a field value passes."""
        if value is None:
            if self.exists is not None:
                return not self.exists
            return self.eq is None and self.in_ is None and not self._ranged()
        if self.exists is False:
            return False
        if self.eq is not None and value != self.eq:
            return False
        if self.ne is not None and value == self.ne:
            return False
        if self.in_ is not None and value not in self.in_:
            return False
        if self.not_in is not None and value in self.not_in:
            return False
        if self._ranged():
            if not isinstance(value, int | float) or isinstance(value, bool):
                return False
            if self.gt is not None and not value > self.gt:
                return False
            if self.gte is not None and not value >= self.gte:
                return False
            if self.lt is not None and not value < self.lt:
                return False
            if self.lte is not None and not value <= self.lte:
                return False
        return True

    def predicate(self) -> Callable[[Any], bool]:
        """A fast test for the common one-operator forms; `test` for the rest."""
        ops = {k for k, v in self if v is not None}
        if ops == {"eq"}:
            eq = self.eq
            return lambda v: v is not None and v == eq
        if ops == {"in_"} and all(isinstance(x, str | int | float) for x in self.in_ or ()):
            allowed = frozenset(self.in_ or ())
            return lambda v: v is not None and v in allowed
        if ops == {"not_in"} and all(isinstance(x, str | int | float) for x in self.not_in or ()):
            banned = frozenset(self.not_in or ())
            return lambda v: v not in banned
        if ops == {"ne"}:
            ne = self.ne
            return lambda v: v != ne
        if ops == {"exists"}:
            return (lambda v: v is not None) if self.exists else (lambda v: v is None)
        return self.test


def _condition(spec: Any) -> Condition:
    if isinstance(spec, Condition):
        return spec
    if isinstance(spec, dict):
        return Condition.model_validate(spec)
    if isinstance(spec, list):
        return Condition.model_validate({"in": spec})
    return Condition(eq=spec)


class Selector(BaseModel):
    """`{type: detection, where: {subject_kind: [person, vehicle], border_km: {lte: 1}}}`."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    type: Annotated[list[EventTypeName], Field(min_length=1)]
    where: dict[str, Condition] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if isinstance(data.get("type"), str):
                data["type"] = [data["type"]]
            where = data.get("where")
            if isinstance(where, dict):
                data["where"] = {k: _condition(v) for k, v in where.items()}
        return data

    def matches(self, fact: Fact) -> bool:
        """Whether the fact is of one of the types and passes every condition."""
        entry = _COMPILED.get(id(self))
        if entry is None or entry[0] is not self:
            entry = _COMPILED[id(self)] = (self, _Compiled(self))
        c = entry[1]
        if fact.event_type not in c.types:
            return False
        get = fact.get
        for name, test in c.tests:
            if not test(get(name)):
                return False
        return True


class _Compiled:
    """A selector as plain Python: attribute access on pydantic models is slow per event."""

    __slots__ = ("tests", "types")

    def __init__(self, sel: Selector) -> None:
        self.types = frozenset(sel.type)
        # Derived fields computed from geometry go last: most events fail a cheaper test first.
        costly = ("border_km", "territory")
        items = sorted(sel.where.items(), key=lambda kv: kv[0] in costly)
        self.tests = tuple((name, c.predicate()) for name, c in items)


# id -> (selector, compiled); the selector is held so that its id is not reused.
_COMPILED: dict[int, tuple[Selector, _Compiled]] = {}
