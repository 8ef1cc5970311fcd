"""The review report as one self-contained HTML page (inline CSS and SVG, no script, no
network), drawn only from the `Report` it is given, so the JSON twin holds every figure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape

from streams.tools.report.charts import Series, share_bars, stacked_bars
from streams.tools.report.model import ACTIONS, ActionMix, Flow, NamedMix, Report

ACTION_SERIES = [
    Series("release", "released as is", "#2e7d32"),
    Series("pseudonymize", "pseudonymised", "#1565c0"),
    Series("generalize", "generalised", "#7b1fa2"),
    Series("redact", "redacted", "#ef6c00"),
    Series("drop", "dropped (whole event)", "#c62828"),
]
ACTION_WORDS = {s.key: s.label for s in ACTION_SERIES}
DESTINATION_COLORS = ["#1f4e79", "#8d6e00", "#00695c", "#6d4c41", "#455a64"]

CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  margin: 0 auto; max-width: 1100px; padding: 24px 32px 48px; color: #1d1d1d;
  background: #fff; line-height: 1.4; }
h1 { font-size: 1.7em; margin: 0 0 4px; }
h2 { font-size: 1.3em; margin: 36px 0 8px; padding-top: 8px; border-top: 2px solid #1f4e79; }
h3 { font-size: 1.05em; margin: 20px 0 6px; }
p.meta { color: #555; margin: 2px 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0 16px; }
.card { border: 1px solid #ccd; border-radius: 6px; padding: 10px 14px; min-width: 150px;
  background: #f7f9fc; }
.card .n { font-size: 1.6em; font-weight: 600; }
.card .what { color: #444; font-size: 0.9em; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 0.92em; }
th, td { border: 1px solid #d5d8dd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f5; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
table.policies td:nth-child(3) { font-family: ui-monospace, monospace; font-size: 0.8em;
  word-break: break-all; max-width: 280px; }
code { font-size: 0.95em; }
svg.chart { width: 100%; height: auto; margin: 4px 0 8px; }
.none { color: #666; font-style: italic; }
nav a { margin-right: 14px; }
footer { margin-top: 40px; color: #666; font-size: 0.85em; }
@media print { h2 { break-before: page; } svg.chart { break-inside: avoid; } }
"""
# Nothing leaves the page: no script, no fetch, no font or image from anywhere.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _when(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M UTC")


def _n(value: int) -> str:
    return f"{value:,}"


def _bucket_label(dt: datetime, bucket: str) -> str:
    return dt.strftime("%d %b %H:00") if bucket == "hour" else dt.strftime("%d %b")


def _table(
    head: Sequence[str], rows: Iterable[Sequence[object]], numeric_from: int = 1, css: str = ""
) -> str:
    """A table; columns from `numeric_from` on are right-aligned figures."""
    out = [f"<table class='{css}'><thead><tr>" if css else "<table><thead><tr>"]
    out += [
        f"<th class='n'>{escape(h)}</th>" if i >= numeric_from else f"<th>{escape(h)}</th>"
        for i, h in enumerate(head)
    ]
    out.append("</tr></thead><tbody>")
    count = 0
    for row in rows:
        count += 1
        out.append("<tr>")
        for i, cell in enumerate(row):
            text = _n(cell) if isinstance(cell, int) else escape(str(cell))
            out.append(f"<td class='n'>{text}</td>" if i >= numeric_from else f"<td>{text}</td>")
        out.append("</tr>")
    if not count:
        return "<p class='none'>None in this period.</p>"
    out.append("</tbody></table>")
    return "".join(out)


MIX_HEAD = ["As is", "Pseudonymised", "Generalised", "Redacted", "Dropped", "Fields"]


def _mix(mix: ActionMix) -> list[int]:
    return [*(mix.get(a) for a in ACTIONS), mix.total]


def _mix_table(first: str, rows: Sequence[NamedMix]) -> str:
    return _table(
        [first, "Releases", "Alerts", *MIX_HEAD],
        ([r.name, r.releases, r.alerts, *_mix(r.fields)] for r in rows),
    )


def _mix_sentence(mix: ActionMix) -> str:
    parts = [f"{_n(mix.get(a))} {ACTION_WORDS[a]}" for a in ACTIONS if mix.get(a)]
    return ", ".join(parts) if parts else "no fields"


