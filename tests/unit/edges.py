"""In-memory stand-ins for the worker's Kafka edges (streams/worker/edges.py): each records
what was sent, written or acked, and all of them write to the producer's `journal`, so a
test can assert the order of sends, flushes, snapshots and acks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from engine.changelog import Change, apply
from streams.settings import Settings


@dataclass
class Msg:
    """A record as the fetch path hands it over."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass
class Broker:
    """The producer: what was sent, by topic, as (key, value, partition); `fail` makes every
    send raise (a broker outage)."""

    sent: dict[str, list[tuple[bytes | None, bytes, int | None]]] = field(default_factory=dict)
    journal: list[str] = field(default_factory=list)
    fail: bool = False

    async def send(self, topic: str, key: bytes | None, value: bytes, p: int | None) -> None:
        if self.fail:
            raise ConnectionError("the broker went away")
        self.sent.setdefault(topic, []).append((key, value, p))
        self.journal.append(f"send {topic}")

    async def flush(self) -> None:
        self.journal.append("flush")

    def values(self, topic: str) -> list[bytes]:
        return [value for _, value, _ in self.sent.get(topic, [])]

    def routed(self, settings: Settings) -> list[Msg]:
        """What was sent to `fusion.routed`, as the records the correlate stage would read."""
        out = []
        for offset, (_, value, p) in enumerate(self.sent.get(settings.topic_routed, [])):
            assert p is not None
            out.append(Msg(settings.topic_routed, p, offset, value))
        return out


@dataclass
class ChangelogStore:
    """The changelog topic: each partition's entries (the newest value of each, as compaction
    keeps them); a batch of changes is applied whole (a transaction) or, with the broker
    away, not at all."""

    producer: Broker
    entries: dict[int, dict[str, bytes]] = field(default_factory=dict)
    batches: dict[int, int] = field(default_factory=dict)
    snapshots: dict[int, bytes] = field(default_factory=dict)
    """The whole-state snapshots of the releases before the changelog, by partition."""

    async def open(self, partition: int) -> None:
        self.producer.journal.append(f"open {partition}")

    async def read(self, partition: int) -> dict[str, bytes]:
        self.producer.journal.append(f"read {partition}")
        return dict(self.entries.get(partition, {}))

    async def write(self, partition: int, changes: Iterable[Change]) -> int:
        if self.producer.fail:
            raise ConnectionError("the broker went away")
        self.producer.journal.append(f"write {partition}")
        changes = list(changes)
        apply(self.entries.setdefault(partition, {}), changes)
        self.batches[partition] = self.batches.get(partition, 0) + 1
        return sum(len(n) + len(v or b"") for n, v in changes)

    async def legacy(self, partition: int) -> bytes | None:
        return self.snapshots.get(partition)

    async def close(self, partition: int) -> None:
        self.producer.journal.append(f"close {partition}")


@dataclass
class Assigned:
    """The partitions of an input topic assigned here (`owned`; None: every one), and the
    records acked (in the producer's journal too, when given one)."""

    owned: set[int] | None = None
    acked: list[Msg] = field(default_factory=list)
    journal: list[str] | None = None

    def owns(self, partition: int) -> bool:
        return self.owned is None or partition in self.owned

    def ack(self, record: Msg) -> None:
        self.acked.append(record)
        if self.journal is not None:
            self.journal.append(f"ack {record.partition}@{record.offset}")
