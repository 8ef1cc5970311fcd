"""The bilateral review report as data: every figure the HTML page shows, and its JSON twin."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.alerts import Action

ACTIONS: tuple[Action, ...] = ("release", "pseudonymize", "generalize", "redact", "drop")
WITHHELD: frozenset[str] = frozenset({"redact", "drop"})
Bucket = Literal["hour", "day"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ActionMix(Frozen):
    """How many fields went out under each action."""

    release: int = 0
    pseudonymize: int = 0
    generalize: int = 0
    redact: int = 0
    drop: int = 0
    total: int = 0
    withheld: int = Field(default=0, description="redact + drop")

    @classmethod
    def of(cls, counts: Mapping[str, int]) -> ActionMix:
        by = {a: counts.get(a, 0) for a in ACTIONS}
        return cls(
            **by, total=sum(by.values()), withheld=sum(by[a] for a in ACTIONS if a in WITHHELD)
        )

    def get(self, action: str) -> int:
        value: int = getattr(self, action)
        return value


class TimeBucket(Frozen):
    """One hour or day of the period."""

    start: AwareDatetime
    releases: int = Field(description="Audit records (one per alert per destination).")
    fields: ActionMix


class NamedMix(Frozen):
    """A row of a table: a name (rule, policy rule, field) and its counts."""

    name: str
    releases: int = Field(description="Releases in which it occurs.")
    alerts: int = Field(description="Distinct alerts among those releases.")
    fields: ActionMix


class WithheldRow(Frozen):
    """Fields withheld (redacted, or their event dropped) under one policy rule."""

    field: str
    policy_rule: str
    action: Action
    count: int


class KeyMatches(Frozen):
    """Alerts whose correlation key (plate, serial, ...) is held in the origin's data, and what
    the destination received of that key."""

    releases_with_key: int = Field(description="Releases whose key is held in the origin's data.")
    pseudonymized: int = Field(description="...of which the key went as a pseudonym.")
    released_as_is: int = Field(description="...of which the key went as is.")
    withheld: int = Field(description="...of which the key was withheld.")
    linked: int = Field(description="...of which the key is also in the destination's own data.")
    linked_pseudonymized: int = Field(
        description="...linked to the destination's own data through a pseudonym."
    )
    by_field: list[NamedMix] = Field(description="The key-holding fields, by name and action.")


class Flow(Frozen):
    """Data of one country released to one destination: fields of `origin` in alerts to
    `destination` (own-country when they are the same)."""

    origin: str
    destination: str
    label: str
    own: bool
    releases: int
    alerts: int
    fields: ActionMix
    timeline: list[TimeBucket]
    rules: list[NamedMix]
    policy_rules: list[NamedMix]
    fields_by_name: list[NamedMix]
    withheld: list[WithheldRow]
    matches: KeyMatches


class DestinationBucket(Frozen):
    start: AwareDatetime
    releases: dict[str, int] = Field(description="Releases per destination.")


class RuleTotal(Frozen):
    rule_id: str
    alerts: int
    releases: dict[str, int] = Field(description="Releases per destination.")
    cross_border: ActionMix
    updated: int = Field(default=0, description="Alerts with at least one update released.")
    withdrawn: int = Field(default=0, description="Alerts withdrawn.")


class Totals(Frozen):
    releases: int = Field(description="Audit records: one per alert per destination.")
    alerts: int = Field(description="Distinct alerts.")
    releases_by_destination: dict[str, int]
    alerts_by_destination: dict[str, int]
    cross_border: ActionMix = Field(description="Fields of one country sent to the other.")
    own_country: ActionMix = Field(description="Fields of a country sent to itself.")
    pseudonyms_matched: int = Field(
        description="Cross-border releases whose key, held in the other country's data, went as "
        "a pseudonym."
    )
    pseudonyms_linked: int = Field(
        description="...of which the key also matched the destination's own data."
    )
    timeline: list[DestinationBucket]
    rules: list[RuleTotal]


class PolicyUse(Frozen):
    """One sharing policy (id, version, file hash) as it was applied in the period."""

    id: str
    version: str
    sha256: str
    label: str
    first_used: AwareDatetime
    last_used: AwareDatetime
    releases: int
    alerts: int
    cross_border: ActionMix
    cross_border_share: dict[str, float] = Field(
        description="Percent of cross-border fields per action."
    )


class FieldChange(Frozen):
    """A field whose actions differ between two policies (same flow)."""

    flow: str
    field: str
    before: list[str]
    after: list[str]


class PolicyChange(Frozen):
    """From one policy to the next in order of first use."""

    before: str
    after: str
    at: AwareDatetime = Field(description="First use of the later policy.")
    share_change: dict[str, float] = Field(
        description="Change in percent of cross-border fields per action (points)."
    )
    fields: list[FieldChange]


class DispositionRow(Frozen):
    """How one country closed the alerts of one rule released in the period (its own figures)."""

    country: str
    rule_id: str
    triaged: int = Field(description="Alerts of the rule this country acted on.")
    open: int = Field(description="Of those, not closed.")
    closed: dict[str, int] = Field(description="Closed alerts by close reason.")
    share: dict[str, float] = Field(description="Share of the closed alerts by reason, percent.")


class LogCheckpoint(Frozen):
    """The checkpoint of one transparency log the report's figures rest on."""

    log: str = Field(description="The log's origin.")
    size: int = Field(description="The checkpoint's tree size.")
    root: str = Field(description="Its tree hash, base64.")
    cosigned_by: list[str] = Field(description="The witnesses whose cosignature it carries.")
    all_witnesses: bool = Field(description="Whether every witness cosigned it.")
    verified: bool = Field(description="Whether signatures were checked against trusted keys.")
    records: int = Field(description="The report's records in this log that it covers.")
    uncovered: int = Field(description="The report's records in this log it does not cover.")


class Report(Frozen):
    """The bilateral review report."""

    title: str
    generated_at: AwareDatetime
    source: str = Field(description="The audit topic read.")
    since: AwareDatetime
    until: AwareDatetime
    bucket: Bucket
    partners: list[str]
    skipped: int = Field(description="Records on the topic that are not audit records.")
    totals: Totals
    cross_border: list[Flow]
    own_country: list[Flow]
    policies: list[PolicyUse]
    policy_changes: list[PolicyChange]
    dispositions: list[DispositionRow] = Field(
        default_factory=list,
        description="Per country and rule, how the alerts released in the period were closed, "
        "from the countries' triage topics.",
    )
    checkpoints: list[LogCheckpoint] = Field(
        default_factory=list,
        description="Per transparency log, the checkpoint the figures rest on (none: no log).",
    )
