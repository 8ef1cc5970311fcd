"""A Faust transport whose consumer hands each whole fetch of the pipeline's topics to one
handler, instead of routing each message through Faust's fetcher tasks, conductor, channel
queue and stream (the per-message machinery that caps a stock agent at a few thousand
events per second here).

Everything else stays Faust's: group membership and rebalancing, offsets and commits (the
handler acks each message through the consumer once its output is sent), flow control,
the producer. Topics not in `batch_topics` take the normal per-message path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka

BatchHandler = Callable[[dict[str, list[Any]]], Awaitable[None]]
"""Takes one fetch: messages by topic, each partition's in offset order."""


class BatchingConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    """Faust's aiokafka consumer with a batch path for the topics in `batch_topics`."""

    batch_topics: frozenset[str]
    batch_handler: BatchHandler | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_topics = frozenset()
        self.batch_handler = None

    def ack_batch(self, messages: list[Any]) -> None:
        """`ack` for a whole handed-over batch (each partition's messages in offset order):
        the same bookkeeping, per partition at once rather than per message."""
        per_tp: dict[Any, list[int]] = {}
        for m in messages:
            if not m.acked:
                m.acked = True
                per_tp.setdefault(m.tp, []).append(m.offset)
        acked, index, committed = self._acked, self._acked_index, self._committed_offset
        for tp, offsets in per_tp.items():
            done = committed[tp]
            if done is not None:
                offsets = [o for o in offsets if o >= done]
            seen = index[tp]
            fresh = [o for o in offsets if o not in seen]
            acked[tp].extend(fresh)
            seen.update(fresh)
            self._n_acked += len(fresh)

    def caught_up(self, tp: Any) -> bool:
        """Whether everything on the broker for `tp` has been handed over (as of the last
        fetch response); False while that is not known."""
        try:
            client = self._thread._ensure_consumer()
            state = client._subscription.subscription.assignment.state_value(tp)
        except Exception:
            return False
        if state is None or not state.has_valid_position or state.highwater is None:
            return False
        return bool(state.position >= state.highwater)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - via worker
        # Faust's loop (faust/transport/consumer.py, Consumer._drain_messages), with the
        # batch path added; keep the two in step when upgrading faust-streaming.
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        batch_topics = self.batch_topics
        handler = self.batch_handler
        sleep = asyncio.sleep
        yield_every = 100
        num_since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                batches: dict[str, list[Any]] = {}
                if not self.should_stop:
                    async for tp, message in ait:
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is not None and offset < r_offset:
                            continue
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if message.topic in batch_topics:
                            batches.setdefault(message.topic, []).append(message)
                            set_read_offset(tp, offset)
                            continue
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        if commit_every is not None and self._n_acked >= commit_every:  # type: ignore[has-type]
                            self._n_acked = 0
                            await self.commit()
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                        set_read_offset(tp, offset)
                    if batches and handler is not None:
                        await handler(batches)
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
