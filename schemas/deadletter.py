"""Dead letters on `events.deadletter` (docs/contract.md, "Dead letters")."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from schemas.base import WireModel

ErrorKind = Literal[
    "json",
    "schema",
    "type_mismatch",
    "future",
    "late",
    "too_large",
    "unknown_partner",
    "wrong_issuer",
    "internal",
]


class DeadLetterError(WireModel):
    """What failed, in words a person can act on."""

    kind: ErrorKind = Field(description="Which check failed.")
    message: str = Field(description="What was wrong and how to fix it.")


class DeadLetter(WireModel):
    """An input the pipeline could not accept, with the reason and the original payload."""

    received_at: AwareDatetime = Field(description="When the pipeline received it.")
    topic: str = Field(description="The topic it was read from.")
    partition: int = Field(description="The partition it was read from.")
    offset: int = Field(description="Its offset in that partition.")
    error: DeadLetterError = Field(description="Why it was refused.")
    payload: str = Field(description="The original value, as text or base64.")
    payload_encoding: Literal["utf-8", "base64"] = Field(
        default="utf-8", description="`base64` when the original value is not UTF-8."
    )
