"""`fusion audit-verify CC --keys TRUSTED [--state FILE]`: check, from the broker and the
public keys only, that every audit record of releases to CC is a leaf of its transparency log
covered by a checkpoint every listed witness cosigned, that every checkpoint is signed and
consistent, and that no leaf released to CC lost its record. Exit 0 and a summary if so; exit
1 naming the first record or checkpoint that fails, and why.

`--state FILE` keeps the checkpoints verified last time, so a log rolled back or forked since
fails too (as a witness's own state does).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.auditlog import LogError, Verified, Witnessed, verify_country
from engine.notes import NoteError
from streams.settings import Settings
from streams.tools.transparency.keys import read_trusted
from streams.tools.transparency.read import read_topic


def run(settings: Settings, country: str, keys: Path, state: Path | None) -> Verified:
    log_keys, witness_keys = read_trusted(keys)
    if not log_keys:
        raise NoteError(f"{keys}: no log key listed")
    known: dict[str, Witnessed] = {}
    if state is not None and state.exists():
        doc = json.loads(state.read_text(encoding="utf-8"))
        known = {origin: Witnessed.from_doc(v) for origin, v in doc.items()}
    verified = verify_country(
        country,
        read_topic(settings, settings.topic_audit),
        read_topic(settings, settings.topic_log_leaves),
        read_topic(settings, settings.topic_log_checkpoints),
        read_topic(settings, settings.topic_log_cosignatures),
        log_keys,
        witness_keys,
        known,
    )
    if state is not None:
        doc = {origin: w.to_doc() for origin, w in verified.latest.items()}
        tmp = state.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, state)
    return verified


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="fusion audit-verify", description=(__doc__ or "").split("\n\n")[0]
    )
    ap.add_argument("country", help="partner code, e.g. mx or us")
    ap.add_argument(
        "--keys",
        type=Path,
        required=True,
        help="trusted public keys: every log key (old ones too) and each witness's",
    )
    ap.add_argument("--state", type=Path, help="checkpoints verified before (read and updated)")
    args = ap.parse_args(argv)
    country = args.country.upper()
    settings = Settings()
    try:
        verified = run(settings, country, args.keys, args.state)
    except LogError as e:
        print(f"fusion audit-verify {country}: FAILED: {e}", file=sys.stderr)
        return 1
    except NoteError as e:
        print(f"fusion audit-verify {country}: {e}", file=sys.stderr)
        return 2
    cosigned = ", ".join(f"{o} {n}" for o, n in sorted(verified.cosigned.items()))
    print(
        f"{country}: {verified.records} audit records verified in {len(verified.logs)} logs "
        f"({verified.repeats} repeats after restarts, {verified.unlogged_repeats} unlogged "
        f"repeats), {verified.checkpoints} checkpoints consistent; cosigned by every "
        f"witness up to: {cosigned or 'none'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
