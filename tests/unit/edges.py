"""In-memory stand-ins for the worker's Kafka edges (streams/worker/edges.py): each records
what was sent, written or acked, and all of them write to the producer's `journal`, so a
test can assert the order of sends, flushes, snapshots and acks."""

from __future__ import annotations

from dataclasses import dataclass, field

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
class StateStore:
    """The state topic: snapshots written per partition through the producer, the newest
    read back. A snapshot is kept only once flushed, as on the broker."""

    producer: Broker
    written: dict[int, list[bytes]] = field(default_factory=dict)
    _unflushed: list[tuple[int, bytes]] = field(default_factory=list)

    async def latest(self, partition: int) -> bytes | None:
        self.producer.journal.append(f"read {partition}")
        return self.written.get(partition, [None])[-1]

    async def write(self, partition: int, blob: bytes) -> None:
        if self.producer.fail:
            raise ConnectionError("the broker went away")
        self.producer.journal.append(f"write {partition}")
        self._unflushed.append((partition, blob))

    async def flush(self) -> None:
        await self.producer.flush()
        for partition, blob in self._unflushed:
            self.written.setdefault(partition, []).append(blob)
        self._unflushed.clear()


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
