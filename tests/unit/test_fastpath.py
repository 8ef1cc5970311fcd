"""The fetch path's consumer and producer (streams/worker/fastpath.py) without a broker.

A real `BatchingConsumer` (Faust's consumer with the batch path) is made by a `BatchingApp`
that is never started; the consumer thread under it, which would hold aiokafka's view of the
partitions, is an in-memory stand-in (`FetchState`). The hand-over between revocations and
the stages' work is tested in test_handover.py; the drain loop needs a broker
(tests/integration/)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streams.worker.fastpath import AppProducer, AssignedPartitions, BatchingApp, BatchingConsumer
from tests.unit.edges import Msg

T0, T1, ROUTED0 = TP("events.detections", 0), TP("events.detections", 1), TP("fusion.routed", 0)


@dataclass
class FetchState:
    """The consumer thread as the fast path reads it: the partitions assigned, and per
    partition the broker's high-water mark as of the last fetch (absent: not fetched yet)."""

    assigned: set[TP] = field(default_factory=set)
    highwaters: dict[TP, int] = field(default_factory=dict)

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    def highwater(self, tp: TP) -> int:
        return self.highwaters[tp]

    def _ensure_consumer(self) -> Any:
        def state_value(tp: TP) -> Any:
            if tp not in self.assigned:
                return None
            return SimpleNamespace(highwater=self.highwaters.get(tp))

        assignment = SimpleNamespace(state_value=state_value)
        return SimpleNamespace(
            _subscription=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment))
        )


@pytest.fixture
def app() -> Iterator[BatchingApp]:
    app = BatchingApp("unit", broker="kafka://127.0.0.1:1", store="memory://")
    consumer = app.batch_consumer()
    thread = consumer._thread
    consumer._thread = FetchState()
    yield app
    thread.thread_loop.close()
    app.loop.close()


def fetch_state(consumer: BatchingConsumer) -> FetchState:
    state = consumer._thread
    assert isinstance(state, FetchState)
    return state


def test_acked_offsets_become_committable_once(app: BatchingApp) -> None:
    consumer = app.batch_consumer()
    consumer._committed_offset[T0] = 10
    consumer.ack_offsets(T0, [9, 10, 11])
    consumer.ack_offsets(T0, [11, 12])
    assert sorted(consumer._acked[T0]) == [10, 11, 12]  # below the committed offset: done
    assert consumer._n_acked == 3


def test_a_partition_is_caught_up_only_once_the_stages_hold_all_the_broker_has(
    app: BatchingApp,
) -> None:
    consumer = app.batch_consumer()
    state = fetch_state(consumer)
    state.assigned = {T0}
    assert not consumer.caught_up(T0)  # nothing handed to the stages yet
    consumer._handed_positions[T0] = 40
    assert not consumer.caught_up(T0)  # the broker's end is not known yet
    state.highwaters[T0] = 41
    assert not consumer.caught_up(T0)  # one record still on its way
    consumer._handed_positions[T0] = 41
    assert consumer.caught_up(T0)
    consumer.forget_positions({T0})  # revoked: what was handed says nothing any more
    assert not consumer.caught_up(T0)


def test_lag_is_what_the_broker_holds_beyond_what_was_read(app: BatchingApp) -> None:
    consumer = app.batch_consumer()
    state = fetch_state(consumer)
    state.assigned = {T0, T1, ROUTED0}
    state.highwaters = {T0: 100, ROUTED0: 5}  # T1 not fetched yet: left out
    consumer._read_offset[T0] = 89
    assert consumer.lags() == {T0: 10, ROUTED0: 5}
    consumer._read_offset[ROUTED0] = 7  # read past a high-water mark that is behind
    assert consumer.lags()[ROUTED0] == 0


def test_records_read_before_are_dropped_and_gaps_noted(app: BatchingApp) -> None:
    consumer = app.batch_consumer()
    app.topics._acking_topics.add(T0.topic)
    consumer._read_offset[T0] = 3
    records = [Msg(T0.topic, 0, offset, b"") for offset in (2, 3, 4, 7, 8)]
    fresh = asyncio.run(consumer._take_new(T0, records))
    assert [r.offset for r in fresh] == [3, 4, 7, 8]
    assert consumer._read_offset[T0] == 8
    assert asyncio.run(consumer._take_new(T0, records)) == [records[-1]]
    # offsets 5 and 6 are gone (compaction, transaction markers): they are noted as a gap,
    # as Faust's own loop notes them (up to the next record), so that commits pass them
    gap = {offset for i in consumer._gap[T0] for offset in range(i.begin, i.end)}
    assert gap == {5, 6, 7}


def test_the_assigned_partitions_of_one_topic_and_their_acks(app: BatchingApp) -> None:
    consumer = app.batch_consumer()
    fetch_state(consumer).assigned = {T0, ROUTED0}
    routed = AssignedPartitions(app, "fusion.routed")
    assert routed.owns(0) and not routed.owns(1)
    routed.ack(Msg("fusion.routed", 0, 12, b""))
    assert list(consumer._acked[ROUTED0]) == [12]


def test_the_producer_sends_straight_to_aiokafka_and_flushes_through_faust() -> None:
    sent: list[tuple[str, bytes, bytes | None, int | None]] = []
    flushed: list[bool] = []

    class Aiokafka:
        async def send(
            self, topic: str, value: bytes, *, key: bytes | None, partition: int | None
        ) -> object:
            sent.append((topic, value, key, partition))
            return asyncio.get_running_loop().create_future()

    class FaustProducer:
        def _ensure_producer(self) -> Aiokafka:
            return Aiokafka()

        async def flush(self) -> None:
            flushed.append(True)

    producer = AppProducer(SimpleNamespace(producer=FaustProducer()))  # type: ignore[arg-type]

    async def run() -> None:
        await producer.send("alerts.us", b"k", b"v", None)
        await producer.send("fusion.routed", None, b"batch", 3)
        await producer.flush()

    asyncio.run(run())
    assert sent == [("alerts.us", b"v", b"k", None), ("fusion.routed", b"batch", None, 3)]
    assert flushed == [True]


def test_records_dropped_in_a_rebalance_are_read_again_even_where_nothing_was_committed(
    app: BatchingApp,
) -> None:
    """A fetch that ends after a rebalance stopped the flow is not handed to the stages. Faust
    seeks back to the committed offsets, which leaves a partition with none where it is: that
    partition is sought back to its first record not handed. A seek that fails (the
    assignment changing under it) is logged, not raised."""
    consumer = app.batch_consumer()
    sought: list[tuple[TP, int]] = []

    async def perform_seek() -> None:
        consumer._committed_offset[T0] = 40  # T0 has a committed offset; T1 none
        raise RuntimeError("the assignment changed")

    async def seek(tp: TP, offset: int) -> None:
        sought.append((tp, offset))

    consumer.perform_seek = perform_seek  # type: ignore[method-assign]
    consumer.seek = seek  # type: ignore[method-assign]
    asyncio.run(consumer._read_again({T0: 45, T1: 0}))
    assert sought == [(T1, 0)]
