"""The worker's Kafka edges, as the stages and the checkpoints see them.

`fastpath.py` (the Faust app's producer and consumer) and `snapshots.py` (the state topic)
are what the worker gives them; the unit tests give in-memory stand-ins that record what was
sent, written and acked.
"""

from __future__ import annotations

from typing import Protocol


class Record(Protocol):
    """One message read from a topic (aiokafka's `ConsumerRecord`, as the fetch path hands
    it over)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> bytes | None: ...


class Producer(Protocol):
    """The worker's one producer."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None
    ) -> None:
        """Schedule one message (`partition` None: the key's, or any); it is on the broker
        once `flush` returns."""
        ...

    async def flush(self) -> None:
        """Wait until every message scheduled so far is on the broker."""
        ...


class SnapshotStore(Protocol):
    """Where the correlate stage's snapshots are kept: one per partition of its input."""

    async def latest(self, partition: int) -> bytes | None:
        """The newest snapshot of the partition; None if it has none."""
        ...

    async def write(self, partition: int, blob: bytes) -> None:
        """Schedule a snapshot of the partition; it is kept once `flush` returns."""
        ...

    async def flush(self) -> None:
        """Wait until every message this worker scheduled so far is on the broker: snapshots,
        and the output of the input they cover (so output is never lost behind a snapshot)."""
        ...


class Partitions(Protocol):
    """The partitions of one input topic assigned to this worker's consumer."""

    def owns(self, partition: int) -> bool:
        """Whether the partition is assigned here now."""
        ...

    def ack(self, record: Record) -> None:
        """The record is done with: its offset may be committed."""
        ...
