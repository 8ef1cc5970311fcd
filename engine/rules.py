"""Rule models (what every rule has, the key, suppression, scores, tests) and the rule set."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, NamedTuple

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from engine.durations import parse_duration
from engine.facts import Fact
from engine.selectors import Selector
from schemas.alerts import Severity
from schemas.events import EventType

if TYPE_CHECKING:
    from engine.explain import Explanation

Duration = Annotated[float, BeforeValidator(parse_duration)]
RuleId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class KeySpec(Frozen):
    """The correlation key: an entity field, with per-event-type aliases.

    `key: plate` reads the normalised `plate` of every event; `{name: vehicle, fields:
    {detection: plate, weapon: plate}}` names the field per type.
    """

    name: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$")]
    fields: dict[EventType, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _not_geo(cls, v: str) -> str:
        if v == "geo":
            raise ValueError("'geo' is reserved for geographic rules; name the key otherwise")
        return v

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    def value(self, fact: Fact) -> str | None:
        """The fact's key, or None if it has none."""
        v = fact.get(self.fields.get(fact.event_type, self.name))
        return None if v is None or v == "" else str(v)


class Suppress(Frozen):
    """One alert per burst: later hits with the same `by` values within `for` are dropped."""

    by: list[str] = Field(default_factory=lambda: ["key"])
    for_: Duration = Field(alias="for")


class Score(Frozen):
    """Fixed scoring factors: a base from severity, a bonus per extra event, confidence, and
    the Admiralty grade of tips (`engine.engine.RELIABILITY_FACTOR`, `CREDIBILITY_FACTOR`)."""

    base: Annotated[int, Field(ge=0, le=100)] | None = None
    per_event: Annotated[int, Field(ge=0, le=50)] = 3
    max_bonus: Annotated[int, Field(ge=0, le=100)] = 15
    confidence: bool = True
    grade: bool = True


class ExpectedAlert(Frozen):
    """An alert a rule test must produce and that stands at the end: by the test events that
    first made the rule fire (its `alert_id`), and optionally all it ends holding."""

    evidence: list[str] = Field(min_length=1)
    final: list[str] | None = None


class RuleTest(Frozen):
    """Example events (times relative to `start`) and the alerts they must produce."""

    name: str
    start: AwareDatetime | None = None
    events: list[dict[str, Any]] = Field(min_length=1)
    expect: list[ExpectedAlert] = Field(default_factory=list)
    expect_count: int | None = None


class Role(NamedTuple):
    """A kind of event a rule's explanations name (`seizure`, `sighting`), and the selectors
    that take it."""

    name: str
    select: Sequence[Selector]


