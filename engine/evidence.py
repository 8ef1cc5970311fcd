"""Evidence packages: one alert as one country received it, with everything needed to show,
offline and with only the public keys, that it is what the pipeline released and audited.

A package is a folder of files (names below) and `manifest.json`, the SHA-256 of every other
file in RFC 8785 canonical JSON. Each file is also anchored: audit records by an inclusion
proof to a checkpoint signed by the log and cosigned by every witness; the alert versions by
the `alert_sha256` of their audit records; the policy and rule file by the hashes the audit
records name; the explanation by the alert itself. One changed byte anywhere fails, naming
the file.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from engine.auditlog import canonical, record_leaf_hash
from engine.merkle import ProofError, verify_inclusion
from engine.notes import (
    NoteError,
    SignedNote,
    Verifier,
    verify_cosignature,
    verify_log_signature,
)

MANIFEST = "manifest.json"
FORMAT = "border-fusion-evidence/1"


class EvidenceError(Exception):
    """The first file of a package that fails, and why."""

    def __init__(self, file: str, why: str) -> None:
        super().__init__(f"{file}: {why}")
        self.file = file
        self.why = why


def sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def manifest(files: Mapping[str, bytes], alert_id: str, country: str) -> bytes:
    """The manifest of the other files, with the SHA-256 of its own other fields (so that a
    changed byte in it is told from a changed file)."""
    body = {
        "format": FORMAT,
        "alert_id": alert_id,
        "country": country,
        "files": {name: sha256(raw) for name, raw in sorted(files.items()) if name != MANIFEST},
    }
    return canonical({**body, "sha256": sha256(canonical(body))})


def proof_doc(log: str, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    return canonical(
        {
            "log": log,
            "index": index,
            "tree_size": size,
            "proof": [base64.b64encode(p).decode() for p in proof],
        }
    )


@dataclass(frozen=True)
class PackageSummary:
    alert_id: str
    country: str
    versions: int
    records: int
    checkpoints: int


def _json(files: Mapping[str, bytes], name: str) -> Any:
    try:
        return orjson.loads(files[name])
    except orjson.JSONDecodeError as e:
        raise EvidenceError(name, f"not JSON: {e}") from e


def verify_package(
    files: Mapping[str, bytes], log_keys: Sequence[Verifier], witness_keys: Sequence[Verifier]
) -> PackageSummary:
    """Check a package's files (name -> bytes); EvidenceError names the first that fails."""
    if MANIFEST not in files:
        raise EvidenceError(MANIFEST, "missing")
    listed = _json(files, MANIFEST)
    if not isinstance(listed, dict) or listed.get("format") != FORMAT:
        raise EvidenceError(MANIFEST, f"not a manifest of format {FORMAT}")
    if canonical(listed) != files[MANIFEST]:
        raise EvidenceError(MANIFEST, "not in canonical form (changed)")
    body = {k: v for k, v in listed.items() if k != "sha256"}
    if sha256(canonical(body)) != listed.get("sha256"):
        raise EvidenceError(MANIFEST, "its own SHA-256 does not match (changed)")
    hashes: dict[str, str] = listed["files"]
    for name in sorted(set(files) - {MANIFEST}):
        if name not in hashes:
            raise EvidenceError(name, "not listed in the manifest")
        if sha256(files[name]) != hashes[name]:
            raise EvidenceError(name, "its SHA-256 differs from the manifest's")
    for name in sorted(set(hashes) - set(files)):
        raise EvidenceError(name, "listed in the manifest but missing")
    alert_id, country = str(listed["alert_id"]), str(listed["country"])

    checkpoints: dict[tuple[str, int], bytes] = {}
    for name in sorted(n for n in files if n.endswith(".note")):
        try:
            note = SignedNote.parse(files[name].decode())
            verify_log_signature(note, log_keys)
            for witness in witness_keys:
                verify_cosignature(note, witness)
            checkpoint = note.checkpoint()
        except (NoteError, UnicodeDecodeError) as e:
            raise EvidenceError(name, str(e)) from e
        checkpoints[(checkpoint.origin, checkpoint.size)] = checkpoint.root

    records: list[tuple[str, dict[str, Any]]] = []
    for name in sorted(n for n in files if n.startswith("audit-") and not n.endswith(".proof")):
        record = _json(files, name)
        if record.get("alert_id") != alert_id or record.get("destination") != country:
            raise EvidenceError(name, f"not a release of {alert_id} to {country}")
        proof = _json(files, f"{name.removesuffix('.json')}.proof")
        key = (str(proof["log"]), int(proof["tree_size"]))
        if key not in checkpoints:
            raise EvidenceError(name, f"no cosigned checkpoint of {key[0]} at size {key[1]}")
        place = record.get("log") or {}
        if (place.get("log"), place.get("index")) != (proof["log"], proof["index"]):
            raise EvidenceError(name, "its place in the log is not the one its proof is for")
        try:
            verify_inclusion(
                int(proof["index"]),
                key[1],
                record_leaf_hash(record),
                [base64.b64decode(p) for p in proof["proof"]],
                checkpoints[key],
            )
        except ProofError as e:
            raise EvidenceError(name, f"not in the cosigned checkpoint: {e}") from e
        records.append((name, record))
    if not records:
        raise EvidenceError(MANIFEST, "no audit record in the package")

    alerts = {sha256(raw): n for n, raw in files.items() if n.startswith("alert-")}
    audited = {str(r.get("alert_sha256")) for _, r in records}
    for digest, name in sorted(alerts.items(), key=lambda kv: kv[1]):
        if digest not in audited:
            raise EvidenceError(name, "no audit record in the package released these bytes")
    for name, record in records:
        if str(record.get("alert_sha256")) not in alerts:
            raise EvidenceError(name, "the alert it released is not in the package")

    policies = {sha256(raw): n for n, raw in files.items() if n.startswith("policy-")}
    rule_files = {sha256(raw): n for n, raw in files.items() if n.startswith("rules-")}
    for name, record in records:
        if record["policy"]["sha256"] not in policies:
            raise EvidenceError(name, "the policy it was released under is not in the package")
        rule_file = record.get("rule_file")
        if rule_file is None or rule_file["sha256"] not in rule_files:
            raise EvidenceError(name, "the rule file in force is not in the package")
    for digest, name in {**policies, **rule_files}.items():
        if not any(
            digest in (r["policy"]["sha256"], (r.get("rule_file") or {}).get("sha256"))
            for _, r in records
        ):
            raise EvidenceError(name, "no audit record in the package names this file's hash")

    latest = max(
        (orjson.loads(files[n]) for n in alerts.values()), key=lambda a: int(a.get("version", 1))
    )
    if "explanation.json" in files:
        if files["explanation.json"] != canonical({"explanation": latest.get("explanation")}):
            raise EvidenceError("explanation.json", "not the explanation the alert carries")
    return PackageSummary(alert_id, country, len(alerts), len(records), len(checkpoints))
