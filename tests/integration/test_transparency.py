"""The transparency log on the real broker: a worker killed with SIGKILL mid-run leaves logs
that verify end to end for both countries, cosigned by both witnesses; then, each on a
recreated copy of the log's topics, a deleted leaf or record, two leaves swapped, a leaf or a
record claiming an earlier place, a forked checkpoint signed with the pipeline's own key, and
a rollback to an older checkpoint: each time `fusion audit-verify` fails naming the record or
checkpoint, and a witness holding the last cosigned checkpoint refuses, counting it."""

from __future__ import annotations

import base64
import gc
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from engine.auditlog import LogError, Verified, assemble, record_leaf_hash
from engine.evidence import EvidenceError, manifest, verify_package
from engine.merkle import leaf_hash, root
from engine.notes import Checkpoint, SignedNote, Signer, sign_checkpoint
from engine.rulefiles import load_rules
from streams.settings import Settings
from streams.tools.report.read import build_report
from streams.tools.report.render import render_html
from streams.tools.simulator import Simulator
from streams.tools.transparency.evidence import build as build_package
from streams.tools.transparency.evidence import verify_folder
from streams.tools.transparency.keys import keygen, read_signer, read_trusted, witness_name
from streams.tools.transparency.read import read_topic
from streams.tools.transparency.verify import run as verify_run
from streams.tools.transparency.witness import Witness, WitnessMetrics
from streams.topics import KEPT
from tests.integration.conftest import REPO, Lab, until
from tests.integration.test_faults import expected_alerts, scenario, send_all, wait_taken

COUNTRIES = ("US", "MX")


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Unclosed clients show up in the test that leaked them, not in a later one."""
    yield
    gc.collect()


class Log:
    """The log's topics, keys and witnesses of one lab run."""

    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab = lab
        self.tmp = tmp
        self.topics = {
            "FUSION_TOPIC_LOG_LEAVES": f"audit.log.leaves.{lab.suffix}",
            "FUSION_TOPIC_LOG_CHECKPOINTS": f"audit.log.checkpoints.{lab.suffix}",
            "FUSION_TOPIC_LOG_COSIGNATURES": f"audit.log.cosignatures.{lab.suffix}",
            "FUSION_TOPIC_ARCHIVE": f"audit.archive.{lab.suffix}",
        }
        self.key_file = tmp / "log.key"
        keygen("border-fusion-log-test", self.key_file, witness=False)
        self.trusted = tmp / "trusted.keys"
        lines = [Path(f"{self.key_file}.pub").read_text()]
        for cc in COUNTRIES:
            keygen(witness_name(cc), tmp / f"witness-{cc}.key", witness=True)
            lines.append(Path(f"{tmp}/witness-{cc}.key.pub").read_text())
        self.trusted.write_text("".join(lines))
        lab.env.update(
            self.topics,
            FUSION_LOG_SIGNING_KEY_FILE=str(self.key_file),
            FUSION_LOG_CHECKPOINT_S="0.5",
        )
        lab.create_run_topics({})
        self.metrics = {cc: WitnessMetrics() for cc in COUNTRIES}

    def settings(self, **topics: str) -> Settings:
        """The run's settings, with some of the log's topics replaced by tampered copies."""
        return Settings(
            bootstrap_servers=self.lab.bootstrap,
            app_id=self.lab.env["FUSION_APP_ID"],
            alert_topic_prefix=self.lab.env["FUSION_ALERT_TOPIC_PREFIX"],
            topic_archive=self.topics["FUSION_TOPIC_ARCHIVE"],
            topic_audit=topics.get("audit", self.lab.topics["audit"]),
            topic_log_leaves=topics.get("leaves", self.topics["FUSION_TOPIC_LOG_LEAVES"]),
            topic_log_checkpoints=topics.get(
                "checkpoints", self.topics["FUSION_TOPIC_LOG_CHECKPOINTS"]
            ),
            topic_log_cosignatures=topics.get(
                "cosignatures", self.topics["FUSION_TOPIC_LOG_COSIGNATURES"]
            ),
        )

    def witness(self, cc: str, settings: Settings, state: Path) -> Witness:
        log_keys, _ = read_trusted(self.trusted)
        signer = read_signer(self.tmp / f"witness-{cc}.key")
        return Witness(settings, cc, signer, log_keys, state, self.metrics[cc])

    def verify(self, cc: str, settings: Settings) -> Verified:
        return verify_run(settings, cc, self.trusted, None)