def _header(report: Report) -> str:
    policies = ", ".join(escape(p.label) for p in report.policies) or "none (nothing released)"
    per = "hour" if report.bucket == "hour" else "day"
    return (
        f"<header><h1>{escape(report.title)}</h1>"
        f"<p class='meta'><strong>Period:</strong> {_when(report.since)} to "
        f"{_when(report.until)} (counts per {per})</p>"
        f"<p class='meta'><strong>Sharing policies applied:</strong> {policies}</p>"
        f"<p class='meta'>From the audit topic <code>{escape(report.source)}</code>: one record "
        f"per alert per destination country. Generated {_when(report.generated_at)}.</p>"
        f"{_checkpoints(report)}"
        "</header>"
    )


def _checkpoints(report: Report) -> str:
    """The transparency-log checkpoints the figures rest on, and who cosigned them."""
    if not report.checkpoints:
        return (
            "<p class='meta'><strong>Audit log:</strong> no transparency-log checkpoint covers "
            "these records (the log is off, or they predate it).</p>"
        )
    items = []
    for c in report.checkpoints:
        who = " and ".join(escape(n) for n in c.cosigned_by) or "no witness"
        state = "cosigned by both witnesses" if c.all_witnesses else "NOT cosigned by both"
        short = "" if not c.uncovered else f"; {_n(c.uncovered)} records not yet covered"
        checked = "" if c.verified else " (signatures not checked: no --keys)"
        items.append(
            f"<li><code>{escape(c.log)}</code> size {_n(c.size)}, tree hash "
            f"<code>{escape(c.root)}</code>: {state} ({who}){short}{checked}</li>"
        )
    return (
        "<div class='meta'><strong>Audit log:</strong> these figures rest on the checkpoints"
        f"<ul>{''.join(items)}</ul></div>"
    )


def _nav(report: Report) -> str:
    links = [("totals", "Totals")]
    links += [(f"flow-{f.origin}-{f.destination}", f.label) for f in report.cross_border]
    links += [("own", "Own-country releases"), ("policy", "Policy over the period")]
    links.append(("dispositions", "Dispositions"))
    links.append(("method", "How to read"))
    return "<nav>" + "".join(f"<a href='#{escape(i)}'>{escape(t)}</a>" for i, t in links) + "</nav>"


def _card(value: int, what: str) -> str:
    return f"<div class='card'><div class='n'>{_n(value)}</div><div class='what'>{what}</div></div>"


def _totals(report: Report) -> str:
    t = report.totals
    cb = t.cross_border
    cards = [
        _card(t.alerts, "alerts released"),
        _card(t.releases, "releases (alert &times; destination)"),
        _card(cb.total, "fields sent across the border"),
        _card(cb.withheld, "of them withheld (redacted or dropped)"),
        _card(
            t.pseudonyms_matched,
            "releases correlated across the border on a pseudonymised key "
            f"({_n(t.pseudonyms_linked)} linked to the destination's own data)",
        ),
    ]
    flows = [*report.cross_border, *report.own_country]
    head = ["Direction", "Releases", "Alerts", *MIX_HEAD, "Key as pseudonym"]
    rows = []
    for f in flows:
        name = f"{f.label} (own data)" if f.own else f.label
        rows.append([name, f.releases, f.alerts, *_mix(f.fields), f.matches.pseudonymized])
    dests = list(t.releases_by_destination)
    dest_series = [
        Series(d, f"to {d}", DESTINATION_COLORS[i % len(DESTINATION_COLORS)])
        for i, d in enumerate(dests)
    ]
    chart = stacked_bars(
        [_bucket_label(b.start, report.bucket) for b in t.timeline],
        [b.releases for b in t.timeline],
        dest_series,
        title="Releases per destination over the period",
    )
    dest_rows = [[d, t.releases_by_destination[d], t.alerts_by_destination[d]] for d in dests]
    rule_rows = [
        [
            r.rule_id,
            r.alerts,
            r.updated,
            r.withdrawn,
            *(r.releases[d] for d in dests),
            *_mix(r.cross_border),
        ]
        for r in t.rules
    ]
    return (
        "<section id='totals'><h2>Totals</h2>"
        f"<div class='cards'>{''.join(cards)}</div>"
        "<h3>By direction (a field's country of origin → the country it was released to)</h3>"
        + _table(head, rows)
        + "<h3>By destination</h3>"
        + _table(["Destination", "Releases", "Alerts"], dest_rows)
        + f"<h3>Releases per {report.bucket}, by destination</h3>"
        + chart
        + "<h3>By rule (fields: cross-border only)</h3>"
        + _table(
            [
                "Rule",
                "Alerts",
                "Updated",
                "Withdrawn",
                *(f"Releases to {d}" for d in dests),
                *MIX_HEAD,
            ],
            rule_rows,
        )
        + "</section>"
    )


