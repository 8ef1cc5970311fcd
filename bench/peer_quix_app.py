"""Peer of `bench/peers.py`: Quix Streams running the one-rule workload.

    PEER_BOOTSTRAP=127.0.0.1:9092 PEER_TOPIC=t PEER_N=200000 PEER_GROUP=g PEER_STATE_DIR=/tmp/s \\
        <python with quixstreams==3.28.1> bench/peer_quix_app.py

Runs with the interpreter of its own virtualenv (bench/requirements-quix.txt; `bench/peers.py`
makes it): quixstreams 3.28.1 requires pydantic<2.14 and pydantic-settings<2.16, which the
project's pins (2.14.4, 2.16.3) exclude, so it cannot share the project's venv.

The pipeline: a stateful `tumbling_window(10 min).count().current()` per message key (the
topic is keyed by the normalised plate, so no `group_by` repartition is needed), event time
from `occurred_at` (a topic timestamp extractor), JSON values (Quix's default deserializer,
orjson), windows whose count is exactly 5 counted as alerts. Stock settings otherwise: RocksDB
state, changelog topics on (PEER_QUIX_CHANGELOG=0 turns them off), at-least-once, 5 s commits.
After PEER_N input messages it prints one `PEER_RESULT {json}` line and stops the app.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from quixstreams import Application

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peer_rule import RESULT_PREFIX, THRESHOLD, Clock, event_ms

BOOTSTRAP = os.environ["PEER_BOOTSTRAP"]
TOPIC = os.environ["PEER_TOPIC"]
N = int(os.environ["PEER_N"])
GROUP = os.environ["PEER_GROUP"]
STATE_DIR = os.environ["PEER_STATE_DIR"]
CHANGELOG = os.environ.get("PEER_QUIX_CHANGELOG", "1") != "0"


def main() -> None:
    app = Application(
        broker_address=BOOTSTRAP,
        consumer_group=GROUP,
        auto_offset_reset="earliest",
        state_dir=STATE_DIR,
        use_changelog_topics=CHANGELOG,
        loglevel="WARNING",
    )
    topic = app.topic(
        TOPIC,
        key_deserializer="str",
        value_deserializer="json",
        timestamp_extractor=lambda value, _headers, _ts, _ts_type: event_ms(value["occurred_at"]),
    )
    clock = Clock(N)
    fired = [0]

    def seen(_value: Any) -> None:
        if clock.tick() and clock.count == N:
            app.stop()  # the message in hand is processed to the end first

    def alert(_window: Any) -> None:
        fired[0] += 1

    sdf = app.dataframe(topic)
    sdf = sdf.update(seen)
    sdf = sdf.filter(lambda v: bool(v.get("plate")))
    sdf = sdf.tumbling_window(duration_ms=timedelta(minutes=10)).count().current()
    sdf = sdf.filter(lambda w: w["value"] == THRESHOLD)
    sdf = sdf.update(alert)
    app.run()
    print(RESULT_PREFIX + orjson.dumps(clock.result(fired[0], 0)).decode(), flush=True)


if __name__ == "__main__":
    main()