def copy_topic(
    lab: Lab,
    source: str,
    transform: Callable[
        [list[tuple[int, bytes | None, bytes]]], list[tuple[int, bytes | None, bytes]]
    ]
    | None = None,
) -> str:
    """A new topic (kept for ever, as the log's) holding `source`'s messages, changed by
    `transform` (a list of (partition, key, value), partitions in order)."""
    consumer = KafkaConsumer(bootstrap_servers=lab.bootstrap, group_id=None)
    parts = sorted(consumer.partitions_for_topic(source) or ())
    msgs: list[tuple[int, bytes | None, bytes]] = []
    tps = [TopicPartition(source, p) for p in parts]
    ends = consumer.end_offsets(tps)
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got: dict[int, list[tuple[int, bytes | None, bytes]]] = {p: [] for p in parts}
    while any(consumer.position(tp) < ends[tp] for tp in tps):
        for tp, recs in consumer.poll(timeout_ms=500).items():
            got[tp.partition].extend((tp.partition, r.key, r.value) for r in recs)
    consumer.close()
    for p in parts:
        msgs.extend(got[p])
    if transform is not None:
        msgs = transform(msgs)
    name = f"{source}.copy-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(bootstrap_servers=lab.bootstrap)
    admin.create_topics([NewTopic(name, len(parts), 1, topic_configs=dict(KEPT))])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=lab.bootstrap, acks="all")
    for p, key, value in msgs:
        producer.send(name, value=value, key=key, partition=p)
    producer.flush()
    producer.close()
    return name


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, broker: str) -> Iterator[dict[str, Any]]:
    """One worker run, killed with SIGKILL part-way and restarted; both witnesses cosign."""
    tmp = tmp_path_factory.mktemp("transparency")
    lab = Lab(broker, tmp, "transparency")
    try:
        log = Log(lab, tmp)
        # every default rule's scenario (the demo's backlog), and crossings and watchlist hits
        now = time.time()
        sim = Simulator(seed=7, scenario_share=0.03, run_id=lab.suffix, tips=True)
        backlog = list(sim.backlog(now - 3600, now - 400, 600))
        events = [*backlog, *scenario()]
        # what replay raises of the scenario: the backlog's last alerts may wait for a
        # watermark that only later events move
        expected = expected_alerts(scenario_events := events[len(backlog) :])
        assert scenario_events
        first = lab.worker()
        first.wait_ready()
        half = len(events) // 2
        send_all(lab, events[:half])
        wait_taken((first,), half // 2)
        first.kill()
        second = lab.worker()
        second.wait_ready()
        send_all(lab, events[half:])
        lab.wait_alerts(expected, workers=(second,))
        settings = log.settings()
        rules = {rule.id for rule in load_rules([REPO / "rules"]).rules}

        def every_rule_released() -> bool:
            audited = read_topic(settings, settings.topic_audit)
            return {orjson.loads(r.value)["rule_id"] for r in audited} == rules

        until(every_rule_released, "an alert of every default rule", timeout=60)
        lab.wait_committed(workers=(second,))

        def signed_all() -> bool:
            logs = assemble(
                (r.where, orjson.loads(r.value))
                for r in read_topic(settings, settings.topic_log_leaves)
            )
            sizes: dict[str, int] = {}
            for r in read_topic(settings, settings.topic_log_checkpoints):
                cp = SignedNote.parse(r.value.decode()).checkpoint()
                sizes[cp.origin] = max(sizes.get(cp.origin, 0), cp.size)
            return bool(logs) and all(sizes.get(o, 0) == len(v.hashes) for o, v in logs.items())

        until(signed_all, "a checkpoint of every leaf published", timeout=60)
        states = {cc: tmp / f"witness-{cc}.state" for cc in COUNTRIES}
        witnesses = {cc: log.witness(cc, settings, states[cc]) for cc in COUNTRIES}
        for w in witnesses.values():
            w.round()
        yield {
            "lab": lab,
            "log": log,
            "settings": settings,
            "states": states,
            "expected": expected,
            "workers": (first, second),
        }
        for w in witnesses.values():
            w.close()
    finally:
        lab.close()


def test_a_log_killed_mid_run_verifies_end_to_end(run: dict[str, Any]) -> None:
    log: Log = run["log"]
    settings: Settings = run["settings"]
    records = [orjson.loads(r.value) for r in read_topic(settings, settings.topic_audit)]
    releases = {(r["alert_id"], r["destination"], r["version"]) for r in records}
    assert {a for a, _, _ in releases} >= run["expected"]
    total = 0
    for cc in COUNTRIES:
        verified = log.verify(cc, settings)
        mine = [r for r in records if r["destination"] == cc]
        # every record is a leaf (repeats after the restart recognised), none lost its leaf
        assert verified.records + verified.unlogged_repeats == len(mine), verified
        assert verified.records - verified.repeats == len({k for k in releases if k[1] == cc})
        total += verified.records
        assert verified.cosigned == verified.logs, "every leaf cosigned by both witnesses"
    leaves = read_topic(settings, settings.topic_log_leaves)
    logs = assemble((r.where, orjson.loads(r.value)) for r in leaves)
    assert sum(len(v.hashes) for v in logs.values()) == total
    # the restart neither forked nor skipped a log: the checkpoints of each log only grow,
    # and every one is the tree hash of its log's first leaves
    for r in read_topic(settings, settings.topic_log_checkpoints):
        cp = SignedNote.parse(r.value.decode()).checkpoint()
        if cp.size:
            assert root(logs[cp.origin].hashes[: cp.size]) == cp.root


def tampered(run: dict[str, Any], name: str, cc: str, **topics: str) -> tuple[LogError, Witness]:
    """Verify and witness over the tampered copies; the verification's failure and the
    witness (holding a copy of the genuine witness's state)."""
    log: Log = run["log"]
    settings = log.settings(**topics)
    with pytest.raises(LogError) as failed:
        log.verify(cc, settings)
    state = run["states"][cc].with_name(f"{name}-{cc}.state")
    shutil.copy(run["states"][cc], state)
    witness = log.witness(cc, settings, state)
    witness.round()
    witness.close()
    return failed.value, witness


def refusals(run: dict[str, Any], cc: str, reason: str) -> float:
    metrics: WitnessMetrics = run["log"].metrics[cc]
    total = 0.0
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == "fusion_witness_refusals_total" and s.labels["reason"] == reason:
                total += s.value
    return total


def leaf_rows(msgs: list[tuple[int, bytes | None, bytes]]) -> list[dict[str, Any]]:
    return [orjson.loads(v) for _, _, v in msgs]


def first_of(run: dict[str, Any], cc: str) -> tuple[str, int]:
    """The log and index of the first leaf released to `cc` in the busiest log."""
    settings: Settings = run["settings"]
    rows = [orjson.loads(r.value) for r in read_topic(settings, settings.topic_log_leaves)]
    by_log: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_log.setdefault(row["log"], []).append(row)
    origin = max(by_log, key=lambda o: len(by_log[o]))
    index = next(r["index"] for r in by_log[origin] if r["destination"] == cc)
    return origin, index


def test_a_deleted_leaf_fails(run: dict[str, Any]) -> None:
    settings: Settings = run["settings"]
    origin, index = first_of(run, "MX")
    partition = int(origin.rsplit("/", 1)[1])
    # DeleteRecords: everything of the log's partition up to and including that leaf
    copy = copy_topic(run["lab"], settings.topic_log_leaves)
    admin = KafkaAdminClient(bootstrap_servers=run["lab"].bootstrap)
    admin.delete_records({TopicPartition(copy, partition): index + 1})
    admin.close()
    before = refusals(run, "MX", "gap")
    error, _ = tampered(run, "deleted-leaf", "MX", leaves=copy)
    assert "audit record" in error.where and f"log {origin} index" in error.why, error
    assert refusals(run, "MX", "gap") > before


def test_a_deleted_record_fails(run: dict[str, Any]) -> None:
    settings: Settings = run["settings"]
    gone: list[dict[str, Any]] = []

    def drop_one(
        msgs: list[tuple[int, bytes | None, bytes]],
    ) -> list[tuple[int, bytes | None, bytes]]:
        i = next(i for i, (_, _, v) in enumerate(msgs) if orjson.loads(v)["destination"] == "US")
        gone.append(orjson.loads(msgs[i][2]))
        return msgs[:i] + msgs[i + 1 :]

    copy = copy_topic(run["lab"], settings.topic_audit, drop_one)
    error, _ = tampered(run, "deleted-record", "US", audit=copy)
    place = gone[0]["log"]
    assert error.where.startswith(f"leaf {place['index']} of log {place['log']}"), error
    assert "no audit record hashes to it" in error.why


def test_two_swapped_leaves_fail(run: dict[str, Any]) -> None:
    settings: Settings = run["settings"]
    origin, index = first_of(run, "US")

    def swap(msgs: list[tuple[int, bytes | None, bytes]]) -> list[tuple[int, bytes | None, bytes]]:
        rows = leaf_rows(msgs)
        at = [i for i, r in enumerate(rows) if r["log"] == origin]
        a = next(i for i in at if rows[i]["index"] == index)
        b = next(i for i in at if rows[i]["index"] != index)
        # the entries change places, each rewritten to claim the other's index
        ra, rb = dict(rows[a]), dict(rows[b])
        ra["index"], rb["index"] = rb["index"], ra["index"]
        out = list(msgs)
        out[a] = (msgs[a][0], msgs[a][1], orjson.dumps(rb))
        out[b] = (msgs[b][0], msgs[b][1], orjson.dumps(ra))
        return out

    copy = copy_topic(run["lab"], settings.topic_log_leaves, swap)
    before = refusals(run, "US", "fork")
    error, _ = tampered(run, "swapped", "US", leaves=copy)
    assert error.where.startswith("audit record"), error
    assert f"of log {origin}" in error.why, error
    assert refusals(run, "US", "fork") > before


def test_a_leaf_claiming_an_earlier_place_fails(run: dict[str, Any]) -> None:
    settings: Settings = run["settings"]
    origin, index = first_of(run, "MX")
    partition = int(origin.rsplit("/", 1)[1])

    def append(
        msgs: list[tuple[int, bytes | None, bytes]],
    ) -> list[tuple[int, bytes | None, bytes]]:
        forged = {
            "log": origin,
            "index": index,
            "destination": "MX",
            "leaf_hash": base64.b64encode(leaf_hash(b"forged")).decode(),
        }
        return [*msgs, (partition, None, orjson.dumps(forged))]

    copy = copy_topic(run["lab"], settings.topic_log_leaves, append)
    before = refusals(run, "MX", "fork")
    error, _ = tampered(run, "appended-leaf", "MX", leaves=copy)
    assert error.where.startswith("audit record"), error
    assert f"log {origin} index {index}" in error.why and "holds another leaf" in error.why
    assert refusals(run, "MX", "fork") > before


def test_a_record_claiming_an_earlier_place_fails(run: dict[str, Any]) -> None:
    settings: Settings = run["settings"]
    origin, index = first_of(run, "US")

    def append(
        msgs: list[tuple[int, bytes | None, bytes]],
    ) -> list[tuple[int, bytes | None, bytes]]:
        real = next(
            orjson.loads(v)
            for _, _, v in msgs
            if orjson.loads(v)["log"] == {"log": origin, "index": index}
        )
        forged = {**real, "alert_id": f"forged-{uuid.uuid4().hex[:8]}"}
        assert record_leaf_hash(forged) != record_leaf_hash(real)
        return [*msgs, (msgs[-1][0], forged["alert_id"].encode(), orjson.dumps(forged))]

    copy = copy_topic(run["lab"], settings.topic_audit, append)
    error, _ = tampered(run, "appended-record", "US", audit=copy)
    assert error.where.startswith("audit record") and "forged-" in error.where, error
    assert f"does not hash to leaf {index} of log {origin}" in error.why


def test_a_forked_checkpoint_signed_with_the_pipeline_key_fails(run: dict[str, Any]) -> None:
    settings: Settings = run["settings"]
    log: Log = run["log"]
    leaves = read_topic(settings, settings.topic_log_leaves)
    logs = assemble((r.where, orjson.loads(r.value)) for r in leaves)
    origin = max(logs, key=lambda o: len(logs[o].hashes))
    hashes = list(logs[origin].hashes)
    hashes[-1] = leaf_hash(b"another history")
    signer = Signer.parse(log.key_file.read_text())
    fork = sign_checkpoint(Checkpoint(origin, len(hashes), root(hashes)), signer)

    def append(
        msgs: list[tuple[int, bytes | None, bytes]],
    ) -> list[tuple[int, bytes | None, bytes]]:
        return [*msgs, (0, origin.encode(), fork.render().encode())]

    copy = copy_topic(run["lab"], settings.topic_log_checkpoints, append)
    before = refusals(run, "MX", "fork")
    error, _ = tampered(run, "fork", "MX", checkpoints=copy)
    assert error.where.startswith("checkpoint audit.log.checkpoints"), error
    assert "a fork" in error.why
    assert refusals(run, "MX", "fork") > before


def test_a_rollback_to_an_older_checkpoint_fails(run: dict[str, Any]) -> None:
    settings: Settings = run["settings"]

    def replay_old(
        msgs: list[tuple[int, bytes | None, bytes]],
    ) -> list[tuple[int, bytes | None, bytes]]:
        notes = [SignedNote.parse(v.decode()).checkpoint() for _, _, v in msgs]
        latest = {cp.origin: cp.size for cp in notes}
        old = next(i for i, cp in enumerate(notes) if cp.size < latest[cp.origin])
        return [*msgs, msgs[old]]

    copy = copy_topic(run["lab"], settings.topic_log_checkpoints, replay_old)
    before = refusals(run, "US", "rollback")
    error, _ = tampered(run, "rollback", "US", checkpoints=copy)
    assert error.where.startswith("checkpoint audit.log.checkpoints"), error
    assert "rolls" in error.why and "back from size" in error.why
    assert refusals(run, "US", "rollback") > before


def test_evidence_packages_of_every_rule_verify_offline_and_a_flipped_byte_fails(
    run: dict[str, Any], tmp_path: Path
) -> None:
    log: Log = run["log"]
    settings: Settings = run["settings"]
    log_keys, witnesses = read_trusted(log.trusted)
    records = [orjson.loads(r.value) for r in read_topic(settings, settings.topic_audit)]
    one_per_rule: dict[str, tuple[str, str]] = {}
    for r in records:
        one_per_rule.setdefault(r["rule_id"], (r["alert_id"], r["destination"]))
    assert set(one_per_rule) == {rule.id for rule in load_rules([REPO / "rules"]).rules}
    for rule_id, (alert_id, cc) in sorted(one_per_rule.items()):
        files = build_package(settings, alert_id, cc, witnesses)
        folder = tmp_path / rule_id
        folder.mkdir()
        for name, raw in files.items():
            (folder / name).write_bytes(raw)
        summary = verify_folder(folder, log.trusted)
        assert (summary.alert_id, summary.country) == (alert_id, cc)
        assert {n.split("-")[0].split(".")[0] for n in files} >= {
            "alert",
            "audit",
            "checkpoint",
            "policy",
            "rules",
            "explanation",
            "manifest",
        }, sorted(files)
        for name, raw in files.items():
            at = len(raw) // 2
            flipped = dict(files)
            flipped[name] = raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1 :]
            with pytest.raises(EvidenceError) as failed:
                verify_package(flipped, log_keys, witnesses)
            assert failed.value.file == name, (rule_id, name, failed.value)
        # a file changed with the manifest made to match is still caught, by its anchor
        for name in [n for n in files if n.startswith(("alert-", "policy-", "rules-"))]:
            changed = dict(files)
            changed[name] = (
                files[name].replace(b"{", b"{ ", 1)
                if name.startswith("alert-")
                else files[name] + b"\n# changed\n"
            )
            changed["manifest.json"] = manifest(changed, alert_id, cc)
            with pytest.raises(EvidenceError) as failed:
                verify_package(changed, log_keys, witnesses)
            assert failed.value.file == name or failed.value.file.startswith("audit-"), (
                name,
                failed.value,
            )


