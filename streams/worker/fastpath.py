"""A Faust transport whose consumer hands each whole fetch of the pipeline's topics to one
handler, instead of routing each message through Faust's fetcher tasks, conductor, channel
queue and stream (the per-message machinery that caps a stock agent at a few thousand
events per second here).

Everything else stays Faust's: group membership and rebalancing, offsets and commits (the
handler acks each message through the consumer once its output is sent), flow control,
the producer. Topics not in `batch_topics` take the normal per-message path.

Every use of Faust's private parts is in this module, so that an upgrade of faust-streaming
is checked here: the drain loop, read offsets and gaps, acks, the aiokafka client under
the consumer thread, and the aiokafka producer under Faust's (`AppProducer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams.worker.edges import Record

Batch = dict[TP, list[Record]]
"""One fetch of the batch topics: per partition, aiokafka's records in offset order, none
read before."""
BatchHandler = Callable[[Batch], Awaitable[None]]


class HandOver:
    """Keeps the stages' work and a revocation apart.

    A revocation waits for the batch being handled to finish, and no batch is handled while
    it runs. A batch fetched before a revocation began is dropped rather than handled after
    it: its records are read again from the committed offsets by whichever worker is then
    assigned them. Otherwise the stages would go on with a revoked partition's records
    after its state was handed over and load that partition again (aiokafka reports the
    old assignment until the new one arrives): the worker would keep a stale copy of the
    partition's state and use it, not the newest snapshot, when the partition came back.
    """

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._revocations = 0

    def epoch(self) -> int:
        """Taken when a fetch is accepted: which revocations it came after."""
        return self._revocations

    @asynccontextmanager
    async def handling(self, epoch: int) -> AsyncIterator[bool]:
        """Hold off revocations while inside; yields whether a fetch taken at `epoch` may
        still be handled (no revocation has begun since)."""
        async with self._lock:
            yield self._revocations == epoch

    @asynccontextmanager
    async def revoking(self) -> AsyncIterator[None]:
        """A revocation: waits for the batch in hand, and keeps every other out while inside."""
        self._revocations += 1
        async with self._lock:
            yield


class BatchingConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    """Faust's consumer thread, whose aiokafka consumer waits for a little data per fetch
    (`fetch_min_bytes`, at most `fetch_max_wait_ms`) rather than answering every record
    alone: at low rates, many one-record fetches cost more than the records."""

    fetched_positions: dict[Any, int]
    """Per assigned partition, aiokafka's position right after the last fetch handed out
    records: what the main loop has been given once it has taken that fetch's records."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        client = super()._create_worker_consumer(transport)
        client._fetch_min_bytes = self.consumer.fetch_min_bytes
        client._fetch_max_wait_ms = self.consumer.fetch_max_wait_ms
        self.fetched_positions = {}
        return client

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: Any,
        timeout: float | None = None,  # noqa: ASYNC109 (Faust's signature)
        max_records: int | None = None,
    ) -> Any:
        records = await super()._fetch_records(consumer, active_partitions, timeout, max_records)
        # In this thread, before the records travel to the main loop: positions only move
        # here, so these are the positions once exactly these records have been handed on.
        assignment = consumer._subscription.subscription.assignment
        positions = {}
        for tp in assignment.tps:
            state = assignment.state_value(tp)
            if state is not None and state.has_valid_position:
                positions[tp] = state.position
        self.fetched_positions = positions
        return records


class BatchingConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    """Faust's aiokafka consumer with a batch path for the topics in `batch_topics`: their
    records go to `batch_handler` per fetch as aiokafka returned them, without a Faust
    message object, an async iteration or an ack per record."""

    batch_topics: frozenset[str]
    batch_handler: BatchHandler | None
    fetch_min_bytes: int = 1
    fetch_max_wait_ms: int = 1500

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_topics = frozenset()
        self.batch_handler = None
        self.hand_over = HandOver()
        self._handed_positions: dict[Any, int] = {}

    def _new_consumer_thread(self) -> BatchingConsumerThread:
        return BatchingConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def ack_offsets(self, tp: Any, offsets: list[int]) -> None:
        """`ack` for records handed over by the batch path (Faust's bookkeeping, per
        partition at once): their offsets become committable."""
        done = self._committed_offset[tp]
        if done is not None:
            offsets = [o for o in offsets if o >= done]
        seen = self._acked_index[tp]
        fresh = [o for o in offsets if o not in seen]
        self._acked[tp].extend(fresh)
        seen.update(fresh)
        self._n_acked += len(fresh)

    def caught_up(self, tp: Any) -> bool:
        """Whether everything on the broker for `tp` has been handed to the stages (as of
        the last fetch response); False while that is not known.

        Not aiokafka's position: it moves when the consumer thread takes a fetch, before
        the records reach the main loop, and a timer running in between would call the
        partition caught up with a batch still on its way (that batch was then late)."""
        handed = self._handed_positions.get(tp)
        if handed is None:
            return False
        try:
            client = self._thread._ensure_consumer()
            state = client._subscription.subscription.assignment.state_value(tp)
        except Exception:
            return False
        if state is None or state.highwater is None:
            return False
        return bool(handed >= state.highwater)

    def lags(self) -> dict[TP, int]:
        """Per assigned partition, the messages on the broker not read yet (as of the last
        fetch response); a partition not fetched yet is left out."""
        try:
            assigned = self.assignment()
        except Exception:
            return {}
        out: dict[TP, int] = {}
        for tp in assigned:
            try:
                high = self.highwater(tp)
            except Exception:  # noqa: S112 - no fetch for that partition yet
                continue
            read = self._read_offset.get(tp)
            lag = high - (read + 1 if read is not None else 0) if high is not None else 0
            out[tp] = max(0, lag)
        return out

    def forget_positions(self, tps: Any) -> None:
        """Revoked partitions: what was handed of them no longer says anything."""
        for tp in tps:
            self._handed_positions.pop(tp, None)

    async def _take_new(self, tp: Any, records: list[Any]) -> list[Any]:
        """The records not read before, noting gaps (compaction, transaction markers) as
        Faust does so that commits can pass them; advances the read offset."""
        read = self._read_offset[tp]
        if read is not None:
            records = [r for r in records if r.offset >= read]
        if not records:
            return records
        if read and self.app.topics.acks_enabled_for(tp.topic):
            prev = read
            for r in records:
                if r.offset - prev > 1:
                    await self._add_gap(tp, prev + 1, r.offset)
                prev = r.offset
        self._read_offset[tp] = records[-1].offset
        return records

    async def _read_again(self, first: dict[Any, int]) -> None:
        """Records fetched but not handed to the stages, because a rebalance stopped the flow
        meanwhile: seek back to the committed offsets, as Faust does, and each partition with
        no committed offset to its first record not handed (Faust's seek leaves such a
        partition where it is, and those records would never be read)."""
        try:
            await self.perform_seek()
        except Exception as e:  # the assignment can change under it, as in Faust's getmany
            self.log.warning("seeking back to the committed offsets failed: %r", e)
        for tp, offset in first.items():
            if self._committed_offset.get(tp) is not None:
                continue
            try:
                await self.seek(tp, offset)
            except Exception as e:  # no longer assigned here: its next owner reads it
                self.log.warning("seeking %s back to offset %d failed: %r", tp, offset, e)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - via worker
        # Faust's loop (faust/transport/consumer.py: Consumer._drain_messages and getmany),
        # with the batch path; keep them in step when upgrading faust-streaming.
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        batch_topics = self.batch_topics
        handler = self.batch_handler
        app = self.app
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                records, active = await self._wait_next_records(1.0)
                # Nothing awaited since the fetch returned: these are its positions (and none,
                # the next time round, if no fetch was made: the thread fetches on request).
                fetched = getattr(self._thread, "fetched_positions", {})
                self._thread.fetched_positions = {}
                await self.sleep(0)
                if records is None or self.should_stop:
                    unset_flag(CONSUMER_FETCHING)
                    continue
                if not self.flow_active:
                    first = {tp: recs[0].offset for tp, recs in records.items() if recs}
                    await self._read_again(first)
                    unset_flag(CONSUMER_FETCHING)
                    continue
                epoch = self.hand_over.epoch()
                generation = app.consumer_generation_id
                batch: Batch = {}
                for tp, recs in records.items():
                    if not (active is None or tp in active or tp in self._buffered_partitions):
                        continue
                    if tp.topic in batch_topics:
                        fresh = await self._take_new(tp, recs)
                        if fresh:
                            batch[tp] = fresh
                        continue
                    for rec in await self._take_new(tp, recs):
                        if app.consumer_generation_id != generation:
                            break
                        if commit_every is not None and self._n_acked >= commit_every:  # type: ignore[has-type]
                            self._n_acked = 0
                            await self.commit()
                        message = self._to_message(tp, rec)
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                        set_read_offset(tp, rec.offset)
                async with self.hand_over.handling(epoch) as current:
                    current = current and app.consumer_generation_id == generation
                    if current and batch and handler is not None:
                        await handler(batch)
                    if current:
                        skipped = {tp for tp in records if not (active is None or tp in active)}
                        for tp, position in fetched.items():
                            if tp not in skipped:
                                self._handed_positions[tp] = position
                unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)  # noqa: TRY401
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


class BatchingTransport(faust_aiokafka.Transport):  # type: ignore[misc]
    Consumer = BatchingConsumer


class BatchingApp(faust.App):  # type: ignore[misc]
    """A Faust app whose consumer has the batch path."""

    def _new_transport(self) -> Any:
        return BatchingTransport(self.conf.broker_consumer, self)

    def batch_consumer(self) -> BatchingConsumer:
        return cast(BatchingConsumer, self.consumer)


class AppProducer:
    """The app's aiokafka producer, as the stages, delivery and the state topic send.

    A message goes straight to aiokafka (Faust's own send wrapper adds only monitoring per
    message); Faust flushes the producer before committing offsets, and checkpoints flush it
    before snapshotting."""

    def __init__(self, app: faust.App) -> None:
        self.app = app

    async def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None
    ) -> None:
        producer = self.app.producer._ensure_producer()
        await producer.send(topic, value, key=key, partition=partition)

    async def flush(self) -> None:
        await self.app.producer.flush()


class AssignedPartitions:
    """The partitions of one batch topic assigned to the app's consumer, and their acks."""

    def __init__(self, app: BatchingApp, topic: str) -> None:
        self.app = app
        self.topic = topic

    def owns(self, partition: int) -> bool:
        return TP(self.topic, partition) in self.app.consumer.assignment()

    def ack(self, record: Record) -> None:
        consumer = self.app.batch_consumer()
        consumer.ack_offsets(TP(record.topic, record.partition), [record.offset])
