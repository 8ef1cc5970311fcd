"""The changelog topic: the correlate stage's state per partition, one entry per key.

Partition p of `fusion.correlate.changelog` holds the state of partition p of
`fusion.routed` as the entries of `engine/changelog.py` (the entry's name is the message
key). The topic is compacted, so what it keeps is each entry's newest value, and deleted
entries go after `delete.retention.ms`.

Each batch of changes is one Kafka transaction of a producer whose transactional id is the
partition's, so a batch is applied whole or not at all, and a worker that takes a partition
over fences the one it was taken from (its open transaction is aborted, and whatever it tries
to write afterwards is refused) before reading the partition back, with `read_committed`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from engine.changelog import Change
from streams.clients import aiokafka_config
from streams.settings import Settings

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 60.0


class ChangelogTopic:
    """Writes each partition's changes in transactions, and reads a partition back."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topic_changelog
        self._writers: dict[int, AIOKafkaProducer] = {}
        self._lock = asyncio.Lock()

    def transactional_id(self, partition: int) -> str:
        return f"{self.settings.app_id}-changelog-{partition}"

    async def open(self, partition: int) -> None:
        """Take the partition's writer: from now on no earlier owner can write to it."""
        await self.close(partition)
        writer = AIOKafkaProducer(
            transactional_id=self.transactional_id(partition),
            enable_idempotence=True,
            acks="all",
            linger_ms=0,
            max_batch_size=1024 * 1024,
            max_request_size=16 * 1024 * 1024,
            **aiokafka_config(self.settings),
        )
        await writer.start()  # initialises its transactions: fences the earlier owner
        self._writers[partition] = writer

    async def write(self, partition: int, changes: Iterable[Change]) -> int:
        """Apply one batch of changes, whole; returns the bytes written."""
        writer = self._writers.get(partition)
        if writer is None:
            raise RuntimeError(f"the changelog of partition {partition} is not open here")
        size = 0
        topic = self.topic
        async with writer.transaction():
            for name, value in changes:
                size += len(name) + (len(value) if value is not None else 0)
                await writer.send(topic, value, key=name.encode(), partition=partition)
        return size

    async def read(self, partition: int) -> dict[str, bytes]:
        """Every entry the partition holds (committed batches only), newest value each."""
        async with self._lock:
            consumer = await self._reader("read_committed")
            try:
                return await _read_all(consumer, TopicPartition(self.topic, partition))
            finally:
                await consumer.stop()

    async def legacy(self, partition: int) -> bytes | None:
        """The newest whole-state snapshot of the partition on the topic of the releases
        before the changelog; None if that topic or partition holds none."""
        topic = self.settings.topic_state_legacy
        async with self._lock:
            consumer = await self._reader("read_uncommitted")
            try:
                if topic not in await consumer.topics():
                    return None
                return await _last(consumer, TopicPartition(topic, partition))
            finally:
                await consumer.stop()

    async def _reader(self, isolation_level: str) -> AIOKafkaConsumer:
        """A consumer of its own (no group, no commits), started."""
        consumer = AIOKafkaConsumer(
            enable_auto_commit=False,
            group_id=None,
            isolation_level=isolation_level,
            max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            **aiokafka_config(self.settings),
        )
        await consumer.start()
        return consumer

    async def close(self, partition: int) -> None:
        writer = self._writers.pop(partition, None)
        if writer is not None:
            try:
                await writer.stop()
            except Exception:
                log.warning("closing the changelog writer of %d failed", partition, exc_info=True)

    async def close_all(self) -> None:
        for partition in list(self._writers):
            await self.close(partition)


async def _read_all(consumer: AIOKafkaConsumer, tp: TopicPartition) -> dict[str, bytes]:
    """Up to the high watermark, not the last stable offset: a transaction committed just
    before (by the worker that had the partition, or by this one before a rebalance) may
    not have its commit marker written yet, and would be missed. Its writer was fenced, so
    whatever is open there is being completed or aborted: the stable offset catches up."""
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    entries: dict[str, bytes] = {}
    deadline = time.monotonic() + READ_TIMEOUT_S
    end: int | None = None
    while end is None or await consumer.position(tp) < end:
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not read {tp.topic}[{tp.partition}] up to offset {end}")
        batch = await consumer.getmany(tp, timeout_ms=200)
        if end is None:
            end = consumer.highwater(tp)  # known once a fetch has answered
            if end is None and time.monotonic() > deadline - READ_TIMEOUT_S + 5:
                end = (await consumer.end_offsets([tp]))[tp]
        for m in batch.get(tp, []):
            if m.key is None:
                continue
            name = m.key.decode()
            if m.value is None:
                entries.pop(name, None)
            else:
                entries[name] = m.value
    return entries


async def _last(consumer: AIOKafkaConsumer, tp: TopicPartition) -> bytes | None:
    if tp.partition not in (consumer.partitions_for_topic(tp.topic) or set()):
        return None
    consumer.assign([tp])
    end = (await consumer.end_offsets([tp]))[tp]
    begin = (await consumer.beginning_offsets([tp]))[tp]
    if end <= begin:
        return None
    consumer.seek(tp, end - 1)
    deadline = time.monotonic() + READ_TIMEOUT_S
    while time.monotonic() < deadline:
        batch = await consumer.getmany(tp, timeout_ms=1000)
        for m in batch.get(tp, []):
            if m.offset == end - 1:
                value: bytes | None = m.value
                return value
    raise TimeoutError(f"could not read the snapshot at {tp.topic}[{tp.partition}]@{end - 1}")