def test_the_review_report_states_its_checkpoints_and_both_cosignatures(
    run: dict[str, Any],
) -> None:
    settings: Settings = run["settings"]
    now = datetime.now(tz=UTC)
    report = build_report(settings, now - timedelta(days=1), now, keys=run["log"].trusted)
    assert report.totals.releases > 0
    logs = {orjson.loads(r.value)["log"]["log"] for r in read_topic(settings, settings.topic_audit)}
    assert {c.log for c in report.checkpoints} == logs
    for c in report.checkpoints:
        assert c.all_witnesses and c.verified and c.uncovered == 0, c
        assert c.cosigned_by == sorted(witness_name(cc) for cc in COUNTRIES)
    html = render_html(report)
    assert "these figures rest on the checkpoints" in html
    assert "cosigned by both witnesses" in html and "NOT cosigned" not in html


def test_the_worker_refuses_log_topics_that_could_lose_leaves(run: dict[str, Any]) -> None:
    lab: Lab = run["lab"]
    log: Log = run["log"]
    leaves = copy_topic(lab, log.topics["FUSION_TOPIC_LOG_LEAVES"])
    admin = KafkaAdminClient(bootstrap_servers=lab.bootstrap)
    admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, leaves, configs={"retention.ms": "604800000"})]
    )
    admin.close()
    worker = lab.worker(FUSION_TOPIC_LOG_LEAVES=leaves)
    assert worker.proc.wait(timeout=60) == 2
    assert f"topic {leaves}: retention.ms is '604800000', must be '-1'" in worker.logs()


