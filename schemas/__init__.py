"""Wire models of the fusion pipeline: events in, alerts, audit records and dead letters out."""

from schemas.alerts import Alert, Evidence, PolicyRef, Redaction
from schemas.audit import AuditRecord, FieldAction
from schemas.deadletter import DeadLetter, DeadLetterError
from schemas.events import (
    EVENT_MODELS,
    Detection,
    Event,
    Location,
    Source,
    Suspect,
    Tip,
    Track,
    Weapon,
    normalize_plate,
)

__all__ = [
    "EVENT_MODELS",
    "Alert",
    "AuditRecord",
    "DeadLetter",
    "DeadLetterError",
    "Detection",
    "Event",
    "Evidence",
    "FieldAction",
    "Location",
    "PolicyRef",
    "Redaction",
    "Source",
    "Suspect",
    "Tip",
    "Track",
    "Weapon",
    "normalize_plate",
]
