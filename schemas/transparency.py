"""The transparency log's own topics: leaf hashes (`audit.log.leaves`); checkpoints and
cosignatures are C2SP signed notes, as text (docs/contract.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import WireModel


class LeafEntry(WireModel):
    """One leaf of a log, as every party sees it: its hash, never its record."""

    log: str = Field(description="The log's origin, e.g. `border-fusion/audit/3`.")
    index: int = Field(ge=0, description="The leaf's index in the log.")
    destination: str = Field(description="The country the audited release went to.")
    leaf_hash: str = Field(
        description="SHA-256(0x00 || leaf), base64, the leaf being the salted audit record in "
        "RFC 8785 canonical JSON."
    )


class ArchivedFile(WireModel):
    """A sharing policy or rule file the worker loaded, kept by hash on `audit.archive`."""

    kind: Literal["policy", "rules"] = Field(description="`policy` or `rules`.")
    name: str = Field(description="The file's name, e.g. `policy.yaml`.")
    sha256: str = Field(description="SHA-256 of `content`'s UTF-8 bytes (the message key).")
    content: str = Field(description="The file's text exactly as loaded.")
