"""Pseudonymisation keys: read from where settings say (a file or an environment variable),
never from the repository; generated and rotated in a keys file by `python -m streams.keys`.

A keys file is JSON (or YAML) mapping identifier kinds to their active keys, primary first:

    {"plate": [{"id": "k20261128-3f9a", "secret": "<base64, >= 32 bytes>"},
               {"id": "k20260601-c01d", "secret": "..."}],
     "person_ref": [...], "serial": [...], "track_id": [...]}

Rotation: `rotate` puts a new primary key in front of each kind and keeps the old one as the
previous key, so alerts carry pseudonyms under both and partners keep matching; `retire`
drops the previous keys when the window is over. The worker reads the file at start (and on
a policy reload), so a rotation takes effect without touching the policy file.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from engine.errors import PolicyError
from engine.policy import MIN_KEY_BYTES, Keyring, Policy, load_policy
from streams.settings import Settings

DEFAULT_KINDS = ("plate", "person_ref", "serial", "track_id")
NO_KEYS = (
    "the keyring (no keys configured: set FUSION_PSEUDONYM_KEYS_FILE or FUSION_PSEUDONYM_KEYS)"
)


def configured_policy(settings: Settings, *, throwaway_keys: bool = False) -> Policy:
    """The sharing policy with the configured keys (or, for offline tools with none
    configured, throwaway ones, said on stderr)."""
    if throwaway_keys and settings.pseudonym_keys_file is None and settings.pseudonym_keys is None:
        print(
            "fusion: no pseudonymisation keys configured: using throwaway keys "
            "(pseudonyms will not match the worker's)",
            file=sys.stderr,
        )
        keys = Keyring.parse(generate(), source="throwaway keys")
    else:
        keys = keyring_from_sources(settings.pseudonym_keys_file, settings.pseudonym_keys)
    return load_policy(settings.policy_path, keys)


def keyring_from_sources(file: Path | None, inline: SecretStr | str | None) -> Keyring:
    """The keyring from a keys file or from the keys' JSON text in an environment variable
    (exactly one of them; with neither, an empty keyring the policy will refuse if it
    pseudonymises)."""
    if file is not None and inline is not None:
        raise PolicyError(
            "pseudonymisation keys are given twice: set FUSION_PSEUDONYM_KEYS_FILE or "
            "FUSION_PSEUDONYM_KEYS, not both"
        )
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as e:
            raise PolicyError(
                f"cannot read the keys file: {e.strerror or e}", file=str(file)
            ) from e
        return Keyring.from_text(text, source=str(file))
    if inline is not None:
        text = inline.get_secret_value() if isinstance(inline, SecretStr) else inline
        return Keyring.from_text(text, source="environment variable FUSION_PSEUDONYM_KEYS")
    return Keyring(source=NO_KEYS)


def new_key_id(now: datetime | None = None) -> str:
    """`k<yyyymmdd>-<4 hex>`: sortable by day, unique within it."""
    day = (now or datetime.now(UTC)).strftime("%Y%m%d")
    return f"k{day}-{secrets.token_hex(2)}"


def new_key(key_id: str) -> dict[str, str]:
    """A fresh key: 32 random bytes, base64."""
    return {"id": key_id, "secret": base64.b64encode(secrets.token_bytes(MIN_KEY_BYTES)).decode()}


def generate(kinds: Iterable[str] = DEFAULT_KINDS, key_id: str | None = None) -> dict[str, Any]:
    """A keys document with one fresh key per kind (one key id for all)."""
    kid = key_id or new_key_id()
    return {kind: [new_key(kid)] for kind in kinds}


def rotate(doc: dict[str, Any], key_id: str | None = None) -> dict[str, Any]:
    """A new primary key for every kind; the old primary stays active as the previous key, and
    any older key is retired."""
    kid = key_id or new_key_id()
    return {kind: [new_key(kid), *keys[:1]] for kind, keys in doc.items()}


def retire(doc: dict[str, Any]) -> dict[str, Any]:
    """The rotation window is over: only the primary keys stay."""
    return {kind: keys[:1] for kind, keys in doc.items()}


def write_keys(path: Path, doc: dict[str, Any]) -> None:
    """Write a keys file readable by its owner only (atomically: a reader never sees half)."""
    Keyring.parse(doc, source=str(path))  # refuse to write what would not load
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def read_keys(path: Path) -> dict[str, Any]:
    """A keys file's document, validated."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    Keyring.parse(doc, source=str(path))
    return dict(doc)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m streams.keys {generate|rotate|retire|show} FILE`."""
    ap = argparse.ArgumentParser(prog="fusion keys", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write a new keys file (refuses to overwrite)")
    g.add_argument("file", type=Path)
    g.add_argument("--kinds", default=",".join(DEFAULT_KINDS), help="comma separated")
    g.add_argument("--key-id", default=None)
    g.add_argument("--if-missing", action="store_true", help="do nothing if the file exists")
    r = sub.add_parser("rotate", help="new primary keys; the old ones stay active as previous")
    r.add_argument("file", type=Path)
    r.add_argument("--key-id", default=None)
    t = sub.add_parser("retire", help="drop the previous keys: the rotation window is over")
    t.add_argument("file", type=Path)
    s = sub.add_parser("show", help="list kinds and key ids (never the secrets)")
    s.add_argument("file", type=Path)
    args = ap.parse_args(argv)
    path: Path = args.file
    try:
        if args.cmd == "generate":
            if path.exists():
                if args.if_missing:
                    return 0
                print(f"fusion keys: {path} exists; use rotate", file=sys.stderr)
                return 1
            kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
            write_keys(path, generate(kinds, args.key_id))
        elif args.cmd == "rotate":
            write_keys(path, rotate(read_keys(path), args.key_id))
        elif args.cmd == "retire":
            write_keys(path, retire(read_keys(path)))
        ring = Keyring.from_text(path.read_text(encoding="utf-8"), source=str(path))
    except (PolicyError, OSError, ValueError) as e:
        print(f"fusion keys: {e}", file=sys.stderr)
        return 1
    for kind in sorted(ring.kinds()):
        ids = [k.id for k in ring.active(kind)]
        prev = f" (previous: {', '.join(ids[1:])})" if len(ids) > 1 else ""
        print(f"{kind:12} primary {ids[0]}{prev}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
