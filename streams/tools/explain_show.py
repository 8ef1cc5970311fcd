"""`fusion explain`: why an alert fired, or what the rules did with one event.

    fusion explain ALERT_ID [--country CC] [--input FILE]
    fusion explain --event EVENT_ID [--input FILE]

An alert's explanation is the engine's own record, carried in the alert as released to each
country: read from `alerts.<cc>` (every partner's topic, or `--country`'s), or made again by
replaying `--input`. An event's trace replays the input topics (or `--input`) in event-time
order and records each rule's decision about it; it reads raw input, so it needs the
pipeline's credentials, not an operations centre's.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from engine.trace import EventTrace, trace_event
from schemas.alerts import version_entry
from streams.settings import Settings


def _lookup(alert: dict[str, Any], path: str) -> Any:
    """The value at `evidence[1].fields.plate` in an alert."""
    cur: Any = alert
    for part in path.replace("]", "").replace("[", ".").split("."):
        if isinstance(cur, list):
            cur = cur[int(part)]
        elif isinstance(cur, dict):
            cur = cur.get(part)
        if cur is None:
            return None
    return cur


def format_explanation(alert: dict[str, Any]) -> str:
    """An alert as released to one country, and why it fired, in words."""
    ex = alert.get("explanation")
    head = (
        f"alert {alert['alert_id']}: {alert['rule_id']} ({alert['title']}), "
        f"{alert['severity']}, score {alert['score']}, released to {alert['recipient']} "
        f"as {alert['tlp']} under policy {alert['policy']['id']} v{alert['policy']['version']}"
    )
    lines = [head]
    for v in alert.get("history", []):
        r = v.get("revision") or {}
        said = f"  version {v['version']} {v['change']} at {v['at']}, {v['evidence']} events"
        if r.get("reason"):
            said += f": {r['reason']}"
        if r.get("records"):
            said += f" ({', '.join(r['records'])})"
        if r.get("superseded_by"):
            said += f"; superseded by {r['superseded_by']}"
        lines.append(said)
    if alert.get("change") == "withdrawn":
        lines.append("WITHDRAWN: it no longer stands (the last version above says why)")
    if not ex:
        lines.append("  no explanation recorded (an alert from before explanations were kept)")
        return "\n".join(lines)
    lines.append(f"rule ({ex['rule_type']}): {ex['summary']}")
    lines.append(f"window: {ex['window_start']} .. {ex['window_end']}")
    if ex.get("key"):
        where = ex.get("key_path")
        value = _lookup(alert, where) if where else None
        shown = value if value is not None else "(withheld from this country)"
        lines.append(f"matched {ex['key']}: {shown}" + (f"  [{where}]" if where else ""))
    lines.append("conditions:")
    lines.extend(f"  - {c}" for c in ex["conditions"])
    if ex.get("absence_checked_until"):
        lines.append(f"absence checked up to {ex['absence_checked_until']}")
    by_id = {e["event_id"]: e for e in alert.get("evidence", [])}
    lines.append("evidence:")
    for item in ex["evidence"]:
        ev = by_id.get(item["event_id"], {})
        src = ev.get("source", {})
        lines.append(
            f"  {item['event_id']} as {item['role']}: {ev.get('event_type', '?')} from "
            f"{src.get('agency', '?')} ({src.get('country', '?')}) at {ev.get('occurred_at', '?')}"
        )
        lines.extend(f"      - {m}" for m in item["met"])
    redactions = alert.get("redactions", [])
    if redactions:
        lines.append("not released as is:")
        lines.extend(f"  {r['path']}: {r['action']} ({r['policy_rule']})" for r in redactions)
    return "\n".join(lines)


def format_trace(trace: EventTrace) -> str:
    """What the rules did with one event, in words."""
    if not trace.found:
        return f"event {trace.event_id}: not found in the input"
    if trace.rejected:
        return f"event {trace.event_id}: refused at validation (dead-lettered): {trace.rejected}"
    f = trace.fact
    if f is None:
        return f"event {trace.event_id}: accepted, but no rule took it"
    lines = [
        f"event {trace.event_id}: {f.event_type} from {f.get('source.agency')} ({f.country}) "
        f"at {f.get('occurred_at')}"
    ]
    if trace.duplicate:
        lines.append("  (sent more than once: the repeats were counted as duplicates)")
    order = {"fired": 0, "suppressed": 1, "taken": 2, "too late": 3, "no key": 4}
    for rec in sorted(trace.rules.values(), key=lambda r: (order.get(r.outcome, 9), r.rule_id)):
        lines.append(f"  {rec.rule_id}: {rec.outcome}: {rec.why}")
        lines.extend(f"      alert {aid}" for aid in rec.alerts)
    return "\n".join(lines)


def _read_all(settings: Settings, topics: Sequence[str]) -> Iterator[bytes]:
    """Every message now on the topics, from the beginning."""
    from streams.tools.topicread import read_span

    for m in read_span(settings, topics, timeout=300, client="explain"):
        if m.value is not None:
            yield m.value


def _dead_letters(settings: Settings, event_id: str) -> Iterator[tuple[str, str]]:
    """What the pipeline refused of this event, from the dead-letter topic: the replay puts
    every event in order, so only this says that one arrived too late for every rule."""
    needle = event_id.encode()
    for raw in _read_all(settings, [settings.topic_deadletter]):
        if needle not in raw:
            continue
        try:
            doc = orjson.loads(raw)
            payload = orjson.loads(doc.get("payload") or "{}")
        except (orjson.JSONDecodeError, TypeError, AttributeError):
            continue
        if isinstance(payload, dict) and payload.get("event_id") == event_id:
            err = doc.get("error") or {}
            yield str(err.get("kind")), str(err.get("message"))


def _events(settings: Settings, path: Path | None) -> io.BytesIO:
    if path is not None:
        return io.BytesIO(path.read_bytes())
    return io.BytesIO(b"\n".join(_read_all(settings, settings.input_topic_names)))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fusion explain", description=__doc__.split("\n\n")[0])
    p.add_argument("alert_id", nargs="?", help="the alert (its id, or a prefix of 8+ chars)")
    p.add_argument("--event", help="explain what the rules did with this event instead")
    p.add_argument("--country", help="only the alert as released to this partner")
    p.add_argument("--input", type=Path, help="replay this JSON-lines file of events")
    p.add_argument("--rules", type=Path, help="rules directory or file (default: configured)")
    p.add_argument("--json", action="store_true", help="print the alert(s) as JSON")
    args = p.parse_args(argv)
    if bool(args.alert_id) == bool(args.event):
        p.error("give an ALERT_ID or --event EVENT_ID")
    if args.alert_id and len(args.alert_id) < 8:
        p.error("an alert id prefix needs at least 8 characters")
    settings = Settings()
    from engine.rulefiles import load_rules

    if args.event:
        ruleset = load_rules([args.rules or settings.rules_path])
        trace = trace_event(
            _events(settings, args.input), ruleset, args.event, partners=settings.partner_set
        )
        print(format_trace(trace))
        if args.input is None:
            for kind, message in _dead_letters(settings, args.event):
                print(f"  the pipeline dead-lettered it: {kind}: {message}")
        return 0 if trace.found else 1
    countries = [args.country.upper()] if args.country else list(settings.partners)
    found = list(_released(settings, args, countries))
    for alert in found:
        print(orjson.dumps(alert).decode() if args.json else format_explanation(alert))
        if not args.json:
            print()
    if not found:
        where = (
            f"--input {args.input}"
            if args.input
            else ", ".join(settings.alert_topic(c) for c in countries)
        )
        print(f"fusion explain: no alert {args.alert_id} in {where}", file=sys.stderr)
        return 1
    return 0


def _released(
    settings: Settings, args: argparse.Namespace, countries: list[str]
) -> Iterator[dict[str, Any]]:
    """The alert as released to each of `countries`: from their topics, or by replay."""
    prefix: str = args.alert_id
    if args.input is None:
        for c in countries:
            found: dict[int, dict[str, Any]] = {}
            for raw in _read_all(settings, [settings.alert_topic(c)]):
                try:
                    a = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(a, dict) and str(a.get("alert_id", "")).startswith(prefix):
                    found.setdefault(int(a.get("version", 1)), a)
                    prefix = str(a["alert_id"])  # one alert: the first the prefix found
            if found:
                yield with_history([found[v] for v in sorted(found)])
        return
    from engine.release import recipients, release_json
    from engine.replay import correlate_file
    from engine.rulefiles import load_rules
    from streams.keys import configured_policy

    ruleset = load_rules([args.rules or settings.rules_path])
    policy = configured_policy(settings, throwaway_keys=True)
    alerts, _ = correlate_file(
        _events(settings, args.input), ruleset, partners=settings.partner_set
    )
    per_dest: dict[str, list[dict[str, Any]]] = {}
    for a in alerts:
        if not a.alert_id.startswith(prefix):
            continue
        prefix = a.alert_id
        who = recipients(a, settings.partner_set, policy)
        for dest in who:
            if dest in countries:
                out = release_json(
                    a, dest, who, policy, now=a.raised_at, topic=settings.alert_topic(dest)
                )
                if out is not None:
                    per_dest.setdefault(dest, []).append(out[0])
    for versions in per_dest.values():
        yield with_history(versions)


def with_history(versions: list[dict[str, Any]]) -> dict[str, Any]:
    """The newest of an alert's versions (in order), with the list of them all."""
    newest = versions[-1]
    return {**newest, "history": [version_entry(v) for v in versions]}