def test_the_commands_verify_witness_and_name_what_fails(
    run: dict[str, Any], tmp_path: Path
) -> None:
    lab: Lab = run["lab"]
    log: Log = run["log"]
    env = {**lab.env}

    def fusion(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streams.cli", *args],
            env={**env, **extra},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )

    ok = fusion("audit-verify", "mx", "--keys", str(log.trusted))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("MX: ") and "audit records verified" in ok.stdout
    state = tmp_path / "witness-us.state"
    witnessed = fusion(
        "witness",
        "us",
        "--key",
        str(log.tmp / "witness-US.key"),
        "--keys",
        str(log.trusted),
        "--state",
        str(state),
        "--once",
    )
    assert witnessed.returncode == 0, witnessed.stderr
    assert orjson.loads(state.read_text())["logs"], "the witness kept what it cosigned"
    settings: Settings = run["settings"]
    origin, index = first_of(run, "MX")
    partition = int(origin.rsplit("/", 1)[1])

    def append(
        msgs: list[tuple[int, bytes | None, bytes]],
    ) -> list[tuple[int, bytes | None, bytes]]:
        forged = {
            "log": origin,
            "index": index,
            "destination": "MX",
            "leaf_hash": base64.b64encode(leaf_hash(b"forged")).decode(),
        }
        return [*msgs, (partition, None, orjson.dumps(forged))]

    copy = copy_topic(lab, settings.topic_log_leaves, append)
    failed = fusion("audit-verify", "mx", "--keys", str(log.trusted), FUSION_TOPIC_LOG_LEAVES=copy)
    assert failed.returncode == 1
    assert "fusion audit-verify MX: FAILED: audit record" in failed.stderr, failed.stderr
