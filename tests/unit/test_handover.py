"""Hand-over of partitions, without a broker: a revocation and the stages' work never
interleave, and a worker keeps no state for a partition it has handed over.

The failure these guard against (issue 17): a worker revoked while it was loading a
partition's snapshot kept that partition's state after the rebalance gave the partition to
another worker. When the partition came back to it, it carried on from that stale copy
instead of the other worker's newest snapshot, and alerts whose first evidence the other
worker had taken were never raised."""

from __future__ import annotations

import asyncio

from engine.correlate import CorrelateStage
from engine.watermarks import InputPartition
from streams.worker.checkpoint import Checkpoints
from streams.worker.fastpath import HandOver
from streams.worker.metrics import Metrics
from tests.unit.edges import Assigned, Broker, ChangelogStore
from tests.unit.test_stages import RULES, unit_settings


class SlowStore(ChangelogStore):
    """A changelog topic whose reads wait for `read` to be set."""

    def __init__(self, read: asyncio.Event) -> None:
        super().__init__(Broker())
        self.read_may = read

    async def read(self, partition: int) -> dict[str, bytes]:
        await self.read_may.wait()
        return await super().read(partition)


def checkpoints(assigned: Assigned, store: ChangelogStore | None = None) -> Checkpoints:
    store = store or ChangelogStore(Broker())
    return Checkpoints(
        unit_settings(),
        Metrics(),
        store,
        store.producer,
        assigned,
        lambda: CorrelateStage(RULES, [InputPartition("events.detections", 0)]),
    )


def test_a_partition_revoked_while_its_changelog_is_read_is_not_kept() -> None:
    assigned = Assigned({0, 1})
    read = asyncio.Event()
    partitions = checkpoints(assigned, SlowStore(read))

    async def run() -> object:
        loading = asyncio.ensure_future(partitions.partition(0))
        await asyncio.sleep(0)  # the load is waiting for the changelog
        assigned.owned = {1}  # the rebalance gives partition 0 to another worker
        await partitions.revoke({0, 1})
        read.set()
        return await loading

    assert asyncio.run(run()) is None
    assert 0 not in partitions.partitions


def test_a_revoked_partition_is_forgotten_even_when_its_changes_cannot_be_written() -> None:
    broker = Broker()
    partitions = checkpoints(Assigned({0, 1}), ChangelogStore(broker))

    async def run() -> None:
        for p in (0, 1):
            checkpoint = await partitions.partition(p)
            assert checkpoint is not None
            checkpoint.dirty = True
        broker.fail = True  # the broker went away
        await partitions.revoke({0, 1})

    asyncio.run(run())
    assert partitions.partitions == {}


def test_a_revocation_waits_for_the_batch_in_hand() -> None:
    hand_over = HandOver()
    order: list[str] = []
    batch_may_end = asyncio.Event()

    async def batch() -> None:
        async with hand_over.handling(hand_over.epoch()) as current:
            assert current
            order.append("batch begins")
            await batch_may_end.wait()
            order.append("batch ends")

    async def revocation() -> None:
        async with hand_over.revoking():
            order.append("revocation")

    async def run() -> None:
        handling = asyncio.ensure_future(batch())
        await asyncio.sleep(0)
        revoking = asyncio.ensure_future(revocation())
        await asyncio.sleep(0)
        assert order == ["batch begins"]
        batch_may_end.set()
        await asyncio.gather(handling, revoking)

    asyncio.run(run())
    assert order == ["batch begins", "batch ends", "revocation"]


def test_a_fetch_taken_before_a_revocation_is_not_handled_after_it() -> None:
    hand_over = HandOver()

    async def run() -> tuple[bool, bool]:
        before = hand_over.epoch()
        async with hand_over.revoking():
            pass
        async with hand_over.handling(before) as stale:
            pass
        async with hand_over.handling(hand_over.epoch()) as fresh:
            pass
        return stale, fresh

    assert asyncio.run(run()) == (False, True)


def test_a_fetch_waiting_while_a_revocation_runs_is_dropped() -> None:
    hand_over = HandOver()
    revocation_may_end = asyncio.Event()
    seen: list[bool] = []

    async def revocation() -> None:
        async with hand_over.revoking():
            await revocation_may_end.wait()

    async def batch(epoch: int) -> None:
        async with hand_over.handling(epoch) as current:
            seen.append(current)

    async def run() -> None:
        epoch = hand_over.epoch()  # the fetch is accepted ...
        revoking = asyncio.ensure_future(revocation())
        await asyncio.sleep(0)  # ... then a revocation begins before it is handled
        handling = asyncio.ensure_future(batch(epoch))
        await asyncio.sleep(0)
        assert seen == []
        revocation_may_end.set()
        await asyncio.gather(revoking, handling)

    asyncio.run(run())
    assert seen == [False]
