"""Write the Grafana dashboard of the pipeline, deploy/grafana/dashboards/fusion.json.

    python deploy/grafana/make_dashboard.py           # (re)write the JSON
    python deploy/grafana/make_dashboard.py --check   # exit 1 if the JSON is stale

The JSON is generated so it stays reviewable: edit this file, not the JSON, and commit both.
Metric names and labels are those of streams/worker/metrics.py (tests/unit/test_deploy.py checks
them).
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "fusion.json"

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
RATE = "$__rate_interval"
LATENCY_OBJECTIVE_S = 0.25
WORKER_JOB = "fusion-worker"
# FusionWatermarkLagHigh in deploy/prometheus/alerts.yml fires above this.
WATERMARK_LAG_LIMIT_S = 15 * 60

Panel = dict[str, Any]


def target(expr: str, legend: str = "", ref: str = "A") -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": True,
        "refId": ref,
    }


def targets(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    """(expr, legend) pairs, lettered A, B, C..."""
    return [target(e, lg, chr(ord("A") + i)) for i, (e, lg) in enumerate(pairs)]


def thresholds(*steps: tuple[float | None, str]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


def timeseries(
    title: str,
    description: str,
    tgts: list[dict[str, Any]],
    unit: str = "short",
    *,
    stack: bool = False,
    limit: float | None = None,
) -> Panel:
    """A time series panel; `limit` draws a red dashed line at that value (an objective)."""
    custom: dict[str, Any] = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 15 if stack else 5,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "dashed" if limit is not None else "off"},
    }
    steps = (
        thresholds((None, "green"), (limit, "red"))
        if limit is not None
        else thresholds((None, "green"))
    )
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {
            "defaults": {"unit": unit, "min": 0, "custom": custom, "thresholds": steps},
            "overrides": [],
        },
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
                "calcs": ["lastNotNull", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": tgts,
    }


def stat(
    title: str,
    description: str,
    expr: str,
    unit: str = "short",
    steps: dict[str, Any] | None = None,
    mappings: list[dict[str, Any]] | None = None,
) -> Panel:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": steps or thresholds((None, "blue")),
                "mappings": mappings or [],
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "area",
            "textMode": "value",
            "justifyMode": "auto",
            "orientation": "auto",
        },
        "targets": [target(expr, title)],
    }


def quantiles(metric: str, by: str = "") -> list[dict[str, Any]]:
    """p50, p95 and p99 of a histogram, summed over everything but `by`."""
    keys = f"le, {by}" if by else "le"
    prefix = f"{{{{{by}}}}} " if by else ""
    return targets(
        *[
            (
                f"histogram_quantile({q}, sum by ({keys}) (rate({metric}_bucket[{RATE}])))",
                f"{prefix}p{round(q * 100)}",
            )
            for q in (0.5, 0.95, 0.99)
        ]
    )


# -- the panels, row by row ----------------------------------------------------------------

DEAD_LETTER_RATIO = (
    f"sum by (topic) (rate(fusion_events_rejected_total[{RATE}])) / ("
    f"sum by (topic) (rate(fusion_events_rejected_total[{RATE}])) + ("
    f"sum by (topic) (rate(fusion_events_received_total[{RATE}])) or "
    f"sum by (topic) (rate(fusion_events_rejected_total[{RATE}])) * 0))"
)

READY_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "NOT READY", "color": "red", "index": 0},
            "1": {"text": "READY", "color": "green", "index": 1},
        },
    }
]


def rows() -> list[tuple[str, list[tuple[int, int, Panel]]]]:
    """(row title, [(width, height, panel), ...]); panels flow left to right, 24 columns."""
    overview = [
        (
            4,
            4,
            stat(
                "Worker ready",
                "fusion_worker_ready of the least ready worker: 1 once every input topic has "
                "partitions assigned. Updated every second.",
                "min(fusion_worker_ready)",
                steps=thresholds((None, "red"), (1, "green")),
                mappings=READY_MAPPINGS,
            ),
        ),
        (
            4,
            4,
            stat(
                "Workers scraped",
                "Worker metrics endpoints Prometheus reaches (up == 1).",
                f'sum(up{{job="{WORKER_JOB}"}})',
                steps=thresholds((None, "red"), (1, "green")),
            ),
        ),
        (
            4,
            4,
            stat(
                "Events accepted / s",
                "All input topics, all partners.",
                f"sum(rate(fusion_events_received_total[{RATE}]))",
                unit="ops",
            ),
        ),
        (
            4,
            4,
            stat(
                "Dead-lettered",
                "Rejected / (accepted + rejected), all input topics.",
                f"sum(rate(fusion_events_rejected_total[{RATE}])) / "
                f"(sum(rate(fusion_events_rejected_total[{RATE}])) + "
                f"sum(rate(fusion_events_received_total[{RATE}])))",
                unit="percentunit",
                steps=thresholds((None, "green"), (0.01, "orange"), (0.05, "red")),
            ),
        ),
        (
            4,
            4,
            stat(
                "Alerts delivered (1 h)",
                "Alert messages written to the partners' topics.",
                "sum(increase(fusion_alerts_delivered_total[1h]))",
            ),
        ),
        (
            4,
            4,
            stat(
                "Event-to-alert p99",
                f"Objective: {LATENCY_OBJECTIVE_S * 1000:.0f} ms.",
                "histogram_quantile(0.99, sum by (le) "
                f"(rate(fusion_event_to_alert_seconds_bucket[{RATE}])))",
                unit="s",
                steps=thresholds((None, "green"), (LATENCY_OBJECTIVE_S, "red")),
            ),
        ),
    ]
    ingest = [
        (
            12,
            8,
            timeseries(
                "Events accepted / s by topic",
                "Valid events read from each input topic (rejected ones are not counted here).",
                targets(
                    (f"sum by (topic) (rate(fusion_events_received_total[{RATE}]))", "{{topic}}")
                ),
                unit="ops",
                stack=True,
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Events accepted / s by partner and event type",
                "By source.country of the event (the reporting agency's country). The metrics "
                "carry no agency label (the late events on the Watermarks row do).",
                targets(
                    (
                        f"sum by (country, event_type) "
                        f"(rate(fusion_events_received_total[{RATE}]))",
                        "{{country}} {{event_type}}",
                    )
                ),
                unit="ops",
                stack=True,
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Rejections / s by reason",
                "Messages sent to events.deadletter, by input topic and error kind.",
                targets(
                    (
                        f"sum by (topic, reason) (rate(fusion_events_rejected_total[{RATE}]))",
                        "{{reason}} ({{topic}})",
                    )
                ),
                unit="ops",
                stack=True,
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Dead-letter ratio by topic",
                "Rejected / (accepted + rejected). Alert FusionDeadLetterRatioHigh above 5%.",
                targets((DEAD_LETTER_RATIO, "{{topic}}")),
                unit="percentunit",
                limit=0.05,
            ),
        ),
        (
            24,
            6,
            timeseries(
                "Duplicates / s by event type",
                "Events whose event_id was seen within 24 h, dropped. Late events: see the "
                "Watermarks row.",
                targets(
                    (
                        f"sum by (event_type) (rate(fusion_events_duplicate_total[{RATE}]))",
                        "{{event_type}}",
                    ),
                ),
                unit="ops",
            ),
        ),
    ]
    watermarks = [
        (
            16,
            8,
            timeseries(
                "Watermark lag by stage and partition",
                "Wall clock minus the event-time watermark. ingest: per input topic partition "
                "(bounded out-of-orderness; idle partitions do not hold it back); correlate: per "
                "partition of fusion.routed, the minimum over the inputs feeding it. A line "
                "that keeps rising is a stalled watermark: alerts wait for it. Alert "
                f"FusionWatermarkLagHigh above {WATERMARK_LAG_LIMIT_S // 60} min (red line).",
                targets(
                    (
                        "time() - max by (stage, topic, partition) (fusion_watermark_seconds)",
                        "{{stage}} {{topic}}/{{partition}}",
                    )
                ),
                unit="s",
                limit=WATERMARK_LAG_LIMIT_S,
            ),
        ),
        (
            8,
            8,
            timeseries(
                "Idle input partitions",
                "1 per input partition that is caught up and quiet, so excluded from the "
                "watermark (stacked: the number of idle partitions). A partner's topic always "
                "idle sends nothing.",
                targets(
                    (
                        "max by (topic, partition) (fusion_input_idle)",
                        "{{topic}}/{{partition}}",
                    )
                ),
                stack=True,
            ),
        ),
        (
            8,
            8,
            timeseries(
                "Reorder buffer by partition",
                "Events held in the correlate stage's event-time buffer until the watermark "
                "passes them. Growing without bound: the watermark is stalled.",
                targets(
                    (
                        "sum by (partition) (fusion_reorder_buffered)",
                        "partition {{partition}}",
                    )
                ),
                stack=True,
            ),
        ),
        (
            8,
            8,
            timeseries(
                "Events behind the watermark / s",
                "Events that reached the correlate stage behind its watermark but within some "
                "rule's allowed lateness: taken, out of event-time order.",
                targets(
                    (
                        f"sum by (topic) (rate(fusion_events_behind_watermark_total[{RATE}]))",
                        "{{topic}}",
                    )
                ),
                unit="ops",
                stack=True,
            ),
        ),
        (
            8,
            8,
            timeseries(
                "Late events / s by topic and agency",
                "Dead-lettered as too late for every rule (error.kind late), by input topic "
                "and source agency. Skipped by rule: later than that rule's allowed lateness "
                "but used by others.",
                targets(
                    (
                        f"sum by (topic, agency) (rate(fusion_events_late_total[{RATE}]))",
                        "late {{agency}} ({{topic}})",
                    ),
                    (
                        f"sum by (rule) (rate(fusion_rule_late_events_total[{RATE}]))",
                        "skipped by {{rule}}",
                    ),
                ),
                unit="ops",
            ),
        ),
    ]
    alerts = [
        (
            12,
            8,
            timeseries(
                "Alerts raised / s by rule and severity",
                "Rule matches that became alerts (before release to partners).",
                targets(
                    (
                        f"sum by (rule, severity) (rate(fusion_alerts_raised_total[{RATE}]))",
                        "{{rule}} ({{severity}})",
                    )
                ),
                unit="ops",
                stack=True,
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Alerts delivered / s by destination country",
                "Alert messages written to alerts.<country>, one per alert per recipient.",
                targets(
                    (
                        f"sum by (destination) (rate(fusion_alerts_delivered_total[{RATE}]))",
                        "{{destination}}",
                    )
                ),
                unit="ops",
                stack=True,
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Alerts delivered / s by destination and rule",
                "Which rules each partner receives.",
                targets(
                    (
                        f"sum by (destination, rule) (rate(fusion_alerts_delivered_total[{RATE}]))",
                        "{{destination}} {{rule}}",
                    )
                ),
                unit="ops",
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Audit records, alert versions and late refutations / s",
                "Audit records on audit.sharing should match deliveries per destination. "
                "Joined: matches that joined an alert already raised. Versions: updates and "
                "withdrawals. Refuted late: records refuting an alert after its corrections "
                "span (the alert stands; an officer clears it).",
                targets(
                    (
                        f"sum by (destination) (rate(fusion_audit_records_total[{RATE}]))",
                        "audit {{destination}}",
                    ),
                    (
                        f"sum by (rule) (rate(fusion_alerts_suppressed_total[{RATE}]))",
                        "joined {{rule}}",
                    ),
                    (
                        f"sum by (rule, change) (rate(fusion_alert_versions_total[{RATE}]))",
                        "{{change}} {{rule}}",
                    ),
                    (
                        f"sum by (rule) (rate(fusion_alerts_refuted_late_total[{RATE}]))",
                        "refuted late {{rule}}",
                    ),
                ),
                unit="ops",
            ),
        ),
    ]
    latency = [
        (
            8,
            8,
            timeseries(
                "Event-to-alert latency",
                "From the newest evidence's event time to delivery; includes the producers' "
                f"delay. Objective p99 < {LATENCY_OBJECTIVE_S * 1000:.0f} ms (red line).",
                quantiles("fusion_event_to_alert_seconds"),
                unit="s",
                limit=LATENCY_OBJECTIVE_S,
            ),
        ),
        (
            8,
            8,
            timeseries(
                "Ingest-to-alert latency",
                "From the pipeline reading the newest evidence to delivery: the pipeline's own "
                "share of the latency.",
                quantiles("fusion_ingest_to_alert_seconds"),
                unit="s",
                limit=LATENCY_OBJECTIVE_S,
            ),
        ),
        (
            8,
            8,
            timeseries(
                "Event-to-alert p99 by rule",
                "Which rule is slow.",
                targets(
                    (
                        f"histogram_quantile(0.99, sum by (le, rule) "
                        f"(rate(fusion_event_to_alert_seconds_bucket[{RATE}])))",
                        "{{rule}}",
                    )
                ),
                unit="s",
                limit=LATENCY_OBJECTIVE_S,
            ),
        ),
    ]
    state = [
        (
            12,
            8,
            timeseries(
                "Consumer lag by topic",
                "Messages not yet read, summed over partitions.",
                targets(("sum by (topic) (fusion_consumer_lag)", "{{topic}}")),
            ),
        ),
        (
            12,
            8,
            timeseries(
                "State evictions / s by rule",
                "Facts dropped because a state cap was hit: the rule can miss matches.",
                targets(
                    (f"sum by (rule) (rate(fusion_state_evictions_total[{RATE}]))", "{{rule}}")
                ),
                unit="ops",
            ),
        ),
        (
            8,
            8,
            timeseries(
                "Correlation keys by rule",
                "Keys held (plates, areas...) over all partitions.",
                targets(("sum by (rule) (fusion_state_keys)", "{{rule}}")),
            ),
        ),
        (
            8,
            8,
            timeseries(
                "Partial matches by rule",
                "Facts held towards matches not complete yet.",
                targets(("sum by (rule) (fusion_state_partial_matches)", "{{rule}}")),
            ),
        ),
        (
            8,
            8,
            timeseries(
                "Event ids remembered for dedup",
                "Bounded by FUSION_DEDUP_MAX_IDS per partition; kept FUSION_DEDUP_TTL_S.",
                targets(("sum(fusion_dedup_ids)", "event ids")),
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Correlate partitions held, by worker",
                "Each partition of fusion.routed is held by one worker; the total above the "
                "partition count means a worker kept state for a partition it handed over.",
                targets(
                    ("sum by (instance) (fusion_state_partitions)", "{{instance}}"),
                    ("sum(fusion_state_partitions)", "all workers"),
                ),
            ),
        ),
        (
            12,
            8,
            timeseries(
                "State snapshots / s by stage",
                "Snapshots to the compacted state topics; input is acknowledged after them.",
                targets(
                    (f"sum by (stage) (rate(fusion_state_snapshots_total[{RATE}]))", "{{stage}}")
                ),
                unit="ops",
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Last snapshot size by stage",
                "Must stay well below the state topics' max.message.bytes (16 MiB).",
                targets(("max by (stage) (fusion_state_snapshot_bytes)", "{{stage}}")),
                unit="bytes",
                limit=16 * 1024 * 1024,
            ),
        ),
    ]
    health = [
        (
            12,
            8,
            timeseries(
                "Rule, policy and areas reloads by what and result",
                "Rule, policy and areas-of-responsibility reloads (what: rules, policy, areas).",
                targets(
                    (
                        f"sum by (what, result) (increase(fusion_rule_reloads_total[{RATE}]))",
                        "{{what}} {{result}}",
                    )
                ),
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Worker ready and scraped",
                "fusion_worker_ready per worker (1 = every input topic has partitions assigned) "
                "and Prometheus's up.",
                targets(
                    ("fusion_worker_ready", "ready {{instance}}"),
                    (f'up{{job="{WORKER_JOB}"}}', "up {{instance}}"),
                ),
            ),
        ),
        (
            24,
            6,
            timeseries(
                "Internal failures by stage",
                "Messages a stage failed on. Each one stops the worker, which restarts from its "
                "last snapshot; any value here is a bug or an outage: read the worker log.",
                targets(
                    (
                        f"sum by (stage) (increase(fusion_internal_errors_total[{RATE}]))",
                        "{{stage}}",
                    )
                ),
            ),
        ),
    ]
    tak = [
        (
            12,
            8,
            timeseries(
                "TAK: CoT events sent and dropped / s by country",
                "Alerts sent to each country's TAK server as Cursor on Target events, and those "
                "dropped (buffer_full: the oldest held while the server was slow or down; "
                "shutdown; error).",
                targets(
                    (
                        f"sum by (country) (rate(fusion_tak_events_sent_total[{RATE}]))",
                        "sent {{country}}",
                    ),
                    (
                        f"sum by (country, reason) (rate(fusion_tak_events_dropped_total[{RATE}]))",
                        "dropped {{country}} {{reason}}",
                    ),
                ),
                unit="ops",
            ),
        ),
        (
            12,
            8,
            timeseries(
                "TAK: connected and events held by country",
                "1 while connected to the country's TAK server; events waiting in its buffer "
                "(bounded by FUSION_TAK_BUFFER).",
                targets(
                    ("max by (country) (fusion_tak_connected)", "connected {{country}}"),
                    ("sum by (country) (fusion_tak_buffered)", "held {{country}}"),
                ),
            ),
        ),
    ]
    triage = [
        (
            12,
            8,
            timeseries(
                "Triage: dispositions by country and rule (share of closed alerts by reason)",
                "Each country's own figures from its triage topic (fusion relay): of the alerts "
                "of a rule it closed, the share closed for each reason (false positive, true "
                "positive, duplicate, benign positive, automated closure, other).",
                targets(
                    (
                        "sum by (country, rule, reason) (fusion_triage_closed) / ignoring(reason) "
                        "group_left sum by (country, rule) (fusion_triage_closed)",
                        "{{country}} {{rule}} {{reason}}",
                    ),
                ),
                unit="percentunit",
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Triage: open alerts, releases to partners, conflicts",
                "Alerts each country has acted on and not closed; triage actions released to "
                "a partner under the sharing policy; actions the fold refused (a stale revision "
                "that lost a race).",
                targets(
                    ("sum by (country) (fusion_triage_open)", "open {{country}}"),
                    (
                        f"sum by (country, destination) "
                        f"(rate(fusion_triage_released_total[{RATE}]))",
                        "released {{country}} to {{destination}}",
                    ),
                    ("max by (country) (fusion_triage_conflicts)", "conflicts {{country}}"),
                ),
            ),
        ),
    ]
    transparency = [
        (
            12,
            8,
            timeseries(
                "Audit log: witness refusals by country, log and reason",
                "Checkpoints or published leaves a country's witness refused (signature, fork, "
                "rollback, gap, invalid): the audit log on the broker was tampered with, or the "
                "pipeline's key misused. Alert AuditLogTampered.",
                targets(
                    (
                        "sum by (country, log, reason) "
                        f"(increase(fusion_witness_refusals_total[{RATE}]))",
                        "{{country}} {{log}} {{reason}}",
                    ),
                ),
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Audit log: leaves cosigned by each witness, per log",
                "Size of the last checkpoint each country's witness cosigned, per log: grows "
                "with the audit records; flat while alerts flow means a witness is behind.",
                targets(
                    (
                        "max by (country, log) (fusion_witness_cosigned_leaves)",
                        "{{country}} {{log}}",
                    ),
                ),
            ),
        ),
    ]
    return [
        ("Overview", overview),
        ("Ingest", ingest),
        ("Watermarks", watermarks),
        ("Alerts", alerts),
        ("Latency", latency),
        ("Kafka and state", state),
        ("Rules and health", health),
        ("TAK", tak),
        ("Triage", triage),
        ("Audit log witnesses", transparency),
    ]


def build() -> dict[str, Any]:
    panels: list[Panel] = []
    y = 0
    next_id = 1
    for title, items in rows():
        panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "id": next_id,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x, row_h = 0, 0
        for w, h, panel in items:
            if x + w > 24:
                x, y = 0, y + row_h
                row_h = 0
            panels.append({"id": next_id, "gridPos": {"h": h, "w": w, "x": x, "y": y}, **panel})
            next_id += 1
            x += w
            row_h = max(row_h, h)
        y += row_h
    return {
        "uid": "border-fusion",
        "title": "Border fusion pipeline",
        "description": "Ingest, alerts, latency and state of the fusion worker "
        "(generated by deploy/grafana/make_dashboard.py).",
        "tags": ["border-fusion"],
        "timezone": "utc",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "schemaVersion": 39,
        "version": 1,
        "links": [],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the JSON is not up to date")
    p.add_argument("--out", type=Path, default=OUT, help=f"default: {OUT}")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
