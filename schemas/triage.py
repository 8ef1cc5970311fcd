"""Triage on the wire (docs/contract.md, "Triage"): each country's own actions on an alert
(`triage.<cc>`), what the sharing policy lets cross to the partner (`triage.<cc>.inbound`), and
the audit record of each such release (`audit.triage`)."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from schemas.alerts import PolicyRef
from schemas.base import WireModel

TRIAGE_TOPIC_PREFIX = "triage."
INBOUND_SUFFIX = ".inbound"
NOTE_MAX_CHARS = 4000

Status = Literal["new", "acknowledged", "in_progress", "closed"]
CloseReason = Literal[
    "false_positive",
    "duplicate",
    "true_positive",
    "benign_positive",
    "automated_closure",
    "other",
]
Role = Literal["viewer", "analyst", "lead", "pipeline"]
ActionKind = Literal["acknowledge", "start", "close", "reopen", "assign", "note"]
AssigneeKind = Literal["person", "task_force"]
ShareAction = Literal["release", "redact"]


def triage_topic(country: str, prefix: str = TRIAGE_TOPIC_PREFIX) -> str:
    """A country's own triage actions: `triage.<iso2 lower>`."""
    return f"{prefix}{country.lower()}"


def inbound_topic(country: str, prefix: str = TRIAGE_TOPIC_PREFIX) -> str:
    """What partners' triage the policy lets reach a country: `triage.<iso2 lower>.inbound`."""
    return f"{triage_topic(country, prefix)}{INBOUND_SUFFIX}"


class Actor(WireModel):
    """Who took an action: a named user of a country, or the pipeline."""

    user: str = Field(min_length=1, max_length=64, description="The user's name (`pipeline`).")
    country: str = Field(pattern=r"^[A-Z]{2}$", description="The user's country.")
    role: Role = Field(description="`viewer`, `analyst`, `lead`, or `pipeline`.")


class Assignee(WireModel):
    """Who an alert is assigned to: a person of the triaging country, or a task force."""

    kind: AssigneeKind = Field(description="`person` or `task_force`.")
    name: str = Field(min_length=1, max_length=64, description="User or task force name.")


class Note(WireModel):
    """A note on an alert."""

    text: str = Field(
        min_length=1, max_length=NOTE_MAX_CHARS, description="The note, at most 4,000 chars."
    )
    shareable: bool = Field(
        default=False, description="The author lets it cross to the partner under the policy."
    )


class TriageAction(WireModel):
    """One action of a country on its triage of an alert (on `triage.<cc>`, keyed by alert_id)."""

    action_id: str = Field(min_length=1, max_length=64, description="Unique id of the action.")
    alert_id: str = Field(min_length=1, max_length=128, description="The alert triaged.")
    country: str = Field(pattern=r"^[A-Z]{2}$", description="The country whose triage it is.")
    revision: int = Field(
        ge=0, description="The triage revision it was made against (0: never triaged)."
    )
    action: ActionKind = Field(
        description="acknowledge, start, close, reopen, assign or note."
    )
    actor: Actor = Field(description="Who took it.")
    at: AwareDatetime = Field(description="When it was taken.")
    reason: CloseReason | None = Field(default=None, description="For `close`: why.")
    assignee: Assignee | None = Field(default=None, description="For `assign`: to whom.")
    note: Note | None = Field(default=None, description="For `note` (or a close's comment).")
    alert_version: int | None = Field(
        default=None, description="For an automated closure: the withdrawn alert's version."
    )


class SharedField(WireModel):
    """What the policy decided for one field of a shared action."""

    field: str = Field(description="`status`, `reason`, `assignee`, `note`, `actor`.")
    action: ShareAction = Field(description="`release` or `redact`.")
    policy_rule: str = Field(description="The sharing-policy rule that decided it.")


class SharedActor(WireModel):
    """Who acted, as it crosses: role and country, never the name."""

    country: str = Field(pattern=r"^[A-Z]{2}$", description="The actor's country.")
    role: Role = Field(description="The actor's role.")


class SharedTriage(WireModel):
    """A partner's triage action as released (on `triage.<cc>.inbound`, keyed by alert_id)."""

    alert_id: str = Field(description="The alert triaged.")
    country: str = Field(pattern=r"^[A-Z]{2}$", description="The country whose triage it is.")
    revision: int = Field(ge=1, description="That country's triage revision after the action.")
    action: ActionKind = Field(description="What was done.")
    at: AwareDatetime = Field(description="When.")
    status: Status | None = Field(description="The status after it, or null when withheld.")
    reason: CloseReason | None = Field(default=None, description="The close reason, if any.")
    assignee: Assignee | None = Field(
        default=None, description="The task force assigned, if the policy lets it cross."
    )
    note: str | None = Field(default=None, description="A note its author marked shareable.")
    actor: SharedActor | None = Field(default=None, description="Who acted (role, country).")
    fields: list[SharedField] = Field(description="The decision on each field.")
    policy: PolicyRef = Field(description="The sharing policy applied.")


class TriageAudit(WireModel):
    """One record per triage action released to a partner (on `audit.triage`)."""

    alert_id: str = Field(description="The alert triaged.")
    country: str = Field(pattern=r"^[A-Z]{2}$", description="Whose triage it is.")
    destination: str = Field(pattern=r"^[A-Z]{2}$", description="The partner it went to.")
    action_id: str = Field(description="The action released.")
    revision: int = Field(ge=1, description="The triage revision after the action.")
    topic: str = Field(description="The topic it was written to.")
    released_at: AwareDatetime = Field(description="When it was released.")
    fields: list[SharedField] = Field(description="The decision on each field.")
    policy: PolicyRef = Field(description="The sharing policy applied.")