def _matches(flow: Flow) -> str:
    m = flow.matches
    rows = [
        [f"Alerts whose key is in {flow.origin}'s data", m.releases_with_key],
        ["… key sent as a pseudonym", m.pseudonymized],
        ["… key sent as is", m.released_as_is],
        ["… key withheld", m.withheld],
        [f"… key also in {flow.destination}'s own data (a cross-border link)", m.linked],
        ["… linked through a pseudonym", m.linked_pseudonymized],
    ]
    return (
        "<h3>Keys matched across the border</h3>"
        "<p>Alerts correlated on an identifier (plate, weapon serial, person) held in "
        f"{escape(flow.origin)}'s data, and what {escape(flow.destination)} received of it.</p>"
        + _table(["", "Releases"], rows)
        + _mix_table("Key field", m.by_field)
    )


def _flow(flow: Flow, bucket: str) -> str:
    chart = stacked_bars(
        [_bucket_label(b.start, bucket) for b in flow.timeline],
        [{a: b.fields.get(a) for a in ACTIONS} for b in flow.timeline],
        ACTION_SERIES,
        title=f"{flow.label}: fields by action over the period",
    )
    withheld = _table(
        ["Field", "Policy rule", "Action", "Fields"],
        ([w.field, w.policy_rule, ACTION_WORDS[w.action], w.count] for w in flow.withheld),
        numeric_from=3,
    )
    return (
        f"<section id='flow-{escape(flow.origin)}-{escape(flow.destination)}'>"
        f"<h2>{escape(flow.label)}: {escape(flow.origin)} data released to "
        f"{escape(flow.destination)}</h2>"
        f"<p>{_n(flow.releases)} releases of {_n(flow.alerts)} alerts carried "
        f"{escape(flow.origin)} data to {escape(flow.destination)}: "
        f"{_mix_sentence(flow.fields)}.</p>"
        + f"<h3>Fields per {bucket}, by action</h3>"
        + chart
        + "<h3>By rule</h3>"
        + _mix_table("Rule", flow.rules)
        + "<h3>By policy rule</h3>"
        + _mix_table("Policy rule", flow.policy_rules)
        + "<h3>By field</h3>"
        + _mix_table("Field", flow.fields_by_name)
        + "<h3>Withheld</h3>"
        + withheld
        + _matches(flow)
        + "</section>"
    )


def _own(report: Report) -> str:
    parts = [
        "<section id='own'><h2>Own-country releases</h2>"
        "<p>A country's own agencies' data in the alerts it received, shown apart from what "
        "crossed the border.</p>"
    ]
    for flow in report.own_country:
        parts.append(
            f"<h3>{escape(flow.origin)} data to {escape(flow.destination)}</h3>"
            f"<p>{_n(flow.releases)} releases of {_n(flow.alerts)} alerts: "
            f"{_mix_sentence(flow.fields)}.</p>"
            + _mix_table("Rule", flow.rules)
            + _mix_table("Policy rule", flow.policy_rules)
            + _mix_table("Field", flow.fields_by_name)
        )
    parts.append("</section>")
    return "".join(parts)


