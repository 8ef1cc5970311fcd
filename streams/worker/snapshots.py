"""Per-partition state snapshots in compacted topics: partition p of a stage's state lives in
partition p of its state topic, so the newest snapshot is the last message there."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.clients import aiokafka_config
from streams.settings import Settings

log = logging.getLogger(__name__)


class SnapshotReader:
    """Reads the newest snapshot of a partition (no consumer group, no commits)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def _client(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            c = AIOKafkaConsumer(
                enable_auto_commit=False,
                group_id=None,
                max_partition_fetch_bytes=16 * 1024 * 1024,
                fetch_max_bytes=32 * 1024 * 1024,
                **aiokafka_config(self.settings),
            )
            await c.start()
            self._consumer = c
        return self._consumer

    async def latest(self, topic: str, partition: int) -> bytes | None:
        """The value of the last message in the partition, or None if it is empty."""
        async with self._lock:  # one assignment at a time on the shared client
            return await self._latest(topic, partition)

    async def _latest(self, topic: str, partition: int) -> bytes | None:
        c = await self._client()
        tp = TopicPartition(topic, partition)
        c.assign([tp])
        end = (await c.end_offsets([tp]))[tp]
        begin = (await c.beginning_offsets([tp]))[tp]
        if end <= begin:
            return None
        c.seek(tp, end - 1)
        while True:
            batch = await c.getmany(tp, timeout_ms=5000)
            msgs = batch.get(tp, [])
            if not msgs:
                raise TimeoutError(f"could not read the snapshot at {topic}[{partition}]@{end - 1}")
            for m in msgs:
                if m.offset == end - 1:
                    value: bytes | None = m.value
                    return value

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
