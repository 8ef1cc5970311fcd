"""The transparency log's Kafka edge: leaf hashes published to `audit.log.leaves` (partition p
for the log of correlate partition p), signed checkpoints to `audit.log.checkpoints`, the
tail of a log read back when its partition is loaded, and the log topics' retention checked.

The log itself (`engine/auditlog.py`) lives in the partition's checkpoint; `checkpoint.py`
publishes its leaves before the snapshot that holds them, and signs only published leaves.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.auditlog import PartitionLog, log_origin
from engine.errors import FusionError
from engine.notes import ED25519, Checkpoint, NoteError, Signer, sign_checkpoint
from engine.policy import Policy
from engine.rules import RuleSet
from streams.clients import aiokafka_config
from streams.settings import Settings
from streams.topics import KEPT
from streams.worker.edges import Producer

log = logging.getLogger("fusion.auditlog")


class LogConfigError(FusionError):
    """The log's signing key or topics are not as the log needs them."""


def load_signer(path: Path) -> Signer:
    """The log's signing key from its file (outside the repository)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise LogConfigError(f"{path}: cannot read the log signing key: {e.strerror}") from e
    try:
        signer = Signer.parse(text)
    except NoteError as e:
        raise LogConfigError(f"{path}: {e}") from e
    if signer.kind != ED25519:
        raise LogConfigError(f"{path}: a witness key, not a log signing key")
    return signer


def topic_problems(settings: Settings, configs: dict[str, dict[str, str]]) -> list[str]:
    """What is wrong with the log topics' configuration (`configs`: per topic, as described
    by the broker)."""
    problems: list[str] = []
    for topic in log_topics(settings):
        have = configs.get(topic)
        if have is None:
            problems.append(f"topic {topic} does not exist")
            continue
        for key, want in KEPT.items():
            if have.get(key) != want:
                problems.append(f"topic {topic}: {key} is {have.get(key)!r}, must be {want!r}")
    return problems


def log_topics(settings: Settings) -> list[str]:
    return [
        settings.topic_log_leaves,
        settings.topic_log_checkpoints,
        settings.topic_log_cosignatures,
        settings.topic_archive,
    ]


def describe_log_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """The broker's configuration of the log topics (kafka-python admin; blocking)."""
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    from streams.clients import kafka_python_config

    admin = KafkaAdminClient(
        client_id=f"{settings.app_id}-logcheck", **kafka_python_config(settings)
    )
    try:
        existing = set(admin.list_topics())
        wanted = [t for t in log_topics(settings) if t in existing]
        out: dict[str, dict[str, str]] = {}
        if not wanted:
            return out
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in wanted], config_filter="all"
        )
        for name, configs in described.get("topic", {}).items():
            out[name] = {str(k): str(v.get("value")) for k, v in configs.items()}
        return out
    finally:
        admin.close()


def check_log_topics(settings: Settings) -> None:
    """Raise LogConfigError if a log topic is missing, or could delete or compact leaves."""
    problems = topic_problems(settings, describe_log_topics(settings))
    if problems:
        raise LogConfigError(
            "the transparency log's topics would not keep it: " + "; ".join(problems)
        )


class Archive:
    """Every sharing policy and rule file the worker loads, kept by hash on `audit.archive`
    (each once per process; repeats across restarts are harmless), so an evidence package
    can include the files an alert was raised and released under."""

    def __init__(self, settings: Settings, producer: Producer) -> None:
        self.settings = settings
        self.producer = producer
        self.kept: set[str] = set()

    async def keep(self, rules: RuleSet, policy: Policy) -> None:
        files = [("rules", path, raw) for path, raw in rules.contents.items()]
        if policy.ref.sha256 not in self.kept:
            try:
                policy_raw = await asyncio.to_thread(Path(policy.file).read_bytes)
            except OSError:
                policy_raw = b""
            # kept only as loaded: a file edited since waits for its reload
            if hashlib.sha256(policy_raw).hexdigest() == policy.ref.sha256:
                files.append(("policy", policy.file, policy_raw))
        for kind, path, raw in files:
            digest = hashlib.sha256(raw).hexdigest()
            if digest in self.kept:
                continue
            doc = {
                "kind": kind,
                "name": Path(path).name,
                "sha256": digest,
                "content": raw.decode("utf-8"),
            }
            await self.producer.send(
                self.settings.topic_archive, digest.encode(), orjson.dumps(doc), None
            )
            self.kept.add(digest)


