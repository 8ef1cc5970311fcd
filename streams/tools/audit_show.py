"""`fusion audit <alert_id> <destination>`: what of an alert was released to a country, and
under which policy rule, read back from the audit topic."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import orjson
from pydantic import ValidationError

from schemas.audit import AuditRecord
from streams.settings import Settings
from streams.tools.topicread import read_span


def _record(value: bytes | None) -> AuditRecord | None:
    try:
        return AuditRecord.model_validate(orjson.loads(value or b""))
    except (orjson.JSONDecodeError, ValidationError):
        return None


def find_audit(
    settings: Settings, alert_id: str, destination: str, *, timeout: float = 30.0
) -> list[AuditRecord]:
    """Every audit record of the alert for the destination (oldest first), reading the audit
    topic from its beginning to its end as of the call (a `TopicReadError` if it cannot in
    `timeout` seconds)."""
    dest = destination.upper()
    key = alert_id.encode()
    found: list[AuditRecord] = []
    for msg in read_span(settings, [settings.topic_audit], timeout=timeout, client="audit-show"):
        # The pipeline keys audit records by alert id: parse only those (and unkeyed records,
        # should another tool have written some).
        if msg.key is None or msg.key == key:
            rec = _record(msg.value)
            if rec is not None and rec.alert_id == alert_id and rec.destination == dest:
                found.append(rec)
    return sorted(found, key=lambda r: r.released_at)


def format_audit(rec: AuditRecord, *, copies: int = 1) -> str:
    """A person-readable account: the policy, then every field with its action and rule."""
    lines = [
        f"alert {rec.alert_id} (rule {rec.rule_id}) released to {rec.destination} "
        f"on {rec.topic} at {rec.released_at.isoformat()}",
        f"policy {rec.policy.id} version {rec.policy.version} sha256 {rec.policy.sha256}",
    ]
    if copies > 1:
        lines.append(f"({copies} records for this alert and destination; showing the latest)")
    width = max((len(a.path) for a in rec.actions), default=10)
    counts: dict[str, int] = {}
    for a in rec.actions:
        counts[a.action] = counts.get(a.action, 0) + 1
        lines.append(
            f"  {a.path:{width}}  {a.action:12}  data of {a.origin}  under {a.policy_rule}"
        )
    lines.append(
        "summary: " + (", ".join(f"{n} {act}" for act, n in sorted(counts.items())) or "no fields")
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """`fusion audit <alert_id> <destination> [--json] [--timeout S]`."""
    ap = argparse.ArgumentParser(prog="fusion audit", description=__doc__.split("\n\n")[0])
    ap.add_argument("alert_id")
    ap.add_argument("destination", help="partner country, e.g. MX")
    ap.add_argument("--json", action="store_true", help="print the audit records as JSON lines")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to read the topic")
    args = ap.parse_args(argv)
    try:
        settings = Settings()
    except Exception as e:
        print(f"fusion audit: invalid settings: {e}", file=sys.stderr)
        return 2
    dest = args.destination.upper()
    if dest not in settings.partner_set:
        print(
            f"fusion audit: {dest} is not a partner ({', '.join(settings.partners)})",
            file=sys.stderr,
        )
        return 2
    recs = find_audit(settings, args.alert_id, dest, timeout=args.timeout)
    if not recs:
        print(
            f"fusion audit: no record of alert {args.alert_id} released to {dest} "
            f"on {settings.topic_audit}",
            file=sys.stderr,
        )
        return 1
    if args.json:
        for r in recs:
            sys.stdout.write(orjson.dumps(r.model_dump(mode="json")).decode() + "\n")
    else:
        print(format_audit(recs[-1], copies=len(recs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
