"""Audit records on `audit.sharing`: what was released to whom, and why."""

from __future__ import annotations

from pydantic import AwareDatetime, Field

from schemas.alerts import Action, PolicyRef
from schemas.base import WireModel


class FieldAction(WireModel):
    """The action taken on one field of the alert for this destination."""

    path: str = Field(description="The field, e.g. `evidence[1].fields.person_ref`.")
    action: Action = Field(description="release, pseudonymize, generalize, redact or drop.")
    policy_rule: str = Field(description="The sharing-policy rule that decided it.")
    origin: str = Field(description="The country whose data the field is.")


class AuditRecord(WireModel):
    """One record per alert per destination."""

    alert_id: str = Field(description="The alert released.")
    rule_id: str = Field(description="The rule that raised it.")
    destination: str = Field(description="The country it was released to.")
    topic: str = Field(description="The topic it was written to.")
    released_at: AwareDatetime = Field(description="When it was released.")
    policy: PolicyRef = Field(description="The sharing policy applied.")
    actions: list[FieldAction] = Field(description="The action on every field of the evidence.")
