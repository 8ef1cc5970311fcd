"""The worker's Kafka edges, as the stages and the checkpoints see them.

`fastpath.py` (the Faust app's producer and consumer) and `changelog.py` (the state topic)
are what the worker gives them; the unit tests give in-memory stand-ins that record what was
sent, written and acked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from engine.changelog import Change


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


class Changelog(Protocol):
    """Where the correlate stage's state is kept: per partition of its input, the entries of
    a per-key changelog (`engine/changelog.py`)."""

    async def open(self, partition: int) -> None:
        """Take the partition: no earlier owner can write its changelog any more."""
        ...

    async def read(self, partition: int) -> dict[str, bytes]:
        """Every entry the partition's changelog holds, each at its newest value."""
        ...

    async def write(self, partition: int, changes: Iterable[Change]) -> int:
        """Apply one batch of changes to the partition's changelog, whole or not at all;
        returns the bytes written."""
        ...

    async def legacy(self, partition: int) -> bytes | None:
        """The partition's newest whole-state snapshot of the releases before the
        changelog (compressed JSON); None if there is none."""
        ...

    async def close(self, partition: int) -> None:
        """Let the partition go."""
        ...


class Partitions(Protocol):
    """The partitions of one input topic assigned to this worker's consumer."""

    def owns(self, partition: int) -> bool:
        """Whether the partition is assigned here now."""
        ...

    def ack(self, record: Record) -> None:
        """The record is done with: its offset may be committed."""
        ...
