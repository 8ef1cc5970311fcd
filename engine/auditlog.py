"""The transparency log over audit records: a log per partition of the worker's correlate
stage, its leaves (salted audit records in RFC 8785 canonical JSON), and what a witness and a
country's verifier check of it. Pure: the worker, the witness and `fusion audit-verify` feed
it what they read from the broker.

A log's state is a `CompactRange` kept in its partition's snapshot; leaves appended since the
snapshot are published (as hashes, on `audit.log.leaves`) before the next snapshot is
written, and a checkpoint signs only published leaves.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import rfc8785

from engine.merkle import (
    CompactRange,
    ProofError,
    consistency_proof,
    leaf_hash,
    verify_consistency,
)
from engine.notes import (
    Checkpoint,
    NoteError,
    SignedNote,
    Verifier,
    verify_cosignature,
    verify_log_signature,
)

SALT_BYTES = 16
# Fields of a record that differ between two releases of the same alert version to the same
# destination written again after a restart.
REPEAT_FIELDS = ("salt", "log", "released_at")


def log_origin(prefix: str, partition: int) -> str:
    """The origin line of the log of a partition: `border-fusion/audit/3`."""
    return f"{prefix}/{partition}"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def canonical(record: Mapping[str, Any]) -> bytes:
    """The leaf: the record in RFC 8785 canonical JSON."""
    return rfc8785.dumps(dict(record))


def record_leaf_hash(record: Mapping[str, Any]) -> bytes:
    return leaf_hash(canonical(record))


def repeat_key(record: Mapping[str, Any]) -> tuple[str, str, int]:
    """What identifies a release: (alert_id, destination, version)."""
    return (str(record["alert_id"]), str(record["destination"]), int(record.get("version", 1)))


@dataclass
class PartitionLog:
    """The log of one partition: every leaf appended (`tree`), those not yet published, and
    the range of those published (the most a checkpoint may sign)."""

    origin: str
    tree: CompactRange = field(default_factory=CompactRange)
    published: CompactRange = field(default_factory=CompactRange)
    pending: list[dict[str, Any]] = field(default_factory=list)
    signed_size: int = -1
    signed_at: float = 0.0

    def append(self, record: Mapping[str, Any], salt: bytes) -> dict[str, Any]:
        """The record, salted and placed at the end of the log; its leaf is appended."""
        index = self.tree.size
        placed = {**record, "salt": b64(salt), "log": {"log": self.origin, "index": index}}
        digest = record_leaf_hash(placed)
        self.tree = self.tree.append(digest)
        self.pending.append(
            {
                "log": self.origin,
                "index": index,
                "destination": placed["destination"],
                "leaf_hash": b64(digest),
            }
        )
        return placed

    def cut(self) -> tuple[list[dict[str, Any]], CompactRange]:
        """The leaves to publish with a snapshot taken now, and the range they complete."""
        entries, self.pending = self.pending, []
        return entries, self.tree

    def unpublished(self, entries: list[dict[str, Any]]) -> None:
        """Publishing `entries` failed: they go out with the next snapshot."""
        self.pending[:0] = entries

    def did_publish(self, upto: CompactRange) -> None:
        if upto.size > self.published.size:
            self.published = upto

    def to_doc(self) -> dict[str, Any]:
        return {"origin": self.origin, **self.tree.to_doc()}

    @classmethod
    def restore(
        cls, origin: str, doc: Mapping[str, Any] | None, tail: Iterable[LeafEntryDoc]
    ) -> PartitionLog:
        """The log from a snapshot's `doc`, with the leaves published after that snapshot
        (`tail`: the end of the partition's leaves, in order) adopted, so a log never forks
        or skips whatever the crash."""
        tree = CompactRange()
        if doc is not None:
            if doc.get("origin") != origin:
                raise ValueError(f"log of {doc.get('origin')!r} in the snapshot of {origin}")
            tree = CompactRange.from_doc(dict(doc))
        for entry in tail:
            if entry["log"] == origin and entry["index"] == tree.size:
                tree = tree.append(base64.b64decode(entry["leaf_hash"]))
        return cls(origin, tree, tree)


LeafEntryDoc = Mapping[str, Any]


# -- reading back --------------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """Where a message was read."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class Read:
    """A message as read, and where."""

    where: Where
    value: bytes


class LogError(Exception):
    """The first thing that fails verification, and where it is."""

    def __init__(
        self,
        where: str,
        why: str,
        kind: str = "invalid",
        leaves: tuple[str, int, int] | None = None,
    ) -> None:
        super().__init__(f"{where}: {why}")
        self.where = where
        self.why = why
        self.kind = kind
        self.leaves = leaves
        """The leaves it concerns, if leaves: (log, first index, last index + 1)."""


@dataclass
class LogLeaves:
    """A log's leaves as published: hash, destination and where each was read."""

    origin: str
    hashes: list[bytes] = field(default_factory=list)
    destinations: list[str] = field(default_factory=list)
    wheres: list[Where] = field(default_factory=list)

    def root(self, size: int) -> bytes:
        compact = CompactRange()
        for digest in self.hashes[:size]:
            compact = compact.append(digest)
        return compact.root()


def assemble(leaves: Iterable[tuple[Where, Mapping[str, Any]]]) -> dict[str, LogLeaves]:
    """Each log's leaves from the entries of `audit.log.leaves` in the order read. An entry
    repeating an index with the same hash (published again after a failed write) is skipped;
    one with another hash, or leaving a gap, is a LogError."""
    logs: dict[str, LogLeaves] = {}
    for where, entry in leaves:
        origin, index = str(entry["log"]), int(entry["index"])
        log = logs.setdefault(origin, LogLeaves(origin))
        digest = base64.b64decode(str(entry["leaf_hash"]))
        if index < len(log.hashes):
            if log.hashes[index] != digest:
                raise LogError(
                    f"leaf entry {where}",
                    f"claims index {index} of log {origin}, which holds another leaf "
                    f"(read at {log.wheres[index]})",
                    "fork",
                    (origin, index, index + 1),
                )
            continue
        if index > len(log.hashes):
            missing = f"{len(log.hashes)}" + (
                f"..{index - 1}" if index - 1 > len(log.hashes) else ""
            )
            raise LogError(
                f"leaf entry {where}",
                f"log {origin} skips from leaf {len(log.hashes)} to {index}: "
                f"leaf {missing} missing",
                "gap",
                (origin, len(log.hashes), index),
            )
        log.hashes.append(digest)
        log.destinations.append(str(entry["destination"]))
        log.wheres.append(where)
    return logs


def _parse_note(read: Read, what: str) -> tuple[SignedNote, Checkpoint]:
    try:
        note = SignedNote.parse(read.value.decode())
        return note, note.checkpoint()
    except (NoteError, UnicodeDecodeError) as e:
        raise LogError(f"{what} {read.where}", f"unreadable: {e}", "signature") from e


def check_checkpoint(
    note: SignedNote,
    checkpoint: Checkpoint,
    logs: Mapping[str, LogLeaves],
    log_keys: Sequence[Verifier],
    name: str,
) -> None:
    """The checkpoint is signed by a log key and is the tree hash of its log's leaves."""
    try:
        verify_log_signature(note, log_keys)
    except NoteError as e:
        raise LogError(name, str(e), "signature") from e
    log = logs.get(checkpoint.origin)
    have = 0 if log is None else len(log.hashes)
    if checkpoint.size > have:
        raise LogError(
            name,
            f"signs {checkpoint.size} leaves of {checkpoint.origin}, the leaves topic holds {have}",
            "gap",
        )
    if log is not None and log.root(checkpoint.size) != checkpoint.root:
        raise LogError(
            name,
            f"its tree hash is not that of the first {checkpoint.size} leaves of "
            f"{checkpoint.origin} on the leaves topic (a fork, or the leaves were changed)",
            "fork",
        )


def check_consistent(old: Checkpoint, new: Checkpoint, log: LogLeaves | None, name: str) -> None:
    """`new` extends `old`, proved by a consistency proof over the log's leaves."""
    if new.size < old.size:
        raise LogError(
            name,
            f"rolls {new.origin} back from size {old.size} to {new.size}",
            "rollback",
        )
    if old.size == 0:
        return
    proof: list[bytes] = []
    if new.size > old.size and log is not None:
        proof = consistency_proof(old.size, log.hashes[: new.size])
    try:
        verify_consistency(old.size, new.size, old.root, new.root, proof)
    except ProofError as e:
        raise LogError(name, f"not consistent with size {old.size}: {e}", "fork") from e


# -- the witness ---------------------------------------------------------------------------

Refusal = Literal["signature", "fork", "rollback", "gap", "invalid"]


@dataclass(frozen=True)
class Witnessed:
    """What a witness has cosigned of one log: its last checkpoint."""

    size: int
    root: bytes

    def to_doc(self) -> dict[str, Any]:
        return {"size": self.size, "root": b64(self.root)}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Witnessed:
        return cls(int(doc["size"]), base64.b64decode(str(doc["root"])))


def witness_check(
    read: Read,
    logs: Mapping[str, LogLeaves],
    log_keys: Sequence[Verifier],
    last: Mapping[str, Witnessed],
) -> tuple[SignedNote, Checkpoint] | None:
    """The checkpoint to cosign, None if it adds nothing to what was cosigned; LogError if it
    is to be refused (bad signature, not the tree of the published leaves, a fork or a
    rollback from the last checkpoint cosigned)."""
    name = f"checkpoint {read.where}"
    note, checkpoint = _parse_note(read, "checkpoint")
    check_checkpoint(note, checkpoint, logs, log_keys, name)
    before = last.get(checkpoint.origin)
    if before is not None:
        old = Checkpoint(checkpoint.origin, before.size, before.root)
        check_consistent(old, checkpoint, logs.get(checkpoint.origin), name)
        if checkpoint.size == before.size:
            return None
    return note, checkpoint


# -- a country's verification --------------------------------------------------------------


@dataclass
class Verified:
    """What `verify_country` found to hold."""

    records: int = 0
    repeats: int = 0
    unlogged_repeats: int = 0
    checkpoints: int = 0
    cosigned: dict[str, int] = field(default_factory=dict)
    logs: dict[str, int] = field(default_factory=dict)
    latest: dict[str, Witnessed] = field(default_factory=dict)
    """The latest checkpoint verified of each log."""


def _content(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in REPEAT_FIELDS}


def verify_country(
    country: str,
    records: Sequence[Read],
    leaves: Sequence[Read],
    checkpoints: Sequence[Read],
    cosignatures: Sequence[Read],
    log_keys: Sequence[Verifier],
    witness_keys: Sequence[Verifier],
    known: Mapping[str, Witnessed] | None = None,
) -> Verified:
    """Check that every audit record released to `country` is a leaf of its log, every leaf
    to `country` has its record, every checkpoint is signed and consistent with the leaves
    and with the one before, every cosignature verifies, and every record is covered by a
    checkpoint cosigned by each of `witness_keys`. `known`: checkpoints verified before (a
    rollback or fork from them fails). Raises LogError naming the first failure."""
    docs: list[tuple[Read, dict[str, Any]]] = []
    for read in records:
        try:
            doc = orjson.loads(read.value)
        except orjson.JSONDecodeError as e:
            raise LogError(f"audit record {read.where}", f"not JSON: {e}") from e
        if doc.get("destination") == country:
            docs.append((read, doc))
    by_place: dict[tuple[str, int], list[tuple[Read, dict[str, Any]]]] = {}
    for read, doc in docs:
        place = doc.get("log")
        if isinstance(place, dict):
            by_place.setdefault((str(place["log"]), int(place["index"])), []).append((read, doc))

    def record_name(read: Read, doc: Mapping[str, Any]) -> str:
        return (
            f"audit record {read.where} (alert {doc.get('alert_id')} to {country}, "
            f"version {doc.get('version', 1)})"
        )

    entries: list[tuple[Where, Mapping[str, Any]]] = []
    for read in leaves:
        try:
            entries.append((read.where, orjson.loads(read.value)))
        except orjson.JSONDecodeError as e:
            raise LogError(f"leaf entry {read.where}", f"not JSON: {e}") from e
    try:
        logs = assemble(entries)
    except LogError as e:
        # name the record whose leaf is missing or taken, if it is one of this country's
        if e.leaves is not None:
            origin, first, stop = e.leaves
            for index in range(first, stop):
                for read, doc in by_place.get((origin, index), []):
                    raise LogError(
                        record_name(read, doc),
                        f"its leaf (log {origin} index {index}) cannot be verified: {e}",
                        e.kind,
                    ) from e
        raise

    out = Verified(logs={o: len(log.hashes) for o, log in logs.items()})
    included: dict[tuple[str, str, int], dict[str, Any]] = {}
    loose: list[tuple[Read, dict[str, Any]]] = []
    matched: set[tuple[str, int]] = set()
    for read, doc in docs:
        place = doc.get("log")
        if not isinstance(place, dict):
            raise LogError(record_name(read, doc), "has no place in the transparency log")
        origin, index = str(place["log"]), int(place["index"])
        log = logs.get(origin)
        if log is None or index >= len(log.hashes):
            raise LogError(
                record_name(read, doc),
                f"claims leaf {index} of log {origin}, which the leaves topic does not hold",
                "gap",
            )
        if log.hashes[index] != record_leaf_hash(doc):
            loose.append((read, doc))
            continue
        out.records += 1
        if (origin, index) in matched:  # the same record read twice
            out.repeats += 1
            continue
        matched.add((origin, index))
        key = repeat_key(doc)
        if key in included:
            out.repeats += 1
        included.setdefault(key, doc)
    for read, doc in loose:
        twin = included.get(repeat_key(doc))
        if twin is None or _content(twin) != _content(doc):
            place = doc["log"]
            raise LogError(
                record_name(read, doc),
                f"does not hash to leaf {place['index']} of log {place['log']} (changed, or "
                "written in a place that is not its own)",
                "fork",
            )
        out.unlogged_repeats += 1
    for origin, log in sorted(logs.items()):
        for index, destination in enumerate(log.destinations):
            if destination == country and (origin, index) not in matched:
                raise LogError(
                    f"leaf {index} of log {origin} ({log.wheres[index]})",
                    f"released to {country}, but no audit record hashes to it (deleted or changed)",
                    "gap",
                )

    latest: dict[str, tuple[Checkpoint, str]] = {}
    for read in checkpoints:
        name = f"checkpoint {read.where}"
        note, checkpoint = _parse_note(read, "checkpoint")
        check_checkpoint(note, checkpoint, logs, log_keys, name)
        before = latest.get(checkpoint.origin)
        if before is not None:
            check_consistent(before[0], checkpoint, logs.get(checkpoint.origin), name)
        latest[checkpoint.origin] = (checkpoint, name)
        out.checkpoints += 1
    for origin, seen in (known or {}).items():
        now = latest.get(origin)
        if now is None:
            raise LogError(f"log {origin}", "verified before, now without any checkpoint")
        check_consistent(Checkpoint(origin, seen.size, seen.root), now[0], logs.get(origin), now[1])
    out.latest = {o: Witnessed(cp.size, cp.root) for o, (cp, _) in latest.items()}

    loose_reads = {id(read) for read, _ in loose}
    cosigned: dict[tuple[str, str], int] = {}
    for read in cosignatures:
        name = f"cosigned checkpoint {read.where}"
        note, checkpoint = _parse_note(read, "cosigned checkpoint")
        check_checkpoint(note, checkpoint, logs, log_keys, name)
        for witness in witness_keys:
            if note.by(witness) is None:
                continue
            try:
                verify_cosignature(note, witness)
            except NoteError as e:
                raise LogError(name, str(e), "signature") from e
            slot = (checkpoint.origin, witness.name)
            cosigned[slot] = max(cosigned.get(slot, 0), checkpoint.size)
    for origin in logs:
        sizes = [cosigned.get((origin, w.name), 0) for w in witness_keys]
        out.cosigned[origin] = min(sizes) if sizes else 0
    for read, doc in docs:
        place = doc["log"]
        origin, index = str(place["log"]), int(place["index"])
        if id(read) in loose_reads:
            continue
        for witness in witness_keys:
            size = cosigned.get((origin, witness.name), 0)
            if index >= size:
                raise LogError(
                    record_name(read, doc),
                    f"leaf {index} of log {origin} is in no checkpoint cosigned by witness "
                    f"{witness.name} (it cosigned {size} leaves)",
                    "uncosigned",
                )
    return out
