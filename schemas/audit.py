"""Audit records on `audit.sharing`: what was released to whom, and why."""

from __future__ import annotations

from pydantic import AwareDatetime, Field

from schemas.alerts import Action, Change, PolicyRef
from schemas.base import WireModel


class FieldAction(WireModel):
    """The action taken on one field of the alert for this destination."""

    path: str = Field(description="The field, e.g. `evidence[1].fields.person_ref`.")
    action: Action = Field(description="release, pseudonymize, generalize, redact or drop.")
    policy_rule: str = Field(description="The sharing-policy rule that decided it.")
    origin: str = Field(description="The country whose data the field is.")


class KeyField(WireModel):
    """One evidence field holding the value of the alert's correlation key."""

    path: str = Field(
        description="Where the value is, e.g. `evidence[0].fields.plate` (for an event dropped "
        "for this destination, `evidence[<event_id>].fields.plate`)."
    )
    origin: str = Field(description="The country whose data the field is.")
    action: Action = Field(description="What this destination received of the field.")


class KeyMatch(WireModel):
    """What the alert's correlation key (plate, serial, ...) matched on, so reviewers can count
    identifiers matched across the border without seeing them."""

    fields: list[KeyField] = Field(
        description="Every evidence field holding the key's value (empty if no field holds it "
        "as such, e.g. a derived key)."
    )


class LogPlace(WireModel):
    """Where the record is in the transparency log of the worker partition that wrote it."""

    log: str = Field(description="The log's origin, e.g. `border-fusion/audit/3`.")
    index: int = Field(ge=0, description="The record's leaf index in that log.")


class RuleFileRef(WireModel):
    """The rule file in force when the alert was raised."""

    name: str = Field(description="The file's name, e.g. `watchlist-plate.yaml`.")
    sha256: str = Field(description="SHA-256 of the file's bytes as loaded (archived by it).")


class AuditRecord(WireModel):
    """One record per alert per destination."""

    alert_id: str = Field(description="The alert released.")
    version: int = Field(default=1, ge=1, description="The alert's version released.")
    change: Change = Field(default="raised", description="raised, updated or withdrawn.")
    rule_id: str = Field(description="The rule that raised it.")
    destination: str = Field(description="The country it was released to.")
    topic: str = Field(description="The topic it was written to.")
    released_at: AwareDatetime = Field(description="When it was released.")
    policy: PolicyRef = Field(description="The sharing policy applied.")
    actions: list[FieldAction] = Field(description="The action on every field of the evidence.")
    match: KeyMatch | None = Field(
        default=None,
        description="Where the alert's correlation key is in the evidence; null for rules "
        "with no entity key (geographic rules) and in records written before this field.",
    )
    rule_file: RuleFileRef | None = Field(
        default=None,
        description="The rule file in force; null in records written before this field.",
    )
    alert_sha256: str | None = Field(
        default=None,
        description="SHA-256 of the alert exactly as written to the destination's topic; null "
        "in records written before this field.",
    )
    salt: str | None = Field(
        default=None,
        description="16 random bytes, base64, making the record's leaf hash unguessable to "
        "a party that sees only the hash; null in records written before the log.",
    )
    log: LogPlace | None = Field(
        default=None,
        description="The record's place in the transparency log; its leaf is this record in "
        "RFC 8785 canonical JSON. Null in records written before the log.",
    )
