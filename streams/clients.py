"""Kafka client configuration from settings, and topic creation (kafka-python admin)."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from streams.settings import Settings
from streams.topics import declared_topics

log = logging.getLogger(__name__)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A TLS context trusting the configured CA, or None for plaintext."""
    if settings.security_protocol != "SASL_SSL":
        return None
    ctx = ssl.create_default_context(cafile=str(settings.ssl_cafile))
    ctx.check_hostname = True
    return ctx


def _scram(settings: Settings) -> dict[str, Any]:
    """SCRAM-SHA-512 over TLS: the options kafka-python and aiokafka name alike."""
    assert settings.sasl_password is not None
    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": settings.sasl_username,
        "sasl_plain_password": settings.sasl_password.get_secret_value(),
    }


def kafka_python_config(settings: Settings) -> dict[str, Any]:
    """Connection options for kafka-python clients."""
    cfg: dict[str, Any] = {"bootstrap_servers": settings.bootstrap_servers.split(",")}
    if settings.security_protocol == "SASL_SSL":
        cfg.update(_scram(settings), ssl_cafile=str(settings.ssl_cafile))
    return cfg


def aiokafka_config(settings: Settings) -> dict[str, Any]:
    """Connection options for aiokafka clients."""
    cfg: dict[str, Any] = {"bootstrap_servers": settings.bootstrap_servers}
    if settings.security_protocol == "SASL_SSL":
        cfg.update(_scram(settings), ssl_context=ssl_context(settings))
    return cfg


def create_topics(settings: Settings) -> list[str]:
    """Create every declared topic that does not exist yet; return the names created."""
    admin = KafkaAdminClient(client_id=f"{settings.app_id}-admin", **kafka_python_config(settings))
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(t.name, t.partitions, 1, topic_configs=t.config)
            for t in declared_topics(settings)
            if t.name not in existing
        ]
        created: list[str] = []
        for nt in new:
            try:
                admin.create_topics([nt])
                created.append(nt.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()
