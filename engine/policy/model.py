"""The policy file (`rules/policy.yaml`) as frozen pydantic models, and the base they share
with the keys file's models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from schemas.alerts import Severity, Tlp
from schemas.events import EventType

ActionName = Literal["release", "pseudonymize", "generalize", "redact", "drop"]

Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
Cites = Annotated[str, Field(min_length=1, max_length=120)]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def clean_message(msg: str) -> str:
    """A pydantic error message without pydantic's `Value error, ` prefix."""
    return msg.removeprefix("Value error, ")


def _star(value: Any) -> Any:
    """`"*"` (or nothing) means any; a single value means a list of one."""
    if value is None or value == "*":
        return None
    if isinstance(value, str):
        return [value]
    return value


def _text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f'must be text: quote it, e.g. version: "{value}"')
    return value


AnyOf = BeforeValidator(_star)


class PolicyRule(Frozen):
    """Which events it applies to, and what it decides for them."""

    name: Name = Field(description="Rule name; the `policy_rule` of what it decides.")
    cites: Cites | None = Field(
        default=None, description="The article of the agreement the rule rests on."
    )
    description: str = ""
    from_: Annotated[list[Country] | None, AnyOf] = Field(
        default=None, alias="from", description="Origin countries; `*` for any."
    )
    to: Annotated[list[Country] | None, AnyOf] = Field(
        default=None, description="Destination countries; `*` for any."
    )
    direction: Literal["domestic", "cross-border", "any"] = Field(
        default="any", description="`domestic`: origin is the destination; `cross-border`: not."
    )
    event_types: Annotated[list[EventType | Literal["patrol"]] | None, AnyOf] = Field(
        default=None,
        description="Event types; `*` for any (and for the alert's own location). `patrol` is "
        "a track of own forces (with `patrol_unit`): such a track is asked as `patrol`, not "
        "`track`.",
    )
    alert_rules: Annotated[list[str] | None, AnyOf] = Field(
        default=None,
        description="Only for the evidence of alerts of these rule ids; `*` (or nothing) for "
        "any. Asked only for `patrol` events.",
    )
    zone: Literal["inside", "outside", "anywhere"] = Field(
        default="anywhere", description="Inside or outside the border zone, or anywhere."
    )
    event: Literal["show", "drop"] | None = Field(
        default=None, description="Whether the event is shown at all."
    )
    fields: dict[str, ActionName] = Field(default_factory=dict, description="Field name -> action.")
    other_fields: Literal["release", "redact"] | None = Field(
        default=None, description="The action on every field `fields` does not name."
    )

    @property
    def label(self) -> str:
        """What alerts and audit records name as the `policy_rule`."""
        return f"{self.name} ({self.cites})" if self.cites else self.name


class ZoneRecipients(Frozen):
    """Partners who receive every alert in a zone (besides those the contract names)."""

    name: Name
    cites: Cites | None = None
    description: str = ""
    zone: Literal["inside", "outside", "anywhere"] = "inside"
    partners: Annotated[list[Country], Field(min_length=1)]
    rules: Annotated[list[str] | None, AnyOf] = Field(
        default=None, description="Alert rule ids this applies to; `*` for every rule."
    )


class TlpSpec(Frozen):
    """The TLP 2.0 label of an alert: by rule id if named, else by severity."""

    by_severity: dict[Severity, Tlp]
    by_rule: dict[str, Tlp] = Field(default_factory=dict)


TriageFieldName = Literal["status", "reason", "assignee", "note", "actor"]


class TriageShareRule(Frozen):
    """Which fields of a country's triage action cross to the partner (`triage:` in the file).

    Whatever a rule releases still crosses only as the triage model allows: an assignee only
    when it is a binational task force (never a person), a note only when its author marked
    it shareable, and an actor only as role and country (never the name)."""

    name: Name = Field(description="Rule name; the `policy_rule` of what it decides.")
    cites: Cites | None = Field(
        default=None, description="The article of the agreement the rule rests on."
    )
    description: str = ""
    fields: dict[TriageFieldName, Literal["release", "redact"]] = Field(
        description="Field of the triage action -> action."
    )

    @property
    def label(self) -> str:
        """What shared triage records and their audit name as the `policy_rule`."""
        return f"{self.name} ({self.cites})" if self.cites else self.name


class PolicyDoc(Frozen):
    """A sharing policy file."""

    id: Name
    version: Annotated[str, BeforeValidator(_text), Field(min_length=1, max_length=64)]
    description: str = ""
    agreement: str = ""
    border_zone_km: float = Field(gt=0, le=500, description="Width of the border zone, km.")
    location_precision_m: int = Field(
        ge=100, le=100_000, description="Grid size `generalize` coarsens locations to, metres."
    )
    tlp: TlpSpec
    recipients: list[ZoneRecipients] = Field(default_factory=list)
    rules: Annotated[list[PolicyRule], Field(min_length=1)]
    triage: list[TriageShareRule] = Field(
        default_factory=list,
        description="What of each country's triage of an alert crosses to the partner.",
    )
