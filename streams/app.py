"""The Faust worker: agents that decode, call the engine, send, and record metrics.

Three hops, each co-partitioned by what it needs, so any producer keying is fine:

1. ingest (one agent per input topic): validate; refusals to the dead-letter topic; accepted
   events in batches to `fusion.validated`, partitioned by `event_id`.
2. dedup (`fusion.validated`): drop repeated ids, dead-letter events too late for every rule,
   and route each event to `fusion.routed` under every correlation key its rules use.
3. correlate (`fusion.routed`): one engine per partition; alerts released per destination to
   `alerts.<cc>`, each with its record on `audit.sharing`.

Stages 2 and 3 keep state per partition, snapshot it to compacted topics and ack their input
only once a snapshot covers it, so a restarted or rebalanced worker resumes where it was.

With `fast_path` (the default) Faust's consumer hands each stage whole fetched batches
(`streams/fastpath.py`); the agents below then only hold the subscriptions.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import time
import zlib
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.types import TP

from engine.dedup import Deduplicator
from engine.engine import Engine, Route
from engine.errors import FusionError, PolicyError, RuleSetError, SnapshotError
from engine.facts import Fact
from engine.hits import RawAlert
from engine.ingest import Rejection, validate
from engine.policy import Keyring, Policy, load_policy, reload_policy
from engine.release import recipients, release
from engine.routing import Router, partition_for
from engine.rules import RuleSet, load_rules
from engine.ruletests import run_all
from streams.clients import ssl_context
from streams.envelopes import (
    dead_letter,
    decode_batch,
    encode_batch,
    routed_items,
    validated_items,
)
from streams.fastpath import BatchingApp
from streams.keys import keyring_from_sources
from streams.metrics import Metrics
from streams.settings import Settings
from streams.snapshots import SnapshotReader

log = logging.getLogger("fusion")


@dataclass
class PartitionState:
    """A stage's state for one partition, and the input it has applied but not yet acked."""

    applied: int = -1
    pending: list[Any] = field(default_factory=list)
    dirty: bool = False
    last_snapshot: float = 0.0
    next_interval: float = 0.0
    writing: asyncio.Future[None] | None = None