class AuditLogs:
    """Publishes each partition's leaves and checkpoints; reads a log's tail back."""

    def __init__(self, settings: Settings, producer: Producer, signer: Signer) -> None:
        self.settings = settings
        self.producer = producer
        self.signer = signer
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    def origin(self, partition: int) -> str:
        return log_origin(self.settings.log_origin, partition)

    async def load(self, partition: int, doc: dict[str, Any] | None) -> PartitionLog:
        """The partition's log from its snapshot's `doc`, with every leaf published since."""
        origin = self.origin(partition)
        since = int(doc.get("size", 0)) if doc is not None else 0
        tail = await self.tail(partition, since)
        restored = PartitionLog.restore(origin, doc, tail)
        if restored.tree.size != since:
            log.info(
                "log %s: %d leaves published after its snapshot adopted (size %d)",
                origin,
                restored.tree.size - since,
                restored.tree.size,
            )
        return restored

    async def publish(self, partition: int, entries: list[dict[str, Any]]) -> None:
        topic = self.settings.topic_log_leaves
        for entry in entries:
            key = f"{entry['log']}:{entry['index']}".encode()
            await self.producer.send(topic, key, orjson.dumps(entry), partition)

    async def sign(self, partition_log: PartitionLog) -> None:
        """Sign and send a checkpoint of the leaves published so far (flushed by the
        caller)."""
        published = partition_log.published
        checkpoint = Checkpoint(partition_log.origin, published.size, published.root())
        note = sign_checkpoint(checkpoint, self.signer)
        await self.producer.send(
            self.settings.topic_log_checkpoints,
            partition_log.origin.encode(),
            note.render().encode(),
            None,
        )
        partition_log.signed_size = published.size
        partition_log.signed_at = time.monotonic()

    def sign_due(self, partition_log: PartitionLog, force: bool = False) -> bool:
        """Whether a checkpoint is due: leaves published unsigned, and enough of them or long
        enough since the last."""
        unsigned = partition_log.published.size - max(partition_log.signed_size, 0)
        if partition_log.published.size == partition_log.signed_size:
            return False
        if force or unsigned >= self.settings.log_checkpoint_records:
            return True
        return time.monotonic() - partition_log.signed_at >= self.settings.log_checkpoint_s

    async def tail(self, partition: int, since: int) -> list[dict[str, Any]]:
        """The leaf entries of the partition with index `since` or more, in order, read from
        its end backwards in steps until an entry before `since` (or the start) is reached."""
        async with self._lock:
            c = await self._client()
            tp = TopicPartition(self.settings.topic_log_leaves, partition)
            c.assign([tp])
            end = (await c.end_offsets([tp]))[tp]
            begin = (await c.beginning_offsets([tp]))[tp]
            step = 256
            stop = end
            entries: list[dict[str, Any]] = []
            while stop > begin:
                start = max(begin, stop - step)
                chunk = await self._read(c, tp, start, stop)
                entries = chunk + entries
                stop = start
                if chunk and int(chunk[0]["index"]) < since:
                    break
                step *= 4
            return [e for e in entries if int(e["index"]) >= since]

    async def _read(
        self, c: AIOKafkaConsumer, tp: TopicPartition, start: int, stop: int
    ) -> list[dict[str, Any]]:
        c.seek(tp, start)
        out: list[dict[str, Any]] = []
        position = start
        while position < stop:
            batch = await c.getmany(tp, timeout_ms=5000)
            msgs = batch.get(tp, [])
            if not msgs:
                raise TimeoutError(f"could not read {tp.topic}[{tp.partition}]@{position}")
            for m in msgs:
                if m.offset >= stop:
                    break
                out.append(orjson.loads(m.value))
                position = m.offset + 1
        return out

    async def _client(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            c = AIOKafkaConsumer(
                enable_auto_commit=False,
                group_id=None,
                **aiokafka_config(self.settings),
            )
            await c.start()
            self._consumer = c
        return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
