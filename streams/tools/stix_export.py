"""`fusion stix`: alerts read back from a country's alert topic, written as STIX 2.1 bundles
(`interop/stix.py` makes them; the worker's own `stix.<cc>` topics are `streams/worker/stix.py`)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from engine.durations import parse_when
from interop.stix import bundle_json
from streams.settings import Settings
from streams.tools.topicread import read_span


def read_alerts(
    settings: Settings,
    topic: str,
    *,
    since: float | None = None,
    until: float | None = None,
    alert_id: str | None = None,
    timeout: float = 30.0,
) -> Iterator[dict[str, Any]]:
    """Alerts on `topic` as of the call, oldest first per partition: those written from
    `since` (epoch seconds, by the record's timestamp) until before `until`, or those with
    `alert_id` (the pipeline keys alerts by id)."""
    key = alert_id.encode() if alert_id is not None else None
    for msg in read_span(
        settings, [topic], since=since, until=until, timeout=timeout, client="stix"
    ):
        if key is None or msg.key in (None, key):
            alert = _alert(msg.value)
            if alert is not None and (alert_id is None or alert["alert_id"] == alert_id):
                yield alert


def _alert(value: bytes | None) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) and "alert_id" in doc and "recipient" in doc else None


def main(argv: Sequence[str] | None = None) -> int:
    """`fusion stix ALERT_ID [--country CC]` or `fusion stix --since WHEN --country CC`."""
    ap = argparse.ArgumentParser(
        prog="fusion stix",
        description="Alerts as a country received them, as STIX 2.1 bundles: one alert, or "
        "every alert written to the country's topic in a span, in one bundle.",
    )
    ap.add_argument("alert_id", nargs="?", help="the alert to export")
    ap.add_argument("--country", help="the partner whose copy to export, e.g. mx")
    ap.add_argument(
        "--since", help="alerts written since: a duration back from now (90m, 2d) or RFC 3339"
    )
    ap.add_argument("--until", help="and before (same forms; default: now)")
    ap.add_argument("--out", type=Path, help="write the bundle to this file, not stdout")
    ap.add_argument("--pretty", action="store_true", help="indent the JSON")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to read the topic")
    args = ap.parse_args(argv)
    if (args.alert_id is None) == (args.since is None):
        ap.error("give an ALERT_ID or --since, not both")
    if args.since is not None and not args.country:
        ap.error("--since needs --country: a bundle holds what one country received")
    if args.until is not None and args.since is None:
        ap.error("--until goes with --since")
    try:
        settings = Settings()
    except Exception as e:
        print(f"fusion stix: invalid settings: {e}", file=sys.stderr)
        return 2
    countries = [args.country.upper()] if args.country else list(settings.partners)
    unknown = [c for c in countries if c not in settings.partner_set]
    if unknown:
        print(
            f"fusion stix: {unknown[0]} is not a partner ({', '.join(settings.partners)})",
            file=sys.stderr,
        )
        return 2
    if args.since is not None:
        now = time.time()
        try:
            at = datetime.fromtimestamp(now, tz=UTC)
            since = parse_when(args.since, at).timestamp()
            until = parse_when(args.until, at).timestamp() if args.until else None
        except ValueError as e:
            print(f"fusion stix: {e}", file=sys.stderr)
            return 2
        topic = settings.alert_topic(countries[0])
        alerts = list(read_alerts(settings, topic, since=since, until=until, timeout=args.timeout))
        if not alerts:
            print(f"fusion stix: no alerts on {topic} in that span", file=sys.stderr)
            return 1
    else:
        latest: dict[str, dict[str, Any]] = {}
        for cc in countries:
            # An alert written again (after a restart) is the same alert: keep the last copy.
            for a in read_alerts(
                settings, settings.alert_topic(cc), alert_id=args.alert_id, timeout=args.timeout
            ):
                latest[cc] = a
        if not latest:
            where = ", ".join(settings.alert_topic(c) for c in countries)
            print(f"fusion stix: no alert {args.alert_id} on {where}", file=sys.stderr)
            return 1
        if len(latest) > 1:
            print(
                f"fusion stix: alert {args.alert_id} went to {', '.join(sorted(latest))}, each "
                "its own version: say which with --country",
                file=sys.stderr,
            )
            return 2
        alerts = list(latest.values())
    alerts = _unique(alerts)
    urls = [settings.alert_url(a["recipient"], a["alert_id"]) for a in alerts]
    text = bundle_json(alerts, urls=urls)
    if args.pretty:
        text = orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2)
    if args.out:
        args.out.write_bytes(text + b"\n")
        print(f"fusion stix: {len(alerts)} alert(s) to {args.out}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(text + b"\n")
        sys.stdout.flush()
    return 0


def _unique(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest version of each alert (the last copy of it), in first-seen order."""
    by_id: dict[str, dict[str, Any]] = {}
    for a in alerts:
        held = by_id.get(a["alert_id"])
        if held is None or int(a.get("version", 1)) >= int(held.get("version", 1)):
            by_id[a["alert_id"]] = a
    return list(by_id.values())