class Pipeline:
    """The stages' state and logic, independent of how Faust wires them."""

    def __init__(self, settings: Settings, app: faust.App, metrics: Metrics) -> None:
        self.s = settings
        self.app = app
        self.metrics = metrics
        self.ruleset: RuleSet = load_rules([settings.rules_path])
        self._rules_fingerprint = rules_fingerprint(settings.rules_path)
        self._last_reload_check = time.monotonic()
        self.router = Router(self.ruleset)
        self.policy: Policy = load_policy(settings.policy_path, self.keyring())
        self._last_policy_check = time.monotonic()
        self._last_policy_error = ""
        log.info(
            "sharing policy %s version %s (sha256 %s) from %s",
            self.policy.ref.id,
            self.policy.ref.version,
            self.policy.ref.sha256,
            settings.policy_path,
        )
        self.partners = settings.partner_set
        self.reader = SnapshotReader(settings)
        self.dedups: dict[int, Deduplicator] = {}
        self.dedup_wm: dict[int, float] = {}
        self.engines: dict[int, Engine] = {}
        self.states: dict[tuple[str, int], PartitionState] = {}
        self.locks: dict[tuple[str, int], asyncio.Lock] = defaultdict(asyncio.Lock)
        self.ackers: dict[str, Callable[[Any], Awaitable[bool]]] = {}
        self.stage_of = {settings.topic_validated: "dedup", settings.topic_routed: "engine"}
        self._evictions_seen: dict[str, int] = defaultdict(int)
        self._late_seen: dict[str, int] = defaultdict(int)
        self._suppressed_seen: dict[str, int] = defaultdict(int)
        self.failed = False

        t = app.topic
        self.inputs = {
            etype: t(name, value_serializer="raw", key_serializer="raw", internal=False)
            for etype, name in settings.input_topics.items()
        }
        self.topic_types = {name: etype for etype, name in settings.input_topics.items()}
        raw = {"value_serializer": "raw", "key_serializer": "raw"}
        self.validated = t(settings.topic_validated, **raw)
        self.routed = t(settings.topic_routed, **raw)
        self.deadletter = t(settings.topic_deadletter, **raw)
        self.audit = t(settings.topic_audit, **raw)
        self.alert_topics = {p: t(settings.alert_topic(p), **raw) for p in settings.partners}
        self.state_topics = {
            "dedup": t(settings.topic_state_dedup, **raw),
            "engine": t(settings.topic_state_engine, **raw),
        }

    # -- stage 1: ingest -------------------------------------------------------------------

    async def ingest(self, etype: str, events: list[Any]) -> None:
        """Stage 1 for events delivered by a Faust stream (the fallback path)."""
        await self.ingest_records(
            [
                (ev.message.topic, ev.message.partition, ev.message.offset, ev.value)
                for ev in events
            ],
            etype,
        )

    async def ingest_messages(self, messages: list[Any]) -> None:
        """Stage 1 for a whole fetched batch of input messages (the fast path), acked after."""
        app = self.app
        await app.producer.buffer.wait_until_ebb()  # back-pressure: a full producer waits
        gen = app.consumer_generation_id
        live = [m for m in messages if m.generation_id == gen]
        if not live:
            return
        etype = self.topic_types[live[0].topic]
        await self.ingest_records([(m.topic, m.partition, m.offset, m.value) for m in live], etype)
        ack = app.consumer.ack
        for m in live:
            ack(m)

    async def ingest_records(
        self, records: list[tuple[str, int, int, bytes | None]], etype: str
    ) -> None:
        now = time.time()
        s = self.s
        parts: dict[int, list[Any]] = defaultdict(list)
        counts: dict[tuple[str, str], int] = defaultdict(int)
        topic_name = s.input_topics[etype]
        n = s.internal_partitions
        partners = self.partners
        max_bytes = s.max_message_bytes
        for topic, partition, offset, value in records:
            try:
                res = validate(value, etype, now=now, partners=partners, max_bytes=max_bytes)
            except Exception as e:
                log.exception(
                    "validation failed unexpectedly on %s[%d]@%d", topic, partition, offset
                )
                res = Rejection(
                    "internal",
                    f"the pipeline failed on this message ({e!r}); "
                    "it is kept here: report it to the pipeline's maintainers",
                )
            if isinstance(res, Rejection):
                await self.send_dead_letter(topic, partition, offset, value, res, now)
                continue
            counts[(etype, res.country)] += 1
            parts[partition_for(res.event_id, n)].append(
                [res.doc, res.ts, now, [topic, partition, offset]]
            )
        for (et, country), k in counts.items():
            self.metrics.received.labels(topic_name, et, country).inc(k)
        for p, items in parts.items():
            await self.validated.send(value=encode_batch(items), partition=p)

    async def send_dead_letter(
        self,
        topic: str,
        partition: int,
        offset: int,
        raw: bytes | None,
        why: Rejection,
        now: float,
    ) -> None:
        self.metrics.rejected.labels(topic, why.kind).inc()
        await self.deadletter.send(
            value=dead_letter(topic, partition, offset, raw, why, now),
            key=f"{topic}:{partition}:{offset}".encode(),
        )

    # -- stage 2: dedup and route ----------------------------------------------------------

    async def dedup(self, msg: Any) -> None:
        p = msg.partition
        dd = self.dedups[p]
        now = time.time()
        wm = max(self.dedup_wm.get(p, 0.0), now - self.s.idle_lag_s)
        parts: dict[int, list[Any]] = defaultdict(list)
        n = self.s.internal_partitions
        ruleset, router = self.ruleset, self.router
        fresh: set[str] = set()
        late: list[tuple[list[Any], dict[str, Any], str]] = []
        # Decide everything first and change the state only once the output is sent, so that
        # a message cut short (a stop or a rebalance) is processed again from scratch.
        for doc, ts, t_in, origin in validated_items(decode_batch(msg.value)):
            fact = Fact.from_doc(doc, ts)
            eid = fact.event_id
            if eid in fresh or dd.contains(eid, now):
                self.metrics.duplicates.labels(fact.event_type).inc()
                continue
            fresh.add(eid)
            rules = ruleset.rules_taking(fact)
            reason = ruleset.late_reason(fact, wm, rules)
            if reason is not None:
                self.metrics.late.labels(fact.event_type).inc()
                late.append((origin, doc, reason))
                continue
            if ts > wm:
                wm = ts
            for key, route in router.routes(fact, rules):
                parts[partition_for(key, n)].append([route.kind, route.owner, doc, ts, t_in])
        for origin, doc, reason in late:
            await self.send_dead_letter(
                origin[0], origin[1], origin[2], orjson.dumps(doc), Rejection("late", reason), now
            )
        for q, items in parts.items():
            await self.routed.send(value=encode_batch(items), partition=q)
        for eid in fresh:
            dd.seen(eid, now)
        self.dedup_wm[p] = wm

    # -- stage 3: correlate and deliver ----------------------------------------------------

    async def correlate(self, msg: Any) -> None:
        engine = self.engines[msg.partition]
        now = time.time()
        for kind, owner, doc, ts, t_in in routed_items(decode_batch(msg.value)):
            fact = Fact.from_doc(doc, ts)
            alerts = engine.process(fact, Route(kind, owner), now=now)
            for a in alerts:
                await self.deliver(a, t_in)

    async def deliver(self, alert: RawAlert, ingested_at: float | None) -> None:
        now = time.time()
        who = recipients(alert, self.partners, self.policy)
        self.metrics.alerts_raised.labels(alert.rule_id, alert.severity).inc()
        for dest in who:
            topic = self.alert_topics[dest]
            out = release(alert, dest, who, self.policy, now=now, topic=topic.get_topic_name())
            if out is None:
                continue
            body, audit = out
            key = alert.alert_id.encode()
            await self.audit.send(key=key, value=orjson.dumps(audit.model_dump(mode="json")))
            await topic.send(key=key, value=orjson.dumps(body.model_dump(mode="json")))
            self.metrics.audit_records.labels(dest).inc()
            self.metrics.alerts_delivered.labels(dest, alert.rule_id).inc()
        done = time.time()
        self.metrics.event_to_alert.labels(alert.rule_id).observe(max(0.0, done - alert.last_seen))
        if ingested_at is not None:
            self.metrics.ingest_to_alert.labels(alert.rule_id).observe(max(0.0, done - ingested_at))

    # -- state, snapshots, acks ------------------------------------------------------------

    def owns(self, topic: str, p: int) -> bool:
        return TP(topic, p) in self.app.consumer.assignment()

    async def _state(self, stage: str, p: int) -> PartitionState | None:
        """The stage's state for partition p, loaded from its snapshot on first use."""
        st = self.states.get((stage, p))
        if st is not None:
            return st
        topic = self.s.topic_validated if stage == "dedup" else self.s.topic_routed
        if not self.owns(topic, p):
            return None
        async with self.locks[(stage, p)]:
            st = self.states.get((stage, p))
            if st is not None:
                return st
            st = PartitionState(
                last_snapshot=time.monotonic(), next_interval=self.s.snapshot_interval_s
            )
            blob = await self._read_snapshot(stage, p)
            if stage == "dedup":
                dd = Deduplicator(self.s.dedup_ttl_s, self.s.dedup_max_ids)
                if blob is not None:
                    try:
                        try:
                            text = zlib.decompress(blob)
                        except zlib.error:
                            text = blob  # written before snapshots were compressed
                        doc = orjson.loads(text)
                        dd.restore(doc["seen"])
                        st.applied = int(doc["applied"])
                        self.dedup_wm[p] = float(doc.get("watermark") or 0.0)
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                        log.exception(
                            "dedup snapshot of partition %d unreadable; starting empty "
                            "(events seen before may pass again as new)",
                            p,
                        )
                        dd = Deduplicator(self.s.dedup_ttl_s, self.s.dedup_max_ids)
                self.dedups[p] = dd
            else:
                engine = Engine(self.ruleset)
                if blob is not None:
                    try:
                        meta = engine.restore(blob)
                        st.applied = int(meta.get("applied", -1))
                    except SnapshotError:
                        log.exception(
                            "engine snapshot of partition %d unreadable; starting empty", p
                        )
                self.engines[p] = engine
            log.info("%s partition %d ready (resuming after offset %d)", stage, p, st.applied)
            self.states[(stage, p)] = st
            return st

    async def _read_snapshot(self, stage: str, p: int) -> bytes | None:
        topic = self.state_topics[stage].get_topic_name()
        for attempt in range(1, 11):
            try:
                return await self.reader.latest(topic, p)
            except Exception as e:
                if attempt == 10:
                    raise
                log.warning(
                    "reading the %s snapshot of partition %d failed (%r); retrying", stage, p, e
                )
                await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
        return None

    async def internal_messages(self, messages: list[Any]) -> None:
        """Stages 2 and 3 for a whole fetched batch of their topics (the fast path)."""
        gen = self.app.consumer_generation_id
        for msg in messages:
            if msg.generation_id != gen:
                continue  # fetched before a rebalance: read again from the committed offset
            await self.guarded(self.stage_of[msg.topic], msg, msg)

    async def _ack_message(self, msg: Any) -> bool:
        return bool(self.app.consumer.ack(msg))

    async def guarded(self, stage: str, msg: Any, token: Any) -> None:
        """Run a stage on one message. If it fails (a bug or a broker outage outlasting the
        retries), its partial effects cannot be trusted: stop the worker, so that it restarts
        from the last snapshot and the committed offsets, which never pass an unsnapshotted
        message. Skipping the message would lose it.

        The stage's state is loaded on the partition's first message; a message the state
        already covers (read again after a restart) is only acked."""
        try:
            p = msg.partition
            st = await self._state(stage, p)
            if st is None:
                return
            if msg.offset <= st.applied:
                await self.ackers[stage](token)
                return
            await (self.dedup(msg) if stage == "dedup" else self.correlate(msg))
            st.applied = msg.offset
            st.pending.append(token)
            st.dirty = True
            await self._maybe_snapshot(stage, p)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.critical(
                "%s failed on %s offset %d; stopping the worker to resume from the last snapshot",
                stage,
                msg.tp,
                msg.offset,
                exc_info=True,
            )
            self.metrics.internal_errors.labels(stage).inc()
            self.failed = True
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(3600)

    async def _maybe_snapshot(self, stage: str, p: int, force: bool = False) -> None:
        """Snapshot a partition's state if due. The state is serialised at once (a consistent
        cut); writing it and acking its input then go on in the background, so processing
        does not wait on the broker. `force` waits for it all (rebalance, shutdown)."""
        st = self.states.get((stage, p))
        if st is None:
            return
        if st.writing is not None and not st.writing.done():
            if not force:
                return
            await st.writing
        if not st.dirty:
            return
        if not force and time.monotonic() - st.last_snapshot < st.next_interval:
            return
        began = time.perf_counter()
        if stage == "dedup":
            dd = self.dedups[p]
            dd.expire(time.time())
            blob = zlib.compress(
                orjson.dumps(
                    {
                        "applied": st.applied,
                        "seen": dd.snapshot(),
                        "watermark": self.dedup_wm.get(p),
                    }
                ),
                1,
            )
            self.metrics.dedup_ids.set(sum(len(d) for d in self.dedups.values()))
        else:
            blob = self.engines[p].snapshot({"applied": st.applied})
        to_ack, st.pending = st.pending, []
        st.dirty = False
        st.last_snapshot = time.monotonic()
        # Snapshots are whole: as state grows they are spaced out so that they take at most
        # `snapshot_cpu_share` of the time (the cost is more input to re-read after a crash,
        # never lost input).
        cost = (time.perf_counter() - began) * sum(1 for k in self.states if k[0] == stage)
        st.next_interval = min(
            self.s.snapshot_max_interval_s,
            max(self.s.snapshot_interval_s, cost / self.s.snapshot_cpu_share),
        )
        write = self._write_snapshot(stage, p, st, blob, to_ack)
        if force:
            await write
        else:
            st.writing = asyncio.ensure_future(write)

    async def _write_snapshot(
        self, stage: str, p: int, st: PartitionState, blob: bytes, to_ack: list[Any]
    ) -> None:
        try:
            # Everything the snapshot's input produced must be on the broker before the
            # snapshot is, and the snapshot before its input is acked (then committed).
            await self.app.producer.flush()
            await self.state_topics[stage].send(
                value=blob, key=f"{stage}:{p}".encode(), partition=p
            )
            await self.app.producer.flush()
        except Exception:
            log.exception("writing the %s snapshot of partition %d failed; will retry", stage, p)
            st.pending[:0] = to_ack
            st.dirty = True
            return
        self.metrics.snapshots.labels(stage).inc()
        self.metrics.snapshot_bytes.labels(stage).set(len(blob))
        ack = self.ackers.get(stage)
        if ack is not None:
            for token in to_ack:
                await ack(token)

    def keyring(self) -> Keyring:
        """The pseudonymisation keys, read again from where the settings say."""
        return keyring_from_sources(self.s.pseudonym_keys_file, self.s.pseudonym_keys)

    def maybe_reload_policy(self) -> None:
        """Swap in a changed policy or keys file if it loads; else keep the policy in force."""
        every = self.s.policy_reload_s
        if not every or time.monotonic() - self._last_policy_check < every:
            return
        self._last_policy_check = time.monotonic()
        try:
            keys = self.keyring()
        except PolicyError as e:
            log.error("keys reload refused, the policy in force stays: %s", e)  # noqa: TRY400
            self.metrics.reloads.labels("policy", "refused").inc()
            return
        keys_changed = keys != self.policy.keyring
        res = reload_policy(self.policy, self.s.policy_path, keys if keys_changed else None)
        if res.error is not None:
            if str(res.error) != self._last_policy_error:
                log.error("policy reload refused, the policy in force stays: %s", res.error)
                self.metrics.reloads.labels("policy", "refused").inc()
            self._last_policy_error = str(res.error)
            return
        self._last_policy_error = ""
        if res.changed:
            self.policy = res.policy
            self.metrics.reloads.labels("policy", "success").inc()
            log.info(
                "sharing policy reloaded: %s version %s (sha256 %s)",
                res.policy.ref.id,
                res.policy.ref.version,
                res.policy.ref.sha256,
            )

    def maybe_reload_rules(self) -> None:
        """Swap in changed rule files if they load and pass their own tests; else keep the old."""
        every = self.s.rules_reload_s
        if not every or time.monotonic() - self._last_reload_check < every:
            return
        self._last_reload_check = time.monotonic()
        fp = rules_fingerprint(self.s.rules_path)
        if fp == self._rules_fingerprint:
            return
        self._rules_fingerprint = fp
        try:
            new = load_rules([self.s.rules_path])
        except RuleSetError as e:
            log.error("rule reload refused, the running rules stay: %s", e)  # noqa: TRY400
            self.metrics.reloads.labels("rules", "refused").inc()
            return
        outcomes, untested = run_all(new)
        failed = [
            f"{o.rule_id}: {o.name}: {'; '.join(o.problems)}" for o in outcomes if not o.passed
        ]
        if failed or untested:
            problems = failed + [f"{r}: the rule carries no tests" for r in untested]
            log.error(
                "rule reload refused, the running rules stay; failing rule tests:\n  %s",
                "\n  ".join(problems),
            )
            self.metrics.reloads.labels("rules", "refused").inc()
            return
        for p, old in list(self.engines.items()):
            engine = Engine(new)
            engine.restore(old.snapshot())
            self.engines[p] = engine
            st = self.states.get(("engine", p))
            if st is not None:
                st.dirty = True
        self.ruleset = new
        self.router = Router(new)
        log.info("rules reloaded: %d rules (%s)", len(new), ", ".join(r.id for r in new.rules))
        self.metrics.reloads.labels("rules", "success").inc()

    async def tick(self) -> None:
        """Once a second: advance the engines' clocks, expire state, snapshot what is due."""
        self.maybe_reload_rules()
        self.maybe_reload_policy()
        now = time.time()
        for p, engine in list(self.engines.items()):
            st = self.states.get(("engine", p))
            if st is None:
                continue
            for a in engine.advance(now - self.s.idle_lag_s):
                await self.deliver(a, None)
                st.dirty = True
        for stage, p in list(self.states):
            await self._maybe_snapshot(stage, p)
        self.export_state_metrics()
        self.metrics.ready.set(1 if self.readiness()[0] else 0)
        self.export_lag()

    def export_lag(self) -> None:
        consumer = self.app.consumer
        try:
            assigned = consumer.assignment()
        except Exception:
            return
        for tp in assigned:
            try:
                high = consumer.highwater(tp)
            except Exception:  # noqa: S112 - no fetch for that partition yet
                continue
            read = consumer._read_offset.get(tp)
            lag = high - (read + 1 if read is not None else 0) if high is not None else 0
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, lag))

    def export_state_metrics(self) -> None:
        m = self.metrics
        keys: dict[str, int] = defaultdict(int)
        partials: dict[str, int] = defaultdict(int)
        evictions: dict[str, int] = defaultdict(int)
        late: dict[str, int] = defaultdict(int)
        suppressed: dict[str, int] = defaultdict(int)
        wm = 0.0
        for engine in self.engines.values():
            for rid, (k, n, e) in engine.state_size().items():
                keys[rid] += k
                partials[rid] += n
                evictions[rid] += e
            for rid, rs in engine.stats.rules.items():
                late[rid] += rs.late
                suppressed[rid] += rs.suppressed
            wm = max(wm, engine.watermark)
        for rid in self.ruleset.by_id:
            m.state_keys.labels(rid).set(keys[rid])
            m.state_partials.labels(rid).set(partials[rid])
            for total, seen, metric in (
                (evictions[rid], self._evictions_seen, m.state_evictions),
                (late[rid], self._late_seen, m.rule_late),
                (suppressed[rid], self._suppressed_seen, m.suppressed),
            ):
                if total > seen[rid]:
                    metric.labels(rid).inc(total - seen[rid])
                seen[rid] = total
        if wm > 0:
            m.watermark.set(wm)

    async def on_revoked(self, revoked: set[TP]) -> None:
        """Hand partitions over: snapshot their state, then forget it."""
        names = {self.s.topic_validated: "dedup", self.s.topic_routed: "engine"}
        for tp in revoked:
            stage = names.get(tp.topic)
            if stage is None or (stage, tp.partition) not in self.states:
                continue
            try:
                await self._maybe_snapshot(stage, tp.partition, force=True)
            except (FusionError, OSError):
                log.exception(
                    "could not snapshot %s partition %d on revocation", stage, tp.partition
                )
            self.states.pop((stage, tp.partition), None)
            (self.dedups if stage == "dedup" else self.engines).pop(tp.partition, None)

    def readiness(self) -> tuple[bool, str]:
        """Ready once every declared input topic has partitions assigned to the group here."""
        try:
            assigned = self.app.consumer.assignment()
        except Exception:
            return False, "consumer not started"
        topics = {tp.topic for tp in assigned}
        wanted = {*self.s.input_topics.values(), self.s.topic_validated, self.s.topic_routed}
        missing = sorted(wanted - topics)
        if missing:
            return False, f"no partitions assigned for {', '.join(missing)}"
        return True, f"{len(assigned)} partitions assigned"


