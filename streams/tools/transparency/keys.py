"""Signing keys of the transparency log and of the witnesses, as note key files.

`fusion log keygen NAME --out FILE` writes the log's signing key; `fusion witness keygen CC
--out FILE` a country's witness key. Each writes the private key to FILE (mode 0600, kept out
of the repository) and the public (verifier) key to FILE.pub, and prints the public key:
that line is what the parties exchange and list in their trusted keys file.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.notes import COSIGNATURE_V1, ED25519, NoteError, Signer, Verifier


def witness_name(country: str) -> str:
    """The witness key name of a country: `border-fusion-witness-mx`."""
    return f"border-fusion-witness-{country.lower()}"


def keygen(name: str, out: Path, *, witness: bool) -> Verifier:
    """Write a new key to `out` (refusing to overwrite one) and its public key beside it."""
    signer = Signer.generate(name, COSIGNATURE_V1 if witness else ED25519)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(signer.text() + "\n")
    verifier = signer.verifier
    Path(f"{out}.pub").write_text(verifier.text() + "\n", encoding="utf-8")
    return verifier


def read_signer(path: Path) -> Signer:
    try:
        return Signer.parse(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise NoteError(f"{path}: cannot read the key: {e.strerror}") from e
    except NoteError as e:
        raise NoteError(f"{path}: {e}") from e


def read_trusted(path: Path) -> tuple[list[Verifier], list[Verifier]]:
    """The log keys (every key the log has had, so old checkpoints verify after a rotation)
    and the witness keys listed in a trusted keys file: one public key a line, `#` comments."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise NoteError(f"{path}: cannot read the trusted keys: {e.strerror}") from e
    log_keys: list[Verifier] = []
    witnesses: list[Verifier] = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            key = Verifier.parse(text)
        except NoteError as e:
            raise NoteError(f"{path} line {number}: {e}") from e
        (witnesses if key.kind == COSIGNATURE_V1 else log_keys).append(key)
    return log_keys, witnesses


def main(argv: list[str] | None = None) -> int:
    """`fusion log keygen NAME --out FILE`: the transparency log's signing key."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="fusion log", description=main.__doc__)
    sub = ap.add_subparsers(dest="action", required=True)
    kg = sub.add_parser("keygen", help="write a new log signing key and print its public key")
    kg.add_argument("name", help="the key name, e.g. border-fusion-log-2026")
    kg.add_argument("--out", type=Path, required=True, help="the private key file to write")
    a = ap.parse_args(argv)
    try:
        key = keygen(a.name, a.out, witness=False)
    except FileExistsError:
        print(f"fusion log keygen: {a.out} exists; not overwritten", file=sys.stderr)
        return 2
    except NoteError as e:
        print(f"fusion log keygen: {e}", file=sys.stderr)
        return 2
    print(key.text())
    return 0