def _policy(report: Report) -> str:
    uses = report.policies
    rows = [
        [p.id, p.version, p.sha256, _when(p.first_used), _when(p.last_used), p.releases, p.alerts]
        for p in uses
    ]
    head = ["Policy", "Version", "SHA-256 of the file", "First used", "Last used"]
    mix_rows = [
        [
            f"{p.id} {p.version}",
            *(f"{_n(p.cross_border.get(a))} ({p.cross_border_share[a]:.1f} %)" for a in ACTIONS),
            p.cross_border.total,
        ]
        for p in uses
    ]
    parts = [
        "<section id='policy'><h2>Sharing policy over the period</h2>",
        "<p>Each sharing policy applied (id, version and the SHA-256 of its file), when it was "
        "first and last used, and its mix of actions on fields sent across the border.</p>",
        _table([*head, "Releases", "Alerts"], rows, numeric_from=5, css="policies"),
        "<h3>Cross-border fields by action, per policy</h3>",
        _table(["Policy", *MIX_HEAD], mix_rows),
    ]
    if uses:
        parts.append(
            share_bars(
                [(p.label, p.cross_border_share) for p in uses],
                ACTION_SERIES,
                title="Cross-border action mix per policy",
            )
        )
    if not report.policy_changes:
        parts.append("<p>One policy was applied throughout the period.</p>" if uses else "")
    for change in report.policy_changes:
        parts.append(
            f"<h3>From {escape(change.before)} to {escape(change.after)} "
            f"(first used {_when(change.at)})</h3>"
        )
        parts.append(
            _table(
                ["Action", "Change in share of cross-border fields"],
                ([ACTION_WORDS[a], f"{change.share_change[a]:+.1f} points"] for a in ACTIONS),
            )
        )
        parts.append("<p>Fields whose actions changed:</p>")
        parts.append(
            _table(
                ["Direction", "Field", "Before", "After"],
                (
                    [
                        f.flow,
                        f.field,
                        ", ".join(ACTION_WORDS[a] for a in f.before),
                        ", ".join(ACTION_WORDS[a] for a in f.after),
                    ]
                    for f in change.fields
                ),
                numeric_from=4,
            ).replace("None in this period.", "No field changed its actions.")
        )
    parts.append("</section>")
    return "".join(parts)


METHOD = """
<section id='method'><h2>How to read this report</h2><ul>
<li>A <strong>release</strong> is one alert sent to one country; the pipeline writes one audit
record for each. An alert sent to both countries is two releases.</li>
<li>A <strong>direction</strong> such as US → MX counts the fields of US agencies' data in
alerts released to Mexico. An alert with evidence from both countries counts in both
directions, each with its own fields.</li>
<li>Every field of every piece of evidence, and the alert's own location, gets one action:
released as is, pseudonymised (a keyed pseudonym that still matches), generalised (location
to a 1 km cell), redacted, or dropped with its whole event. <strong>Withheld</strong> means
redacted or dropped.</li>
<li><strong>Keys matched across the border</strong>: the rule correlated events on an
identifier (a plate, a weapon serial) held in the origin's data; the pseudonym lets the
destination match it to its own records without seeing it.</li>
<li>Counts per hour or day follow the time of release (UTC).</li>
</ul></section>
"""


def _dispositions(report: Report) -> str:
    parts = [
        "<section id='dispositions'><h2>Dispositions</h2>"
        "<p>How each country closed the alerts released in the period, per rule, from its own "
        "triage (each country's own figures, never summed): the share of its closed alerts "
        "by close reason, and how many it has acted on but not closed.</p>"
    ]
    if not report.dispositions:
        parts.append("<p class='muted'>No alert of the period has been triaged.</p>")
    for cc in report.partners:
        rows = [d for d in report.dispositions if d.country == cc]
        if not rows:
            continue
        reasons = sorted({r for d in rows for r in d.closed})
        head = "".join(f"<th>{escape(r.replace('_', ' '))}</th>" for r in reasons)
        body = "".join(
            f"<tr data-country='{escape(cc)}' data-rule='{escape(d.rule_id)}'>"
            f"<td>{escape(d.rule_id)}</td><td>{_n(d.triaged)}</td><td>{_n(d.open)}</td>"
            + "".join(
                f"<td>{_n(d.closed.get(r, 0))} ({d.share.get(r, 0.0):g} %)</td>" for r in reasons
            )
            + "</tr>"
            for d in rows
        )
        parts.append(
            f"<h3>{escape(cc)}</h3><table class='dispositions' data-country='{escape(cc)}'>"
            f"<thead><tr><th>rule</th><th>triaged</th><th>open</th>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>"
        )
    parts.append("</section>")
    return "".join(parts)


def render_html(report: Report) -> str:
    """The whole page."""
    body = [
        _header(report),
        _nav(report),
        _totals(report),
        *(_flow(f, report.bucket) for f in report.cross_border),
        _own(report),
        _policy(report),
        _dispositions(report),
        METHOD,
        f"<footer>Twin of this page: <code>report.json</code> (every figure shown here). "
        f"Records on the topic that were not audit records: {_n(report.skipped)}.</footer>",
    ]
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(report.title)}: {_when(report.since)} to {_when(report.until)}</title>"
        f"<style>{CSS}</style></head><body>" + "".join(body) + "</body></html>\n"
    )
