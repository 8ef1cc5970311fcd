"""The state topic: the correlate stage's snapshots, compacted. Partition p of
`fusion.state.engine` holds the snapshots of partition p of `fusion.routed`, keyed
`engine:<p>`, so the newest is the last message there."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.clients import aiokafka_config
from streams.settings import Settings
from streams.worker.edges import Producer

log = logging.getLogger(__name__)


class StateTopic:
    """Snapshots written through the worker's producer, and the newest of a partition read
    back with a consumer of its own (no consumer group, no commits)."""

    def __init__(self, settings: Settings, producer: Producer) -> None:
        self.settings = settings
        self.topic = settings.topic_state_engine
        self.producer = producer
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def write(self, partition: int, blob: bytes) -> None:
        await self.producer.send(self.topic, f"engine:{partition}".encode(), blob, partition)

    async def flush(self) -> None:
        await self.producer.flush()

    async def latest(self, partition: int) -> bytes | None:
        """The value of the last message in the partition, or None if it is empty."""
        async with self._lock:  # one assignment at a time on the shared client
            return await self._latest(partition)

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

    async def _latest(self, partition: int) -> bytes | None:
        c = await self._client()
        tp = TopicPartition(self.topic, partition)
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
                raise TimeoutError(
                    f"could not read the snapshot at {self.topic}[{partition}]@{end - 1}"
                )
            for m in msgs:
                if m.offset == end - 1:
                    value: bytes | None = m.value
                    return value

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
