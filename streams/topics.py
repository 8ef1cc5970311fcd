"""Every topic the pipeline uses, declared once, and their creation."""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.settings import Settings

HOUR_MS = 3_600_000
# The transparency log's topics: kept for ever, never compacted (the worker refuses to run if
# their configuration says otherwise: streams/worker/auditlog.py).
KEPT = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    role: str = ""


def declared_topics(settings: Settings) -> list[TopicSpec]:
    """The topics of the wire contract plus the pipeline's internal ones."""
    # Retention counts from arrival (LogAppendTime), so events backdated by their producer
    # are not deleted by the broker as soon as they land.
    inputs = {
        "retention.ms": str(settings.input_retention_hours * HOUR_MS),
        "message.timestamp.type": "LogAppendTime",
        "max.message.bytes": str(max(settings.max_message_bytes * 4, 1_048_576)),
    }
    outputs = {"retention.ms": str(30 * 24 * HOUR_MS)}
    # Triage is kept as long as the audit: what each country did with an alert, and what
    # crossed, can be shown for as long as what was released.
    audit = {"retention.ms": str(365 * 24 * HOUR_MS)}
    internal = {
        "retention.ms": str(7 * 24 * HOUR_MS),
        "max.message.bytes": "16777216",
    }
    specs = [
        TopicSpec(t, settings.input_partitions, inputs, "input") for t in settings.input_topic_names
    ]
    specs += [
        TopicSpec(settings.topic_deadletter, settings.input_partitions, outputs, "deadletter"),
        TopicSpec(
            settings.topic_audit,
            settings.input_partitions,
            # with the transparency log on, its records are kept as long as their leaves
            dict(KEPT)
            if settings.log_signing_key_file is not None
            else audit,
            "audit",
        ),
        TopicSpec(settings.topic_log_leaves, settings.internal_partitions, KEPT, "log"),
        TopicSpec(settings.topic_log_checkpoints, 1, KEPT, "log"),
        TopicSpec(settings.topic_log_cosignatures, 1, KEPT, "log"),
        TopicSpec(settings.topic_archive, 1, KEPT, "log"),
        *[TopicSpec(settings.alert_topic(p), 1, outputs, "alerts") for p in settings.partners],
        TopicSpec(settings.topic_triage_audit, 1, audit, "audit"),
        *[TopicSpec(settings.triage_topic(p), 1, audit, "triage") for p in settings.partners],
        *[TopicSpec(settings.inbound_topic(p), 1, audit, "triage") for p in settings.partners],
        *[
            TopicSpec(settings.stix_topic(p), 1, outputs, "stix")
            for p in settings.partners
            if settings.stix_topics
        ],
        TopicSpec(settings.topic_routed, settings.internal_partitions, internal, "internal"),
        *[
            TopicSpec(
                t,
                settings.internal_partitions,
                {
                    "cleanup.policy": "compact",
                    "max.message.bytes": "16777216",
                    "segment.ms": str(10 * 60_000),
                    "min.cleanable.dirty.ratio": "0.5",
                },
                "state",
            )
            for t in (settings.topic_changelog,)
        ],
    ]
    # Faust's own assignor topic; created here because the app may not declare topics.
    specs.append(TopicSpec(f"{settings.app_id}-__assignor-__leader", 1, {}, "faust"))
    return specs
