"""The transparency-log checkpoints a report's figures rest on: per log holding the report's
records, the smallest checkpoint every witness cosigned that covers them all (or else the
largest there is, said to fall short)."""

from __future__ import annotations

import base64
from collections.abc import Sequence

from engine.notes import NoteError, SignedNote, Verifier, verify_cosignature, verify_log_signature
from schemas.audit import AuditRecord
from streams.tools.report.model import LogCheckpoint


def merged_notes(notes: Sequence[bytes]) -> list[SignedNote]:
    """Checkpoints and cosigned copies, one note per checkpoint with every signature."""
    merged: dict[str, SignedNote] = {}
    for raw in notes:
        try:
            note = SignedNote.parse(raw.decode())
        except (NoteError, UnicodeDecodeError):
            continue
        have = merged.get(note.text)
        if have is not None:
            for signature in note.signatures:
                have = have.with_signature(signature)
            note = have
        merged[note.text] = note
    return list(merged.values())


def _witnesses_of(
    note: SignedNote, log_keys: Sequence[Verifier] | None, witnesses: Sequence[Verifier] | None
) -> list[str] | None:
    """The witnesses that cosigned the note (checked if keys are given); None if the log's
    own signature does not verify."""
    if log_keys is None or witnesses is None:
        names = [s.name for s in note.signatures[1:]]
        return sorted(set(names))
    try:
        verify_log_signature(note, log_keys)
    except NoteError:
        return None
    out: list[str] = []
    for witness in witnesses:
        try:
            verify_cosignature(note, witness)
        except NoteError:
            continue
        out.append(witness.name)
    return sorted(set(out))


def anchors(
    records: Sequence[AuditRecord],
    notes: Sequence[bytes],
    log_keys: Sequence[Verifier] | None = None,
    witnesses: Sequence[Verifier] | None = None,
) -> list[LogCheckpoint]:
    """Per log, the checkpoint the records rest on."""
    needed: dict[str, list[int]] = {}
    for r in records:
        if r.log is not None:
            needed.setdefault(r.log.log, []).append(r.log.index)
    every = sorted({w.name for w in witnesses}) if witnesses else None
    candidates: dict[str, list[tuple[int, SignedNote, list[str]]]] = {}
    for note in merged_notes(notes):
        cosigners = _witnesses_of(note, log_keys, witnesses)
        if cosigners is None:
            continue
        checkpoint = note.checkpoint()
        candidates.setdefault(checkpoint.origin, []).append((checkpoint.size, note, cosigners))
    out: list[LogCheckpoint] = []
    for origin, indexes in sorted(needed.items()):
        need = max(indexes) + 1
        options = sorted(candidates.get(origin, []), key=lambda c: c[0])
        if not options:
            continue

        def full(names: list[str]) -> bool:
            return names == every if every is not None else len(names) >= 2

        good = [c for c in options if c[0] >= need and full(c[2])]
        size, note, cosigners = good[0] if good else options[-1]
        covered = sum(1 for i in indexes if i < size)
        out.append(
            LogCheckpoint(
                log=origin,
                size=size,
                root=base64.b64encode(note.checkpoint().root).decode(),
                cosigned_by=cosigners,
                all_witnesses=full(cosigners),
                verified=log_keys is not None,
                records=covered,
                uncovered=len(indexes) - covered,
            )
        )
    return out
