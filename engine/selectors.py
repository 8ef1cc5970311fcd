"""Which events a rule takes: event type plus field filters (equality, sets, ranges)."""

from __future__ import annotations

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
        if fact.event_type not in self.type:
            return False
        for name, cond in self.where.items():
            if not cond.test(fact.get(name)):
                return False
        return True
