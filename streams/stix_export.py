"""STIX 2.1 out of the pipeline: the `stix.<cc>` topics the worker writes when
`FUSION_STIX_TOPICS` is on, and `fusion stix`, which reads alerts back from a country's alert
topic and writes them as bundles (`interop/stix.py` makes them)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from engine.durations import parse_when
from streams.settings import Settings
from streams.topicread import read_span

log = logging.getLogger(__name__)


class StixOutput:
    """The bundle of each alert a partner receives, for its `stix.<cc>` topic."""

    def __init__(self, settings: Settings) -> None:
        from interop.stix import bundle_json  # stix2 takes ~0.1 s to import: only when on

        self.settings = settings
        self.topics = {p: settings.stix_topic(p) for p in settings.partners}
        self.bundle_json = bundle_json

    def bundle(self, destination: str, alert: Mapping[str, Any]) -> bytes:
        """The bundle of one alert as released to `destination`, linking to its console."""
        url = self.settings.alert_url(destination, alert["alert_id"])
        return self.bundle_json([alert], urls=[url])

    def message(self, destination: str, alert: Mapping[str, Any]) -> tuple[str, bytes] | None:
        """(topic, bundle) for one released alert; None, logged, if no bundle could be made
        (the alert itself has gone out: a bundle never holds the pipeline back)."""
        try:
            return self.topics[destination], self.bundle(destination, alert)
        except Exception:
            log.exception("no STIX bundle for alert %s to %s", alert.get("alert_id"), destination)
            return None


def stix_output(settings: Settings) -> StixOutput | None:
    """The STIX output if `FUSION_STIX_TOPICS` is on."""
    return StixOutput(settings) if settings.stix_topics else None


def read_alerts(
    s: Settings,
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
    for msg in read_span(s, [topic], since=since, until=until, timeout=timeout, client="stix"):
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
        s = Settings()
    except Exception as e:
        print(f"fusion stix: invalid settings: {e}", file=sys.stderr)
        return 2
    countries = [args.country.upper()] if args.country else list(s.partners)
    unknown = [c for c in countries if c not in s.partner_set]
    if unknown:
        print(
            f"fusion stix: {unknown[0]} is not a partner ({', '.join(s.partners)})", file=sys.stderr
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
        topic = s.alert_topic(countries[0])
        alerts = list(read_alerts(s, topic, since=since, until=until, timeout=args.timeout))
        if not alerts:
            print(f"fusion stix: no alerts on {topic} in that span", file=sys.stderr)
            return 1
    else:
        latest: dict[str, dict[str, Any]] = {}
        for cc in countries:
            # An alert written again (after a restart) is the same alert: keep the last copy.
            for a in read_alerts(
                s, s.alert_topic(cc), alert_id=args.alert_id, timeout=args.timeout
            ):
                latest[cc] = a
        if not latest:
            where = ", ".join(s.alert_topic(c) for c in countries)
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
    urls = [s.alert_url(a["recipient"], a["alert_id"]) for a in alerts]
    text = StixOutput(s).bundle_json(alerts, urls=urls)
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
    """The last copy of each alert, in first-seen order."""
    by_id = {a["alert_id"]: a for a in alerts}
    return list(by_id.values())
