"""Which events a rule takes: event type plus field filters (equality, sets, ranges)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.facts import Fact
from schemas.events import EventType


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

    type: Annotated[list[EventType], Field(min_length=1)]
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
        return self.matcher(fact)

    def described(self, describe: Callable[[Selector], str]) -> str:
        """The selector in words, made by `describe` the first time (explanations ask for it
        with every alert)."""
        text: str | None = self.__dict__.get("_text")
        if text is None:
            text = self.__dict__["_text"] = describe(self)
        return text

    @cached_property
    def matcher(self) -> Callable[[Fact], bool]:
        """`matches` as a plain function, compiled once: attribute access on pydantic models
        and the generic condition test are slow per event."""
        types = frozenset(self.type)
        # Derived fields computed from geometry go last: most events fail a cheaper test first.
        items = sorted(self.where.items(), key=lambda kv: kv[0] in _COSTLY)
        tests = tuple((name, c.predicate()) for name, c in items)
        if not tests:
            return lambda f: f.event_type in types
        if len(tests) == 1:
            name, test = tests[0]
            return lambda f: f.event_type in types and test(f.get(name))

        def match(f: Fact) -> bool:
            if f.event_type not in types:
                return False
            get = f.get
            for name, test in tests:
                if not test(get(name)):
                    return False
            return True

        return match


_COSTLY = frozenset({"border_km", "territory"})


def any_of(selectors: Sequence[Selector]) -> Callable[[Fact], bool]:
    """One function telling whether any of the selectors matches a fact."""
    matchers = tuple(s.matcher for s in selectors)
    if len(matchers) == 1:
        return matchers[0]

    def match(f: Fact) -> bool:
        for m in matchers:
            if m(f):
                return True
        return False

    return match
