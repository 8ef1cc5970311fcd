"""Rule models, and loading rule files with errors that say where."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from engine.durations import parse_duration
from engine.errors import RuleError, RuleSetError
from engine.facts import Fact
from engine.selectors import EventTypeName, Selector

Duration = Annotated[float, BeforeValidator(parse_duration)]
Severity = Literal["low", "medium", "high", "critical"]
RuleId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class KeySpec(Frozen):
    """The correlation key: an entity field, with per-event-type aliases.

    `key: plate` reads the normalised `plate` of every event; `{name: vehicle, fields:
    {detection: plate, weapon: plate}}` names the field per type.
    """

    name: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$")]
    fields: dict[EventTypeName, str] = Field(default_factory=dict)

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
    """Fixed scoring factors: a base from severity, a bonus per extra event, confidence."""

    base: Annotated[int, Field(ge=0, le=100)] | None = None
    per_event: Annotated[int, Field(ge=0, le=50)] = 3
    max_bonus: Annotated[int, Field(ge=0, le=100)] = 15
    confidence: bool = True


class ExpectedAlert(Frozen):
    """An alert a rule test must produce, by the test events that are its evidence."""

    evidence: list[str] = Field(min_length=1)


class RuleTest(Frozen):
    """Example events (times relative to `start`) and the alerts they must produce."""

    name: str
    start: AwareDatetime | None = None
    events: list[dict[str, Any]] = Field(min_length=1)
    expect: list[ExpectedAlert] = Field(default_factory=list)
    expect_count: int | None = None


class RuleBase(Frozen):
    """What every rule has."""

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
        """How far behind the watermark an event may be and still count: the window by default."""
        return self.window if self.lateness is None else self.lateness

    @property
    def horizon(self) -> float:
        """How long a fact can matter to this rule after its event time."""
        return self.window + self.allowed_lateness

    def selectors(self) -> Sequence[Selector]:
        """Every selector of the rule: an event matching none is of no use to it."""
        raise NotImplementedError

    def route_key(self) -> KeySpec | None:
        """The entity key the rule correlates by; None for geographic rules."""
        return None

    def takes(self, fact: Fact) -> bool:
        """Whether any selector of the rule matches the fact."""
        return any(s.matches(fact) for s in self.selectors())


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


def _where(loc: Sequence[int | str]) -> str:
    return ".".join(str(p) for p in loc) or "(rule)"


def parse_rule(doc: Any, *, file: str, index: int) -> RuleBase:
    """Validate one rule document; raise RuleError naming the file, the rule and the field."""
    # The rule-type table imports the rule models, which build on this module: read it at
    # call time, not at import.
    from engine.correlators import RULE_TYPES

    if not isinstance(doc, dict):
        raise RuleError(f"rule #{index + 1} must be a mapping, got {type(doc).__name__}", file=file)
    rule_id = doc.get("id") if isinstance(doc.get("id"), str) else f"#{index + 1}"
    kind = doc.get("type")
    if kind not in RULE_TYPES:
        valid = sorted(RULE_TYPES)
        raise RuleError(
            f"unknown rule type {kind!r}; valid options are {valid}",
            file=file,
            rule_id=rule_id,
            field="type",
        )
    body = {k: v for k, v in doc.items() if k != "type"}
    try:
        return RULE_TYPES[kind].rule.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise RuleError(
            f"{first['msg']}{more}", file=file, rule_id=rule_id, field=_where(first["loc"])
        ) from e


def _documents(path: Path) -> list[Any]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RuleError(f"not valid YAML{where}: {getattr(e, 'problem', e)}", file=str(path)) from e
    rules: list[Any] = []
    for d in docs:
        if isinstance(d, dict) and "rules" in d and "id" not in d:
            if not isinstance(d["rules"], list):
                raise RuleError("`rules:` must be a list of rules", file=str(path))
            rules.extend(d["rules"])
        else:
            rules.append(d)
    return rules


class RuleSet:
    """A validated, immutable set of rules, indexed by the event types they take."""

    def __init__(self, rules: Iterable[RuleBase], sources: dict[str, str] | None = None) -> None:
        self.rules: tuple[RuleBase, ...] = tuple(r for r in rules if r.enabled)
        self.by_id = {r.id: r for r in self.rules}
        self.sources = sources or {}
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
            (float(getattr(r, "radius_km", 0.0)) for r in self.rules if r.geo), default=0.0
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


def _key_conflicts(rules: list[RuleBase], sources: dict[str, str]) -> list[RuleError]:
    """Rules are co-partitioned by key name, so one name must mean one key everywhere."""
    first: dict[str, RuleBase] = {}
    errors = []
    for r in rules:
        spec = r.route_key()
        if spec is None:
            continue
        seen = first.setdefault(spec.name, r)
        other = seen.route_key()
        if seen is not r and other is not None and other.fields != spec.fields:
            errors.append(
                RuleError(
                    f"key {spec.name!r} reads fields {dict(spec.fields) or 'by its name'} here but "
                    f"{dict(other.fields) or 'by its name'} in rule {seen.id}; "
                    "give the key another name or the same fields",
                    file=sources.get(r.id),
                    rule_id=r.id,
                    field="key",
                )
            )
    return errors


def load_rules(paths: Sequence[Path | str]) -> RuleSet:
    """Load every rule file (a directory means its *.yaml files); report all problems at once."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted([*p.glob("*.yaml"), *p.glob("*.yml")]))
        else:
            files.append(p)
    errors: list[RuleError] = []
    rules: list[RuleBase] = []
    sources: dict[str, str] = {}
    for f in files:
        if f.name.startswith("policy"):
            continue
        try:
            docs = _documents(f)
        except (OSError, RuleError) as e:
            errors.append(e if isinstance(e, RuleError) else RuleError(str(e), file=str(f)))
            continue
        for i, doc in enumerate(docs):
            try:
                rule = parse_rule(doc, file=str(f), index=i)
            except RuleError as e:
                errors.append(e)
                continue
            if rule.id in sources:
                errors.append(
                    RuleError(
                        f"duplicate rule id, already defined in {sources[rule.id]}",
                        file=str(f),
                        rule_id=rule.id,
                        field="id",
                    )
                )
                continue
            sources[rule.id] = str(f)
            rules.append(rule)
    errors.extend(_key_conflicts(rules, sources))
    if errors:
        raise RuleSetError(errors)
    if not files:
        raise RuleSetError([RuleError(f"no rule files found in {', '.join(map(str, paths))}")])
    return RuleSet(rules, sources)


def parse_rules_text(text: str, *, file: str = "<inline>") -> RuleSet:
    """A rule set from YAML text (for tests and tools)."""
    errors: list[RuleError] = []
    rules: list[RuleBase] = []
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise RuleSetError([RuleError(f"not valid YAML: {e}", file=file)]) from e
    flat: list[Any] = []
    for d in docs:
        flat.extend(d["rules"] if isinstance(d, dict) and "rules" in d and "id" not in d else [d])
    for i, doc in enumerate(flat):
        try:
            rules.append(parse_rule(doc, file=file, index=i))
        except RuleError as e:
            errors.append(e)
    errors.extend(_key_conflicts(rules, {r.id: file for r in rules}))
    if errors:
        raise RuleSetError(errors)
    return RuleSet(rules)


def utc_from_ts(ts: float) -> datetime:
    """An aware UTC datetime from epoch seconds."""
    from datetime import UTC

    return datetime.fromtimestamp(ts, tz=UTC)
