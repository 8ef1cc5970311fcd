from __future__ import annotations

import math

import pytest

from engine.watermarks import (
    CombinedWatermark,
    InputPartition,
    Mark,
    ReorderBuffer,
    SourceWatermarks,
)

A, B, C = (InputPartition(topic, 0) for topic in "abc")
T0, T1 = InputPartition("t", 0), InputPartition("t", 1)
WATCHLIST = InputPartition("watchlist", 0)


def test_a_source_mark_is_its_newest_event_time_less_the_allowed_disorder():
    clocks = SourceWatermarks(out_of_orderness=2.0, idle_after=1.0, clock_lag=math.inf)
    clocks.observe(T0, 100.0, now=0.0)
    clocks.observe(T0, 90.0, now=0.1)  # out of order: the newest stays
    assert clocks.marks(now=0.2) == {T0: Mark(98.0, False)}


def test_a_source_is_idle_only_once_caught_up_and_quiet():
    clocks = SourceWatermarks(0.0, idle_after=1.0, clock_lag=math.inf)
    clocks.observe(T0, 100.0, now=0.0)
    clocks.clock(T1, now=0.0)
    assert clocks.update_idleness({T0: False, T1: True}, now=5.0) == [T1]
    assert clocks.marks(5.0)[T1] == Mark(-math.inf, True)
    # a backlog (not caught up) is never idle, however long since its last event
    assert not clocks.clocks[T0].idle
    assert clocks.update_idleness({T0: True, T1: True}, now=5.5) == [T0]
    assert clocks.marks(5.5)[T0] == Mark(100.0, True)
    clocks.observe(T0, 101.0, now=6.0)  # rejoins with its next event
    assert clocks.marks(6.0)[T0] == Mark(101.0, False)


def test_an_idle_source_may_follow_the_wall_clock_when_asked():
    clocks = SourceWatermarks(0.0, idle_after=1.0, clock_lag=60.0)
    clocks.clock(T0, now=0.0)
    clocks.update_idleness({T0: True}, now=1000.0)
    assert clocks.marks(1000.0)[T0] == Mark(940.0, True)


def test_combined_watermark_is_the_minimum_over_active_sources():
    w = CombinedWatermark([A, B, C])
    w.update(A, Mark(100.0, False))
    w.update(B, Mark(50.0, False))
    assert w.value() == (-math.inf, -math.inf)  # c not heard from: it may hold anything
    assert w.waiting_for() == [C]
    w.update(C, Mark(10.0, True))
    assert w.value() == (50.0, 50.0)  # the idle source does not hold it back
    w.update(B, Mark(40.0, False))  # a restarted reader resends an older mark
    assert w.value() == (50.0, 50.0)
    w.update(A, Mark(100.0, True))
    w.update(B, Mark(60.0, True))
    before, clock = w.value()  # all idle: everything that arrived may go
    assert clock == 100.0 and 100.0 < before < 100.001


def test_combined_watermark_snapshot_round_trip():
    w = CombinedWatermark([A, B])
    w.update(A, Mark(-math.inf, True))
    w.update(B, Mark(5.0, False))
    w2 = CombinedWatermark([A, B])
    w2.restore(w.snapshot())
    assert w2.marks == w.marks


def test_reorder_buffer_releases_in_event_time_then_id_order():
    buf: ReorderBuffer[str] = ReorderBuffer()
    for ts, i in [(3.0, "c"), (1.0, "b"), (1.0, "a"), (5.0, "d")]:
        buf.push(ts, i, i)
    assert list(buf.release(3.0)) == ["a", "b"]
    assert buf.items() == ["c", "d"]
    assert list(buf.release(math.inf)) == ["c", "d"]
    assert len(buf) == 0


def test_when_an_idle_source_wakes_the_watermark_holds_for_the_grace():
    w = CombinedWatermark([A, B, C], grace=0.2)
    w.update(A, Mark(-math.inf, True))
    w.update(B, Mark(-math.inf, True))
    w.update(C, Mark(-math.inf, True))
    assert w.value(now=0.0)[1] == -math.inf  # nothing yet
    w.update(A, Mark(50.0, False))  # a burst wakes a...
    assert w.value(now=1.0)[0] < 0  # ...while b may still be landing its share
    w.update(B, Mark(40.0, False))
    assert w.value(now=1.1)[0] < 0
    assert w.value(now=1.35) == (40.0, 40.0)  # the grace is over: exact again
    w.update(C, Mark(45.0, True))  # c had a few, and is quiet again
    assert w.value(now=1.4) == (40.0, 40.0)


def test_steady_sources_are_exact_even_with_others_idle():
    w = CombinedWatermark([A, B], grace=0.2)
    w.update(A, Mark(10.0, False))
    w.update(B, Mark(-math.inf, True))
    assert w.value(now=5.0) == (10.0, 10.0)
    w.update(A, Mark(11.0, False))
    assert w.value(now=5.01) == (11.0, 11.0)


def test_without_a_clock_there_is_no_grace():
    w = CombinedWatermark([A, B], grace=0.2)
    w.update(A, Mark(50.0, False))
    w.update(B, Mark(9.0, True))
    assert w.value() == (50.0, 50.0)


def test_a_caught_up_busy_source_holds_the_watermark_at_most_its_lag_behind_the_clock():
    clocks = SourceWatermarks(0.0, 1.0, math.inf, caught_up_lag=lambda source: 2.0)
    clocks.observe(WATCHLIST, 1_000.0, now=5_000.0)  # an entry made long ago, published now
    clocks.update_idleness({WATCHLIST: False}, now=5_000.0)
    assert clocks.marks(5_000.0)[WATCHLIST] == Mark(1_000.0, False)  # a backlog: its own time
    clocks.update_idleness({WATCHLIST: True}, now=5_000.5)
    assert clocks.marks(5_000.5)[WATCHLIST] == Mark(4_998.5, False)  # caught up: the clock


def test_an_input_partition_is_named_topic_colon_partition_and_read_back():
    source = InputPartition("events.detections", 12)
    assert str(source) == "events.detections:12"
    assert InputPartition.parse(str(source)) == source
    for bad in ("events.detections", "events.detections:", ":3", "t:x"):
        with pytest.raises(ValueError, match="does not name an input partition"):
            InputPartition.parse(bad)