def rules_fingerprint(path: Path) -> str:
    """A digest of the rule files' names and bytes (cheap enough to poll)."""
    h = hashlib.sha256()
    files = sorted(f for f in path.glob("*.y*ml") if not f.name.startswith("policy"))
    if not path.is_dir():
        files = [path]
    for f in files:
        try:
            h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
        except OSError:
            h.update(f.name.encode() + b"\0missing\0")
    return h.hexdigest()


def broker_credentials(s: Settings) -> faust.SASLCredentials | None:
    """SCRAM-SHA-512 over TLS (trusting the configured CA) when the broker is secured."""
    if s.security_protocol != "SASL_SSL":
        return None
    assert s.sasl_password is not None
    return faust.SASLCredentials(
        username=s.sasl_username,
        password=s.sasl_password.get_secret_value(),
        ssl_context=ssl_context(s),
        mechanism="SCRAM-SHA-512",
    )


def create_app(settings: Settings, metrics: Metrics | None = None) -> tuple[faust.App, Pipeline]:
    """The Faust app with its agents, timer and health endpoints."""
    (settings.data_dir / settings.app_id).mkdir(parents=True, exist_ok=True)
    app = BatchingApp(
        settings.app_id,
        broker=[f"kafka://{b}" for b in settings.bootstrap_servers.split(",")],
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=settings.internal_partitions,
        topic_replication_factor=1,
        topic_allow_declare=False,
        broker_credentials=broker_credentials(settings),
        web_enabled=settings.web_port > 0,
        web_port=settings.web_port or 6066,
        web_bind="0.0.0.0",  # noqa: S104 - compose reaches the health endpoints from outside
        producer_max_request_size=16 * 1024 * 1024,
        consumer_max_fetch_size=16 * 1024 * 1024,
        broker_commit_interval=1.0,
        broker_max_poll_records=settings.batch_max,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_s / 5),
        stream_wait_empty=False,
        store="memory://",
        datadir=str(settings.data_dir / settings.app_id),
    )
    pipeline = Pipeline(settings, app, metrics or Metrics())
    batch, within = settings.batch_max, settings.batch_within_s

    def make_ingest(etype: str) -> Callable[[Any], Awaitable[None]]:
        async def ingest(stream: Any) -> None:
            async for events in stream.take_events(batch, within=within):
                await pipeline.ingest(etype, events)

        ingest.__name__ = f"ingest_{etype}"
        return ingest

    for etype, topic in pipeline.inputs.items():
        app.agent(topic, name=f"ingest-{etype}")(make_ingest(etype))
    if settings.fast_path:
        consumer = app.batch_consumer()
        for name in settings.input_topics.values():
            consumer.batch_handlers[name] = pipeline.ingest_messages
        for name in pipeline.stage_of:
            consumer.batch_handlers[name] = pipeline.internal_messages
        pipeline.ackers["dedup"] = pipeline.ackers["engine"] = pipeline._ack_message

    @app.agent(pipeline.validated, name="dedup")
    async def dedup(stream: Any) -> None:
        s = stream.noack()
        if not settings.fast_path:
            pipeline.ackers["dedup"] = s.ack
        async for ev in s.events():
            await pipeline.guarded("dedup", ev.message, ev)

    @app.agent(pipeline.routed, name="correlate")
    async def correlate(stream: Any) -> None:
        s = stream.noack()
        if not settings.fast_path:
            pipeline.ackers["engine"] = s.ack
        async for ev in s.events():
            await pipeline.guarded("engine", ev.message, ev)

    @app.timer(1.0)
    async def tick() -> None:
        await pipeline.tick()

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        await pipeline.on_revoked(revoked)

    @app.page("/health/live")
    async def live(web: Any, request: Any) -> Any:
        return web.json({"status": "live"})

    @app.page("/health/ready")
    async def ready(web: Any, request: Any) -> Any:
        ok, why = pipeline.readiness()
        pipeline.metrics.ready.set(1 if ok else 0)
        return web.json(
            {"status": "ready" if ok else "not ready", "detail": why}, status=200 if ok else 503
        )

    return app, pipeline
