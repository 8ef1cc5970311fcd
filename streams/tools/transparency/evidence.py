"""`fusion evidence ALERT_ID CC --keys TRUSTED --out DIR`: an evidence package of one alert
as one country received it (every version as received; its audit records, each with an
inclusion proof; the checkpoint covering them, signed by the log and cosigned by every
witness in TRUSTED; the sharing policy and the rule file in force, from `audit.archive`; the
explanation; a manifest of file hashes). `fusion evidence-verify DIR --keys TRUSTED` checks
a package offline, with only the public keys, naming the first file that fails.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from engine.auditlog import LogLeaves, assemble, canonical, record_leaf_hash
from engine.evidence import (
    MANIFEST,
    EvidenceError,
    PackageSummary,
    manifest,
    proof_doc,
    sha256,
    verify_package,
)
from engine.merkle import inclusion_proof
from engine.notes import NoteError, SignedNote, Verifier
from streams.settings import Settings
from streams.tools.transparency.keys import read_trusted
from streams.tools.transparency.read import read_topic


class PackageError(Exception):
    """The package cannot be made: what is missing from the broker."""


def cosigned_checkpoints(
    settings: Settings, witnesses: Sequence[Verifier]
) -> dict[str, list[SignedNote]]:
    """Per log, its checkpoints cosigned by every witness (their cosignatures merged into
    one note), smallest first."""
    merged: dict[str, SignedNote] = {}
    for read in read_topic(settings, settings.topic_log_cosignatures):
        note = SignedNote.parse(read.value.decode())
        have = merged.get(note.text)
        if have is None:
            merged[note.text] = note
            continue
        for signature in note.signatures:
            have = have.with_signature(signature)
        merged[note.text] = have
    out: dict[str, list[SignedNote]] = {}
    for note in merged.values():
        if all(note.by(w) is not None for w in witnesses):
            out.setdefault(note.checkpoint().origin, []).append(note)
    for notes in out.values():
        notes.sort(key=lambda n: n.checkpoint().size)
    return out


def build(
    settings: Settings, alert_id: str, country: str, witnesses: Sequence[Verifier]
) -> dict[str, bytes]:
    """The package's files, by name."""
    files: dict[str, bytes] = {}
    versions = [
        r.value
        for r in read_topic(settings, settings.alert_topic(country))
        if orjson.loads(r.value).get("alert_id") == alert_id
    ]
    if not versions:
        raise PackageError(f"no alert {alert_id} on {settings.alert_topic(country)}")
    logs: dict[str, LogLeaves] = assemble(
        (r.where, orjson.loads(r.value)) for r in read_topic(settings, settings.topic_log_leaves)
    )
    records: list[dict[str, Any]] = []
    raw_records: list[bytes] = []
    for r in read_topic(settings, settings.topic_audit):
        doc = orjson.loads(r.value)
        if doc.get("alert_id") != alert_id or doc.get("destination") != country:
            continue
        place = doc.get("log") or {}
        log = logs.get(str(place.get("log")))
        index = int(place.get("index", -1))
        if log is None or not 0 <= index < len(log.hashes):
            continue
        if log.hashes[index] != record_leaf_hash(doc):
            continue  # a repeat whose leaf never reached the broker: its twin is logged
        records.append(doc)
        raw_records.append(r.value)
    if not records:
        raise PackageError(f"no logged audit record of {alert_id} released to {country}")
    released = {str(d.get("alert_sha256")) for d in records}
    n = 0
    for raw in versions:
        if sha256(raw) in released:
            n += 1
            files[f"alert-v{orjson.loads(raw).get('version', 1)}-{n}.json"] = raw
    cosigned = cosigned_checkpoints(settings, witnesses)
    for i, (doc, raw) in enumerate(zip(records, raw_records, strict=True), 1):
        origin, index = str(doc["log"]["log"]), int(doc["log"]["index"])
        note = next((nt for nt in cosigned.get(origin, []) if nt.checkpoint().size > index), None)
        if note is None:
            raise PackageError(
                f"leaf {index} of {origin} is in no checkpoint every witness cosigned"
            )
        size = note.checkpoint().size
        files[f"audit-{i}.json"] = raw
        proof = inclusion_proof(index, logs[origin].hashes[:size])
        files[f"audit-{i}.proof"] = proof_doc(origin, index, size, proof)
        files[f"checkpoint-{origin.rsplit('/', 1)[-1]}-{size}.note"] = note.render().encode()
    wanted = {d["policy"]["sha256"] for d in records} | {
        d["rule_file"]["sha256"] for d in records if d.get("rule_file")
    }
    for r in read_topic(settings, settings.topic_archive):
        doc = orjson.loads(r.value)
        if doc["sha256"] in wanted:
            kind = "policy" if doc["kind"] == "policy" else "rules"
            files[f"{kind}-{doc['name']}"] = doc["content"].encode()
            wanted.discard(doc["sha256"])
    if wanted:
        raise PackageError(f"files not on {settings.topic_archive}: {sorted(wanted)}")
    latest = max((orjson.loads(v) for v in versions), key=lambda a: int(a.get("version", 1)))
    files["explanation.json"] = canonical({"explanation": latest.get("explanation")})
    files[MANIFEST] = manifest(files, alert_id, country)
    return files


def read_package(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def verify_folder(folder: Path, keys: Path) -> PackageSummary:
    log_keys, witnesses = read_trusted(keys)
    return verify_package(read_package(folder), log_keys, witnesses)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="fusion evidence", description=(__doc__ or "").split("\n\n")[0]
    )
    ap.add_argument("alert_id")
    ap.add_argument("country")
    ap.add_argument("--keys", type=Path, required=True, help="trusted public keys")
    ap.add_argument("--out", type=Path, required=True, help="the folder to write (new)")
    a = ap.parse_args(argv)
    country = a.country.upper()
    try:
        _, witnesses = read_trusted(a.keys)
        files = build(Settings(), a.alert_id, country, witnesses)
    except (PackageError, NoteError) as e:
        print(f"fusion evidence: {e}", file=sys.stderr)
        return 1
    a.out.mkdir(parents=True, exist_ok=False)
    for name, raw in files.items():
        (a.out / name).write_bytes(raw)
    print(f"{a.out}: {len(files)} files for {a.alert_id} released to {country}")
    return 0


def verify_main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fusion evidence-verify")
    ap.add_argument("folder", type=Path)
    ap.add_argument("--keys", type=Path, required=True, help="trusted public keys")
    a = ap.parse_args(argv)
    try:
        summary = verify_folder(a.folder, a.keys)
    except EvidenceError as e:
        print(f"fusion evidence-verify: FAILED: {e}", file=sys.stderr)
        return 1
    except NoteError as e:
        print(f"fusion evidence-verify: {e}", file=sys.stderr)
        return 2
    print(
        f"{a.folder}: alert {summary.alert_id} to {summary.country}: {summary.versions} "
        f"versions, {summary.records} audit records in {summary.checkpoints} cosigned "
        "checkpoints: verified"
    )
    return 0
