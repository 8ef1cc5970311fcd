"""Peer of `bench/peers.py`: a plain Faust (faust-streaming) agent running the one-rule workload.

    PEER_BOOTSTRAP=127.0.0.1:9092 PEER_TOPIC=t PEER_N=200000 PEER_GROUP=g \\
        .venv/bin/python bench/peer_faust_app.py worker -l warn

Stock settings apart from what a benchmark needs: its own consumer group (the app id) reading
from the earliest offset, raw values decoded with orjson in the agent, a plain dict as state
(`peer_rule.PlateWindows`), no web server, in-memory store. After PEER_N events it prints one
`PEER_RESULT {json}` line on stdout; the parent then stops the worker (SIGTERM). Run it with a
scratch folder as the working directory: Faust writes `<app id>-data/` there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import faust
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peer_rule import RESULT_PREFIX, Clock, PlateWindows

BOOTSTRAP = os.environ["PEER_BOOTSTRAP"]
TOPIC = os.environ["PEER_TOPIC"]
N = int(os.environ["PEER_N"])
GROUP = os.environ["PEER_GROUP"]

app = faust.App(
    GROUP,
    broker=f"kafka://{BOOTSTRAP}",
    store="memory://",
    value_serializer="raw",
    key_serializer="raw",
    consumer_auto_offset_reset="earliest",
    topic_replication_factor=1,
    web_enabled=False,
    web_port=int(os.environ.get("PEER_WEB_PORT", "6066")),
)
source = app.topic(TOPIC, key_type=bytes, value_type=bytes)

rule = PlateWindows()
clock = Clock(N)


@app.agent(source)  # type: ignore[untyped-decorator]
async def count_reads(stream: AsyncIterator[bytes]) -> None:
    loads = orjson.loads
    on_event = rule.on_event
    tick = clock.tick
    reported = False
    async for value in stream:
        on_event(loads(value))
        if tick() and not reported:
            reported = True
            line = RESULT_PREFIX.encode() + orjson.dumps(clock.result(rule.fired, rule.late))
            os.write(1, line + b"\n")  # the worker redirects sys.stdout into its logger


if __name__ == "__main__":
    app.main()
