"""`fusion report`: read the audit topic between two times and write the bilateral review report
(`report.html` and its JSON twin `report.json`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from engine.triage import TriageBook, TriageState, dispositions
from schemas.audit import AuditRecord
from schemas.triage import TriageAction
from streams.settings import Settings
from streams.tools.accounts import configured_task_forces
from streams.tools.report.aggregate import aggregate
from streams.tools.report.anchor import anchors
from streams.tools.report.model import DispositionRow, Report
from streams.tools.report.period import parse_when
from streams.tools.report.render import render_html
from streams.tools.topicread import read_span
from streams.tools.transparency.keys import read_trusted

# Kafka stamps a record when it is sent, a moment after its `released_at`: seek this much
# earlier and later, then keep exactly the records released in the period.
SLACK = timedelta(minutes=5)


def read_audit(
    settings: Settings, since: datetime, until: datetime, *, timeout: float = 60.0
) -> tuple[list[AuditRecord], int]:
    """The audit records stamped in the period (give or take `SLACK`), and how many records
    there were not audit records."""
    records: list[AuditRecord] = []
    skipped = 0
    for msg in read_span(
        settings,
        [settings.topic_audit],
        since=(since - SLACK).timestamp(),
        until=(until + SLACK).timestamp(),
        timeout=timeout,
        client="report",
    ):
        try:
            records.append(AuditRecord.model_validate_json(msg.value or b""))
        except ValidationError:
            skipped += 1
    return records, skipped


def read_triage(settings: Settings, *, timeout: float = 60.0) -> list[TriageState]:
    """Every country's triage of every alert, folded from its whole triage topic."""
    books = {cc: TriageBook(cc, configured_task_forces(settings)) for cc in settings.partners}
    topics = {settings.triage_topic(cc): cc for cc in settings.partners}
    for msg in read_span(settings, list(topics), timeout=timeout, client="report-triage"):
        try:
            action = TriageAction.model_validate_json(msg.value or b"")
        except ValidationError:
            continue
        book = books[topics[msg.topic]]
        if action.country == book.country:
            book.apply(action)
    return [state for book in books.values() for state in book.states.values()]


def disposition_rows(states: list[TriageState], records: list[AuditRecord]) -> list[DispositionRow]:
    """The dispositions of the alerts released in the period (the audit records' alerts)."""
    rule_of = {r.alert_id: r.rule_id for r in records}
    rows = []
    for d in dispositions(states, rule_of):
        share = {reason: round(100 * d.share(reason), 1) for reason in d.closed}
        rows.append(
            DispositionRow(
                country=d.country,
                rule_id=d.rule_id,
                triaged=d.closed_total + d.open,
                open=d.open,
                closed=dict(d.closed),
                share=share,
            )
        )
    return rows


def build_report(
    settings: Settings,
    since: datetime,
    until: datetime,
    *,
    timeout: float = 60.0,
    title: str | None = None,
    keys: Path | None = None,
) -> Report:
    """The report over the audit records released in [since, until), with the log
    checkpoints they rest on (signatures checked with the trusted `keys`, if given)."""
    records, skipped = read_audit(settings, since, until, timeout=timeout)
    rows = disposition_rows(read_triage(settings, timeout=timeout), records)
    report = aggregate(
        records,
        since=since,
        until=until,
        partners=settings.partners,
        source=settings.topic_audit,
        generated_at=datetime.now(tz=UTC),
        skipped=skipped,
        title=title,
    )
    notes = [
        msg.value or b""
        for msg in read_span(
            settings,
            [settings.topic_log_checkpoints, settings.topic_log_cosignatures],
            timeout=timeout,
            client="report",
        )
    ]
    log_keys, witnesses = read_trusted(keys) if keys is not None else (None, None)
    return report.model_copy(
        update={
            "dispositions": rows,
            "checkpoints": anchors(records, notes, log_keys, witnesses),
        }
    )


def write_report(report: Report, out: Path) -> tuple[Path, Path]:
    """`report.html` and `report.json` in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    html, data = out / "report.html", out / "report.json"
    html.write_text(render_html(report), encoding="utf-8")
    data.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return html, data


def main(argv: Sequence[str] | None = None) -> int:
    """`fusion report [--since T] [--until T] [--out DIR]`."""
    ap = argparse.ArgumentParser(prog="fusion report", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--since",
        default="7d",
        help="start: RFC 3339 (2026-05-01T00:00:00Z) or a duration back from now (7d, 12h); "
        "default 7d",
    )
    ap.add_argument("--until", default="now", help="end, as --since; default now")
    ap.add_argument("--out", type=Path, default=Path(), help="directory to write to (default .)")
    ap.add_argument("--title", help="the report's title")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to read the topic")
    ap.add_argument(
        "--keys", type=Path, help="trusted public keys: check the checkpoints' signatures"
    )
    args = ap.parse_args(argv)
    now = datetime.now(tz=UTC)
    try:
        since, until = parse_when(args.since, now), parse_when(args.until, now)
    except ValueError as e:
        print(f"fusion report: {e}", file=sys.stderr)
        return 2
    if since >= until:
        print(f"fusion report: --since ({since}) is not before --until ({until})", file=sys.stderr)
        return 2
    try:
        settings = Settings()
    except Exception as e:
        print(f"fusion report: invalid settings: {e}", file=sys.stderr)
        return 2
    report = build_report(
        settings, since, until, timeout=args.timeout, title=args.title, keys=args.keys
    )
    html, data = write_report(report, args.out)
    print(html)
    print(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