class RuleBase(Frozen):
    """What every rule has, and the hooks through which its type explains an alert
    (`roles`, `summary`, `explain`; `engine.explain.explain_hit` calls them)."""

    type_name: ClassVar[str] = ""
    """The `type:` that names the rule type (its entry in `engine.correlators.RULE_TYPES`)."""
    geo: ClassVar[bool] = False

    id: RuleId
    title: Annotated[str, Field(min_length=3, max_length=200)]
    severity: Severity
    description: str = ""
    enabled: bool = True
    window: Duration
    lateness: Duration | None = None
    suppress: Suppress | None = None
    corrections: Duration | None = None
    """How long after an alert is raised late evidence may still update or withdraw it; with
    it, a rule that waits on an absence decides without waiting for `lateness`."""
    update_every: Duration = 30.0
    """At most one `updated` version per alert per this much event time."""
    score: Score = Field(default_factory=Score)
    recipients: list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]] = Field(default_factory=list)
    max_keys: Annotated[int, Field(ge=1)] = 100_000
    max_per_key: Annotated[int, Field(ge=1)] = 256
    tests: list[RuleTest] = Field(default_factory=list)

    @field_validator("window")
    @classmethod
    def _positive_window(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("the window must be longer than zero")
        return v

    @property
    def allowed_lateness(self) -> float:
        """How far behind the watermark an event may be and still count: the window by
        default, plus the corrections span."""
        base = self.window if self.lateness is None else self.lateness
        return base + (self.corrections or 0.0)

    @property
    def decision_delay(self) -> float:
        """How long past its time a decision that waits on event time (an absence) waits for
        late records: the lateness, or nothing when late records may correct it instead."""
        if self.corrections is not None:
            return 0.0
        return self.window if self.lateness is None else self.lateness

    @property
    def horizon(self) -> float:
        """How long a fact can matter to this rule after its event time."""
        return self.window + self.allowed_lateness

    @property
    def reach_km(self) -> float | None:
        """How far apart, in km, the events of one match may be; None for a rule that does not
        match by place."""
        return None

    def selectors(self) -> Sequence[Selector]:
        """Every selector of the rule: an event matching none is of no use to it."""
        raise NotImplementedError

    def route_key(self) -> KeySpec | None:
        """The entity key the rule correlates by; None for geographic rules."""
        return None

    def takes(self, fact: Fact) -> bool:
        """Whether any selector of the rule matches the fact."""
        return any(s.matches(fact) for s in self.selectors())

    def roles(self) -> list[Role]:
        """The kinds of event the rule's explanations name, in the rule's order; an event has
        the first whose selectors take it."""
        return [Role("event", self.selectors())]

    def summary(self) -> str:
        """What a match needs, in words, without the selectors (the explanation's summary
        adds each role's); empty if the selectors say it all."""
        return ""

    def explain(self, ex: Explanation) -> None:
        """Add what the rule type measured to an alert's explanation: its conditions as they
        held, the lines each event met, and the window examined if not the rule's from the
        first event (`engine.explain.Explanation`)."""


class KeyedSelectRule(RuleBase):
    """A rule over the events its `select` takes (one selector or a list), per `key`."""

    key: KeySpec
    select: list[Selector] = Field(min_length=1)

    @field_validator("select", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    def selectors(self) -> Sequence[Selector]:
        return self.select

    def route_key(self) -> KeySpec | None:
        return self.key


class RuleSet:
    """A validated, immutable set of rules, indexed by the event types they take."""

    def __init__(
        self,
        rules: Iterable[RuleBase],
        sources: dict[str, str] | None = None,
        contents: dict[str, bytes] | None = None,
    ) -> None:
        self.rules: tuple[RuleBase, ...] = tuple(r for r in rules if r.enabled)
        self.by_id = {r.id: r for r in self.rules}
        self.sources = sources or {}
        self.contents = contents or {}
        """Each rule file's bytes as loaded, by path (archived by the worker, by hash)."""
        self.digests = {
            rule_id: hashlib.sha256(self.contents[path]).hexdigest()
            for rule_id, path in self.sources.items()
            if path in self.contents
        }
        """Each rule's file, as SHA-256 of its bytes (recorded with each audit record)."""
        self._by_type: dict[str, list[tuple[RuleBase, tuple[Selector, ...]]]] = {}
        for r in self.rules:
            for t in sorted({t for sel in r.selectors() for t in sel.type}):
                sels = tuple(sel for sel in r.selectors() if t in sel.type)
                self._by_type.setdefault(t, []).append((r, sels))
        self._kinds: dict[str, str] = {}
        self._by_kind_type: dict[tuple[str, str], list[tuple[RuleBase, tuple[Selector, ...]]]] = {}
        for etype, entries in self._by_type.items():
            for r, sels in entries:
                spec = r.route_key()
                kind = spec.name if spec is not None else "geo"
                self._kinds[r.id] = kind
                self._by_kind_type.setdefault((kind, etype), []).append((r, sels))
        self.max_radius_km = max(
            (r.reach_km for r in self.rules if r.geo and r.reach_km is not None), default=0.0
        )

    def __len__(self) -> int:
        return len(self.rules)

    def rules_taking(self, fact: Fact) -> list[RuleBase]:
        """The rules with a selector that matches the fact (cached on the fact)."""
        cached = fact._taken
        if cached is not None and cached[0] is self:
            return cached[1]
        rules = []
        for rule, sels in self._by_type.get(fact.event_type, ()):
            for sel in sels:
                if sel.matches(fact):
                    rules.append(rule)
                    break
        fact._taken = (self, rules)
        return rules

    def rules_taking_for(self, fact: Fact, kind: str) -> list[RuleBase]:
        """The rules correlating by `kind` (a key name, or `geo`) that take the fact."""
        if fact._taken is not None and fact._taken[0] is self:
            return [r for r in fact._taken[1] if self._kinds[r.id] == kind]
        out = []
        for rule, sels in self._by_kind_type.get((kind, fact.event_type), ()):
            for sel in sels:
                if sel.matches(fact):
                    out.append(rule)
                    break
        return out

    def late_reason(
        self, fact: Fact, watermark: float, rules: list[RuleBase] | None = None
    ) -> str | None:
        """Why the fact is too old for every rule that could use it, or None if it is not.

        `rules`, if given, are `rules_taking(fact)` already computed."""
        if rules is None:
            rules = self.rules_taking(fact)
        if not rules:
            return None
        age = watermark - fact.ts
        if all(age > r.allowed_lateness for r in rules):
            allowed = max(r.allowed_lateness for r in rules)
            return (
                f"event time is {age / 3600:.1f} h behind the pipeline's event-time watermark; "
                f"the most any rule taking this {fact.event_type} allows is "
                f"{allowed / 3600:.1f} h ({', '.join(r.id for r in rules)}). "
                "It was not correlated; republish it with a correct occurred_at if it is wrong."
            )
        return None


def utc_from_ts(ts: float) -> datetime:
    """An aware UTC datetime from epoch seconds."""
    from datetime import UTC

    return datetime.fromtimestamp(ts, tz=UTC)
