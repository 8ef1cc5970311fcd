"""`fusion`: run the worker, create topics, simulate events, publish a tip, tail alerts, serve a
console, replay, test rules."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from engine.errors import FusionError, RuleSetError
from streams.settings import Settings


def _settings() -> Settings:
    try:
        return Settings()
    except Exception as e:
        print(f"fusion: invalid settings: {e}", file=sys.stderr)
        raise SystemExit(2) from e


def cmd_worker(args: argparse.Namespace) -> int:
    import faust

    from streams.clients import create_topics
    from streams.worker.app import create_app
    from streams.worker.metrics import Metrics, serve

    settings = _settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    created = create_topics(settings)
    if created:
        print(f"created topics: {', '.join(created)}", flush=True)
    if settings.log_signing_key_file is not None:
        from streams.worker.auditlog import LogConfigError, check_log_topics

        try:
            check_log_topics(settings)
        except LogConfigError as e:
            print(f"fusion worker: {e}", file=sys.stderr)
            return 2
    metrics = Metrics()
    if settings.metrics_port:
        serve(metrics, settings.metrics_port)
    app, _ = create_app(settings, metrics)
    _tune_gc()
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
    return 0


def _tune_gc() -> None:
    """The worker holds many long-lived objects (correlation state) and makes many short-lived
    ones per event: move what exists at start out of the collector's way and collect the young
    generation less often, so full collections do not rescan the state thousands of times."""
    import gc

    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)


def cmd_topics(args: argparse.Namespace) -> int:
    from streams.clients import create_topics
    from streams.topics import declared_topics

    settings = _settings()
    created = create_topics(settings)
    for t in declared_topics(settings):
        mark = "created" if t.name in created else "exists"
        print(f"{t.name:28} {t.partitions:3} partitions  {t.role:10} {mark}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from streams.tools.simulator import main as simulator_main

    return simulator_main(args.rest)


TIP_AGENCIES = {"US": "CBP-TIPS", "MX": "FGR-DENUNCIA"}


def tip_event(args: argparse.Namespace) -> dict[str, Any]:
    """The tip `fusion tip` publishes, validated (a pydantic ValidationError if not valid)."""
    import uuid
    from datetime import UTC, datetime

    from schemas.events import Tip

    grade = args.grade.strip().upper()
    country = args.country.upper()
    doc: dict[str, Any] = {
        "event_id": args.id or f"tip-{uuid.uuid4().hex[:16]}",
        "event_type": "tip",
        "occurred_at": args.at or datetime.now(tz=UTC).isoformat(),
        "source": {"agency": args.agency or TIP_AGENCIES.get(country, ""), "country": country},
        "location": {"lat": args.lat, "lon": args.lon},
        "uncertainty_m": args.uncertainty_m,
        "category": args.category,
        "text": args.text,
        "channel": args.channel,
        "reliability": grade[:1],
        "credibility": int(grade[1:]) if grade[1:].isdigit() else grade[1:],
    }
    if args.plate:
        doc["plate"] = args.plate
    if args.person_ref:
        doc["person_ref"] = args.person_ref
    return Tip.model_validate(doc).model_dump(mode="json", exclude_none=True)


def _publish_one(
    args: argparse.Namespace,
    command: str,
    kind: str,
    build: Callable[[argparse.Namespace], dict[str, Any]],
    topic_of: Callable[[Settings, dict[str, Any]], str],
) -> tuple[str, dict[str, Any]] | None:
    """Build one event from the command line, refuse it with what is wrong (None), print it
    (`--dry-run`) or publish it; the topic and the event published."""
    from kafka import KafkaProducer
    from pydantic import ValidationError

    from streams.clients import kafka_python_config

    settings = _settings()
    try:
        doc = build(args)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or kind}: {err['msg']}" for err in e.errors()
        )
        print(f"fusion {command}: not a valid {kind}: {problems}", file=sys.stderr)
        return None
    topic = topic_of(settings, doc)
    if args.dry_run:
        print(orjson.dumps(doc).decode())
        return topic, doc
    producer = KafkaProducer(acks="all", **kafka_python_config(settings))
    try:
        producer.send(topic, orjson.dumps(doc)).get(timeout=30)
    finally:
        producer.close()
    return topic, doc


def cmd_tip(args: argparse.Namespace) -> int:
    sent = _publish_one(args, "tip", "tip", tip_event, lambda s, _: s.topic_tips)
    if sent is None:
        return 2
    if not args.dry_run:
        print(f"sent tip {sent[1]['event_id']} to {sent[0]}")
    return 0


def authorization_event(args: argparse.Namespace) -> dict[str, Any]:
    """The authorization event `fusion authorize` publishes (validated; ValidationError if not)."""
    import uuid
    from datetime import UTC, datetime, timedelta

    from schemas.events import Authorization

    now = datetime.now(tz=UTC)
    country = args.country.upper()
    doc: dict[str, Any] = {
        "event_id": args.id or f"aut-{uuid.uuid4().hex[:16]}",
        "event_type": "authorization",
        "occurred_at": args.at or now.isoformat(),
        "source": {"agency": args.agency, "country": country},
        "location": {"lat": args.lat, "lon": args.lon},
        "action": "revoke" if args.revoke else "grant",
        "reference": args.reference,
        "guest_country": args.guest.upper(),
    }
    if not args.revoke:
        start = datetime.fromisoformat(args.valid_from) if args.valid_from else now
        doc["units"] = args.unit or []
        doc["area"] = {"radius_m": args.radius_m}
        doc["valid_from"] = start.isoformat()
        doc["valid_until"] = args.valid_until or (start + timedelta(hours=args.hours)).isoformat()
    return Authorization.model_validate(doc).model_dump(mode="json", exclude_none=True)


def cmd_authorize(args: argparse.Namespace) -> int:
    sent = _publish_one(
        args,
        "authorize",
        "authorization",
        authorization_event,
        lambda s, doc: s.authorization_topic(doc["source"]["country"]),
    )
    if sent is None:
        return 2
    topic, doc = sent
    if not args.dry_run:
        print(f"sent authorization {doc['reference']} ({doc['action']}) to {topic}")
    return 0


def format_alert(a: dict[str, Any]) -> str:
    """One readable line per alert."""
    ev = ", ".join(
        f"{e['event_type']}({e['source']['agency']}/{e['source']['country']})"
        for e in a.get("evidence", [])
    )
    when = a.get("raised_at", "")[:19].replace("T", " ")
    loc = a.get("location", {})
    red = len(a.get("redactions", []))
    change = a.get("change", "raised")
    version = "" if change == "raised" else f" {change.upper()} v{a.get('version')}"
    revision = a.get("revision") or {}
    why = f" | {revision.get('reason')}" if revision.get("reason") else ""
    if revision.get("superseded_by"):
        why += f" (superseded by {str(revision['superseded_by'])[:12]})"
    return (
        f"[{a.get('recipient')}]{version} {when} {a.get('severity', '').upper():8} "
        f"{a.get('rule_id')} score {a.get('score')} {a.get('tlp')} at {loc.get('lat')},"
        f"{loc.get('lon')} | {ev} | {red} redacted | {a.get('alert_id', '')[:12]}{why}"
    )


def cmd_tail(args: argparse.Namespace) -> int:
    from kafka import KafkaConsumer

    from streams.clients import kafka_python_config

    settings = _settings()
    topic = settings.alert_topic(args.country.upper())
    consumer = KafkaConsumer(
        topic,
        auto_offset_reset="earliest" if args.from_beginning else "latest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=int(args.timeout * 1000) if args.timeout else float("inf"),
        **kafka_python_config(settings),
    )
    print(f"tailing {topic} (Ctrl-C to stop)", flush=True)
    n = 0
    try:
        for msg in consumer:
            a = orjson.loads(msg.value)
            print(orjson.dumps(a).decode() if args.json else format_alert(a), flush=True)
            n += 1
            if args.max and n >= args.max:
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    from streams.tools.console.server import run
    from streams.tools.console.since import parse_since

    settings = _settings()
    country = args.country.upper()
    if country not in settings.partners:
        print(
            f"fusion console: {args.country!r} is not a partner (FUSION_PARTNERS: "
            f"{', '.join(settings.partners)})",
            file=sys.stderr,
        )
        return 2
    try:
        since_s = parse_since(args.since)
    except ValueError as e:
        print(f"fusion console: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    run(settings, country, host=args.host, port=args.port, since_s=since_s)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from engine.replay import replay
    from engine.rulefiles import load_rules
    from streams.keys import configured_policy

    settings = _settings()
    ruleset = load_rules([args.rules or settings.rules_path])
    policy = configured_policy(settings, throwaway_keys=True)
    out = sys.stdout.buffer
    opts = {"partners": settings.partner_set, "destination": args.destination, "policy": policy}
    if args.input == "-":
        stats = replay(sys.stdin.buffer, out, ruleset, **opts)
    else:
        with Path(args.input).open("rb") as src:
            stats = replay(src, out, ruleset, **opts)
    out.flush()
    print(
        f"replay: {stats.events} events, {stats.accepted} accepted, {stats.rejected} rejected, "
        f"{stats.duplicates} duplicates, {stats.late} late, {stats.alerts} alert versions "
        f"({stats.standing} alerts stand)",
        file=sys.stderr,
    )
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    from engine.rulefiles import load_rules
    from engine.ruletests import run_all

    settings = _settings()
    paths = args.paths or [settings.rules_path]
    try:
        ruleset = load_rules(paths)
    except RuleSetError as e:
        print(str(e), file=sys.stderr)
        return 1
    if args.action == "check":
        print(f"{len(ruleset)} rules valid: {', '.join(r.id for r in ruleset.rules)}")
        return 0
    outcomes, untested = run_all(ruleset)
    failed = 0
    by_rule: dict[str, list[Any]] = {}
    for o in outcomes:
        by_rule.setdefault(o.rule_id, []).append(o)
    for rid, os_ in sorted(by_rule.items()):
        ok = sum(o.passed for o in os_)
        print(f"{'PASS' if ok == len(os_) else 'FAIL'} {rid}: {ok}/{len(os_)} tests")
        for o in os_:
            if not o.passed:
                failed += 1
                print(f"     - {o.name}")
                for p in o.problems:
                    print(f"         {p}")
    for rid in untested:
        print(f"UNTESTED {rid}: the rule carries no tests")
    return 1 if failed or untested else 0


def cmd_policy(args: argparse.Namespace) -> int:
    from streams.keys import configured_policy

    settings = _settings()
    policy = configured_policy(
        settings
    )  # a PolicyError names the file, the policy rule and the field
    ref = policy.ref
    print(f"{settings.policy_path}: policy {ref.id} version {ref.version} sha256 {ref.sha256}: ok")
    return 0


def cmd_areas(args: argparse.Namespace) -> int:
    from engine.areas import load_areas
    from engine.errors import AreasError

    path = args.path or _settings().areas_path
    try:
        areas = load_areas(path)
    except AreasError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"{path}: areas version {areas.version}, {len(areas.areas)} areas: ok")
    for a in areas.areas:
        print(f"  {a.id}  {a.country} {a.kind}  {a.name}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from streams.tools.audit_show import main as audit_main

    return audit_main(args.rest)


def cmd_acls(args: argparse.Namespace) -> int:
    from streams.tools.acls import main as acls_main

    return acls_main(args.rest)


def cmd_explain(args: argparse.Namespace) -> int:
    from streams.tools.explain_show import main as explain_main

    return explain_main(args.rest)


def cmd_report(args: argparse.Namespace) -> int:
    from streams.tools.report.read import main as report_main

    return report_main(args.rest)


def cmd_stix(args: argparse.Namespace) -> int:
    from streams.tools.stix_export import main as stix_main

    return stix_main(args.rest)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from streams.tools.transparency.verify import main as verify_main

    return verify_main(args.rest)


def cmd_witness(args: argparse.Namespace) -> int:
    from streams.tools.transparency.witness import main as witness_main

    return witness_main(args.rest)


def cmd_evidence(args: argparse.Namespace) -> int:
    from streams.tools.transparency.evidence import main as evidence_main

    return evidence_main(args.rest)


def cmd_evidence_verify(args: argparse.Namespace) -> int:
    from streams.tools.transparency.evidence import verify_main

    return verify_main(args.rest)


def cmd_log(args: argparse.Namespace) -> int:
    from streams.tools.transparency.keys import main as log_main

    return log_main(args.rest)


def cmd_keys(args: argparse.Namespace) -> int:
    from streams.keys import main as keys_main

    return keys_main(args.rest)


def cmd_users(args: argparse.Namespace) -> int:
    from streams.tools.accounts import main as users_main

    return users_main(args.rest)


def cmd_triage(args: argparse.Namespace) -> int:
    from streams.tools.triage_cli import main as triage_main

    return triage_main(args.rest)


def cmd_relay(args: argparse.Namespace) -> int:
    from streams.tools.relay import main as relay_main

    return relay_main(args.rest)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fusion", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("worker", help="run the pipeline worker (Faust)").set_defaults(fn=cmd_worker)
    sub.add_parser("topics", help="create every declared topic").set_defaults(fn=cmd_topics)

    tail = sub.add_parser("tail", help="print one country's alerts as readable lines")
    tail.add_argument("country", help="partner code, e.g. us or mx")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--json", action="store_true", help="print the raw JSON")
    tail.add_argument("--max", type=int, default=0, help="stop after this many alerts")
    tail.add_argument("--timeout", type=float, default=0, help="stop after this many idle seconds")
    tail.set_defaults(fn=cmd_tail)

    con = sub.add_parser("console", help="one country's live operations console (a web page)")
    con.add_argument("country", help="partner code, e.g. mx or us")
    con.add_argument("--host", help="address to listen on (default FUSION_CONSOLE_HOST)")
    con.add_argument("--port", type=int, help="port (default: the partner's console port)")
    con.add_argument("--since", default="24h", help="read back alerts this far (15m, 24h, 7d, all)")
    con.set_defaults(fn=cmd_console)

    tip = sub.add_parser("tip", help="publish one community tip to the tips topic")
    tip.add_argument("category", choices=("drugs", "weapons", "people", "money"))
    tip.add_argument("--lat", type=float, required=True, help="reported place, WGS-84 degrees")
    tip.add_argument("--lon", type=float, required=True)
    tip.add_argument("--text", required=True, help="the tipster's own words")
    tip.add_argument(
        "--uncertainty-m", type=float, default=1000.0, help="radius of the reported place, m"
    )
    tip.add_argument("--channel", choices=("hotline", "app", "officer"), default="hotline")
    tip.add_argument(
        "--grade", default="F6", help="Admiralty grade, reliability A-F and credibility 1-6: B2"
    )
    tip.add_argument("--country", default="US", help="the partner that took the tip")
    tip.add_argument("--agency", help="default: CBP-TIPS (US), FGR-DENUNCIA (MX)")
    tip.add_argument("--at", help="when, RFC 3339 with offset (default: now)")
    tip.add_argument("--id", help="event_id (default: a new one)")
    tip.add_argument("--plate")
    tip.add_argument("--person-ref")
    tip.add_argument("--dry-run", action="store_true", help="print the event, send nothing")
    tip.set_defaults(fn=cmd_tip)

    auth = sub.add_parser(
        "authorize",
        help="publish a joint operation's permit (or its revocation) as the host country",
    )
    auth.add_argument("reference", help="the issuing agency's reference of the permit")
    auth.add_argument("--country", required=True, help="the host country issuing it: MX")
    auth.add_argument("--agency", required=True, help="the issuing agency: SEDENA")
    auth.add_argument("--guest", required=True, help="the country whose units it admits: US")
    auth.add_argument("--lat", type=float, required=True, help="the area's centre, WGS-84")
    auth.add_argument("--lon", type=float, required=True)
    auth.add_argument("--radius-m", type=float, default=5000.0, help="the area's radius, m")
    auth.add_argument("--unit", action="append", help="an authorized unit id (repeat)")
    auth.add_argument("--valid-from", help="RFC 3339 with offset (default: now)")
    auth.add_argument("--valid-until", help="RFC 3339 with offset (default: --hours later)")
    auth.add_argument("--hours", type=float, default=12.0)
    auth.add_argument("--at", help="time of issue, RFC 3339 with offset (default: now)")
    auth.add_argument("--id", help="event_id (default: a new one)")
    auth.add_argument("--revoke", action="store_true", help="revoke the permit `reference`")
    auth.add_argument("--dry-run", action="store_true", help="print the event, send nothing")
    auth.set_defaults(fn=cmd_authorize)

    rep = sub.add_parser("replay", help="run the rules over a JSON-lines file; alerts to stdout")
    rep.add_argument("input", help="JSON-lines file of events, or - for stdin")
    rep.add_argument("--rules", type=Path, help="rules directory or file")
    rep.add_argument("--destination", help="only alerts released to this partner")
    rep.set_defaults(fn=cmd_replay)

    rules = sub.add_parser("rules", help="validate rule files or run their tests")
    rules.add_argument("action", choices=("check", "test"))
    rules.add_argument("paths", nargs="*", type=Path)
    rules.set_defaults(fn=cmd_rules)

    pol = sub.add_parser("policy", help="check the sharing policy file with the configured keys")
    pol.add_argument("action", choices=("check",))
    pol.set_defaults(fn=cmd_policy)

    areas = sub.add_parser("areas", help="check an areas-of-responsibility file")
    areas.add_argument("action", choices=("check",))
    areas.add_argument("path", nargs="?", type=Path, help="default: the configured areas file")
    areas.set_defaults(fn=cmd_areas)

    # These parse their own arguments (and their own --help).
    own_parsers = (
        ("simulate", cmd_simulate, "publish realistic events (all five types), scenarios mixed in"),
        ("audit", cmd_audit, "what of an alert was released to a country, and why: ALERT_ID CC"),
        (
            "audit-verify",
            cmd_audit_verify,
            "check every audit record of a country is in the cosigned transparency log: CC",
        ),
        ("witness", cmd_witness, "a country's witness of the transparency log: CC, or keygen CC"),
        ("log", cmd_log, "the transparency log's signing key: keygen NAME --out FILE"),
        ("evidence", cmd_evidence, "an alert's evidence package: ALERT_ID CC --out DIR"),
        ("evidence-verify", cmd_evidence_verify, "check an evidence package offline: DIR"),
        ("acls", cmd_acls, "apply the per-country ACLs on a secured broker"),
        ("keys", cmd_keys, "generate, rotate, retire or show pseudonymisation keys"),
        ("triage", cmd_triage, "one triage action as a named user: ALERT_ID ack|assign|note|close"),
        ("relay", cmd_relay, "release each country's triage to its partners under the policy"),
        ("users", cmd_users, "the consoles' users: add, disable, enable, passwd, list"),
        ("explain", cmd_explain, "why an alert fired: ALERT_ID, or --event ID"),
        ("report", cmd_report, "the bilateral review report from the audit topic (HTML, JSON)"),
        ("stix", cmd_stix, "alerts as STIX 2.1 bundles: ALERT_ID, or --since WHEN --country CC"),
    )
    for name, fn, text in own_parsers:
        sp = sub.add_parser(name, help=text, add_help=False)
        sp.add_argument("rest", nargs=argparse.REMAINDER)
        sp.set_defaults(fn=fn)

    raw = sys.argv[1:] if argv is None else argv
    passthrough = {name: fn for name, fn, _ in own_parsers}
    if raw and raw[0] in passthrough:
        args = argparse.Namespace(cmd=raw[0], fn=passthrough[raw[0]], rest=raw[1:])
    else:
        args = p.parse_args(raw)
    try:
        code: int = args.fn(args)
    except FusionError as e:
        print(f"fusion: {e}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
