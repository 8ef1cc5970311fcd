"""The transparency log's pure parts: signed notes and cosignatures (C2SP formats), a
partition's log across a snapshot and a crash, and what a country's verifier and a witness
refuse."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
import pytest

from engine.auditlog import (
    LogError,
    PartitionLog,
    Read,
    Where,
    Witnessed,
    assemble,
    canonical,
    verify_country,
    witness_check,
)
from engine.merkle import leaf_hash, root
from engine.notes import (
    COSIGNATURE_V1,
    Checkpoint,
    NoteError,
    SignedNote,
    Signer,
    Verifier,
    cosign,
    sign_checkpoint,
    verify_cosignature,
    verify_log_signature,
)

LOG_KEY = Signer.generate("border-fusion-log-test")
WITNESS = Signer.generate("border-fusion-witness-mx", COSIGNATURE_V1)


def record(alert: str, destination: str = "MX", version: int = 1) -> dict[str, Any]:
    return {
        "alert_id": alert,
        "version": version,
        "change": "raised",
        "rule_id": "r1",
        "destination": destination,
        "topic": f"alerts.{destination.lower()}",
        "released_at": "2026-12-02T03:00:00Z",
        "policy": {"id": "p", "version": "1", "sha256": "00"},
        "actions": [],
        "match": None,
    }


def test_canonical_json_is_rfc_8785() -> None:
    assert canonical({"b": 1, "a": "é", "c": [True, None]}) == (
        b'{"a":"\xc3\xa9","b":1,"c":[true,null]}'
    )


def test_key_texts_round_trip_and_hashes_are_the_note_format() -> None:
    verifier = LOG_KEY.verifier
    assert Verifier.parse(verifier.text()) == verifier
    assert Signer.parse(LOG_KEY.text()) == LOG_KEY
    want = hashlib.sha256(LOG_KEY.name.encode() + b"\n\x01" + verifier.public).digest()[:4]
    assert verifier.id == want
    name, hash_hex, _ = verifier.text().split("+", 2)
    assert (name, hash_hex) == (LOG_KEY.name, want.hex())
    with pytest.raises(NoteError, match="does not match the key"):
        Verifier.parse(f"{name}+00000000+{verifier.text().split('+', 2)[2]}")


def test_checkpoint_note_format_signature_and_cosignature() -> None:
    checkpoint = Checkpoint("border-fusion/audit/0", 3, leaf_hash(b"x"))
    note = sign_checkpoint(checkpoint, LOG_KEY)
    text = note.render()
    lines = text.split("\n")
    assert lines[:3] == ["border-fusion/audit/0", "3", base64.b64encode(checkpoint.root).decode()]
    assert lines[3] == "" and lines[4].startswith(f"\u2014 {LOG_KEY.name} ")
    assert len(base64.b64decode(lines[4].rsplit(" ", 1)[1])) == 4 + 64
    parsed = SignedNote.parse(text)
    assert parsed.checkpoint() == checkpoint
    assert verify_log_signature(parsed, [WITNESS.verifier, LOG_KEY.verifier]) == LOG_KEY.verifier
    cosigned = parsed.with_signature(cosign(parsed, WITNESS, 1_700_000_000))
    again = SignedNote.parse(cosigned.render())
    assert verify_cosignature(again, WITNESS.verifier) == 1_700_000_000
    tampered = SignedNote.parse(cosigned.render().replace("\n3\n", "\n4\n", 1))
    with pytest.raises(NoteError, match="does not verify"):
        verify_log_signature(tampered, [LOG_KEY.verifier])
    with pytest.raises(NoteError, match="does not verify"):
        verify_cosignature(tampered, WITNESS.verifier)
    other = Signer.generate("border-fusion-log-test")
    with pytest.raises(NoteError, match="not signed by any known log key"):
        verify_log_signature(parsed, [other.verifier])


def test_a_partition_log_survives_a_crash_without_fork_or_gap() -> None:
    log = PartitionLog("o/0")
    for i in range(3):
        log.append(record(f"a{i}"), bytes(16))
    entries, upto = log.cut()
    snapshot = log.to_doc()
    log.did_publish(upto)
    # after the snapshot: two more leaves published, then a crash before the next snapshot
    log.append(record("a3"), bytes(16))
    log.append(record("a4"), bytes(16))
    more, _ = log.cut()
    restored = PartitionLog.restore("o/0", snapshot, [*entries, *more])
    assert restored.tree == log.tree
    hashes = [base64.b64decode(e["leaf_hash"]) for e in [*entries, *more]]
    assert restored.published.root() == root(hashes)
    # a leaf lost in flight (never on the broker) is simply not adopted; the next is index 3
    partial = PartitionLog.restore("o/0", snapshot, entries)
    assert partial.tree.size == 3


def reads(topic: str, values: list[bytes]) -> list[Read]:
    return [Read(Where(topic, 0, i), v) for i, v in enumerate(values)]


def build(n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], PartitionLog]:
    log = PartitionLog("o/0")
    recs = [log.append(record(f"a{i}", "MX" if i % 2 else "US"), bytes([i]) * 16) for i in range(n)]
    entries, upto = log.cut()
    log.did_publish(upto)
    return recs, entries, log


def cosigned_note(log: PartitionLog) -> tuple[bytes, bytes]:
    note = sign_checkpoint(Checkpoint("o/0", log.tree.size, log.tree.root()), LOG_KEY)
    return note.render().encode(), note.with_signature(cosign(note, WITNESS, 1)).render().encode()


def verify(
    recs: list[dict[str, Any]],
    entries: list[dict[str, Any]],
    notes: list[bytes],
    cosigs: list[bytes],
) -> Any:
    return verify_country(
        "MX",
        reads("audit.sharing", [orjson.dumps(r) for r in recs]),
        reads("audit.log.leaves", [orjson.dumps(e) for e in entries]),
        reads("audit.log.checkpoints", notes),
        reads("audit.log.cosignatures", cosigs),
        [LOG_KEY.verifier],
        [WITNESS.verifier],
    )


def test_a_country_verifies_its_records_and_repeats() -> None:
    recs, entries, log = build(6)
    # a release written again after a restart is a new leaf: a repeat, not an error
    again = log.append({k: v for k, v in recs[1].items() if k not in ("salt", "log")}, b"r" * 16)
    more, upto = log.cut()
    log.did_publish(upto)
    note, cosig = cosigned_note(log)
    verified = verify([*recs, again], [*entries, *more], [note], [cosig])
    assert verified.records == 4 and verified.repeats == 1
    assert verified.cosigned == {"o/0": 7}


def test_what_a_country_verifier_refuses() -> None:
    recs, entries, log = build(6)
    note, cosig = cosigned_note(log)
    # a record of MX deleted
    with pytest.raises(LogError, match=r"leaf 1 of log o/0 .* no audit record hashes to it"):
        verify([r for r in recs if r["alert_id"] != "a1"], entries, [note], [cosig])
    # a record changed
    changed = [dict(r, rule_id="r2") if r["alert_id"] == "a3" else r for r in recs]
    with pytest.raises(LogError, match=r"audit record .*@3 \(alert a3.*does not hash to leaf 3"):
        verify(changed, entries, [note], [cosig])
    # not cosigned
    with pytest.raises(LogError, match="in no checkpoint cosigned by witness"):
        verify(recs, entries, [note], [])
    # a leaf missing from the leaves topic
    with pytest.raises(LogError, match=r"alert a1 .*log o/0 index 1\) cannot be verified"):
        verify(recs, [entries[0], *entries[2:]], [note], [cosig])


def test_what_a_witness_refuses() -> None:
    _, entries, log = build(6)
    logs = assemble((Where("l", 0, i), e) for i, e in enumerate(entries))
    note, _ = cosigned_note(log)
    found = witness_check(Read(Where("c", 0, 0), note), logs, [LOG_KEY.verifier], {})
    assert found is not None and found[1].size == 6
    last = {"o/0": Witnessed(6, log.tree.root())}
    assert witness_check(Read(Where("c", 0, 1), note), logs, [LOG_KEY.verifier], last) is None
    fork = list(logs["o/0"].hashes)
    fork[5] = leaf_hash(b"fork")
    forked = sign_checkpoint(Checkpoint("o/0", 6, root(fork)), LOG_KEY).render().encode()
    with pytest.raises(LogError, match="a fork") as e:
        witness_check(Read(Where("c", 0, 2), forked), logs, [LOG_KEY.verifier], last)
    assert e.value.kind == "fork"
    old = sign_checkpoint(Checkpoint("o/0", 4, root(logs["o/0"].hashes[:4])), LOG_KEY)
    with pytest.raises(LogError, match="back from size 6 to 4") as e:
        witness_check(Read(Where("c", 0, 3), old.render().encode()), logs, [LOG_KEY.verifier], last)
    assert e.value.kind == "rollback"
    stranger = Signer.generate("border-fusion-log-test")
    bad = sign_checkpoint(Checkpoint("o/0", 6, log.tree.root()), stranger).render().encode()
    with pytest.raises(LogError, match="not signed by any known log key") as e:
        witness_check(Read(Where("c", 0, 4), bad), logs, [LOG_KEY.verifier], {})
    assert e.value.kind == "signature"


def test_the_worker_refuses_log_topics_that_could_lose_leaves() -> None:
    from streams.settings import Settings
    from streams.topics import KEPT, declared_topics
    from streams.worker.auditlog import log_topics, topic_problems

    settings = Settings(_env_file=None)
    declared = {t.name: t.config for t in declared_topics(settings)}
    configs = {t: {**dict(KEPT), "segment.bytes": "1073741824"} for t in log_topics(settings)}
    assert all(declared[t] == KEPT for t in log_topics(settings))
    assert declared[settings.topic_audit] == {"retention.ms": str(365 * 24 * 3_600_000)}
    logged = Settings(_env_file=None, log_signing_key_file="/keys/log.key")
    kept = {t.name: t.config for t in declared_topics(logged)}[logged.topic_audit]
    assert kept == KEPT, "with the log on, every leaf keeps its record"
    assert topic_problems(settings, configs) == []
    configs[settings.topic_log_leaves]["retention.ms"] = "604800000"
    configs[settings.topic_log_checkpoints]["cleanup.policy"] = "compact"
    del configs[settings.topic_archive]
    assert topic_problems(settings, configs) == [
        "topic audit.log.leaves: retention.ms is '604800000', must be '-1'",
        "topic audit.log.checkpoints: cleanup.policy is 'compact', must be 'delete'",
        "topic audit.archive does not exist",
    ]


def test_keygen_commands_write_a_private_key_file_and_its_public_key(tmp_path: Any) -> None:
    import os
    import stat

    from streams.cli import main
    from streams.tools.transparency.keys import read_signer, read_trusted

    log_key, witness_key = tmp_path / "log.key", tmp_path / "witness-mx.key"
    assert main(["log", "keygen", "border-fusion-log-2026", "--out", str(log_key)]) == 0
    assert main(["witness", "keygen", "mx", "--out", str(witness_key)]) == 0
    assert stat.S_IMODE(os.stat(log_key).st_mode) == 0o600
    assert read_signer(witness_key).kind == COSIGNATURE_V1
    trusted = tmp_path / "trusted"
    trusted.write_text(
        "# the log's keys, old ones too, and each witness's\n"
        + (tmp_path / "log.key.pub").read_text()
        + (tmp_path / "witness-mx.key.pub").read_text()
    )
    log_keys, witnesses = read_trusted(trusted)
    assert [k.name for k in log_keys] == ["border-fusion-log-2026"]
    assert [k.name for k in witnesses] == ["border-fusion-witness-mx"]
    assert read_signer(log_key).verifier == log_keys[0]
    # a key file is never overwritten
    assert main(["log", "keygen", "border-fusion-log-2026", "--out", str(log_key)]) == 2
