"""Write the JSON Schema of every wire model into schemas/json/ for non-Python publishers.

Run `python -m schemas.generate`; a unit test fails when the files are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.alerts import Alert
from schemas.audit import AuditRecord
from schemas.deadletter import DeadLetter
from schemas.events import EVENT_MODELS
from schemas.transparency import ArchivedFile, LeafEntry
from schemas.triage import SharedTriage, TriageAction, TriageAudit

OUT = Path(__file__).resolve().parent / "json"
MODELS: dict[str, type[BaseModel]] = {
    **{event_type: model for event_type, model in EVENT_MODELS.items()},
    "alert": Alert,
    "deadletter": DeadLetter,
    "audit": AuditRecord,
    "triage-action": TriageAction,
    "triage-shared": SharedTriage,
    "triage-audit": TriageAudit,
    "leaf": LeafEntry,
    "archive": ArchivedFile,
}


def render(name: str, model: type[BaseModel]) -> str:
    """The schema file's exact text."""
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://github.com/border-fusion/border-fusion/schemas/json/{name}.schema.json",
        **model.model_json_schema(mode="validation"),
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def expected() -> dict[Path, str]:
    return {OUT / f"{n}.schema.json": render(n, m) for n, m in MODELS.items()}


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for path, text in expected().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(OUT.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
