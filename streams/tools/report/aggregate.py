"""Audit records to the review report's figures: per direction, rule, policy rule, field and
action, over time, with what was withheld, keys matched across the border and policy changes.

Pure: no Kafka. A field's direction is its origin country to the record's destination; a
release counts once in each direction it carries fields of.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from schemas.alerts import Action
from schemas.audit import AuditRecord, FieldAction
from streams.tools.report.model import (
    ACTIONS,
    WITHHELD,
    ActionMix,
    DestinationBucket,
    FieldChange,
    Flow,
    KeyMatches,
    NamedMix,
    PolicyChange,
    PolicyUse,
    Report,
    RuleTotal,
    TimeBucket,
    Totals,
    WithheldRow,
)
from streams.tools.report.period import BUCKET_SECONDS, bucket_size, bucket_starts

ALERT_LOCATION = "alert location"
WHOLE_EVENT = "whole event"
RANK = {a: i for i, a in enumerate(ACTIONS)}


def field_name(path: str) -> str:
    """The field an action path names: `evidence[0].fields.plate` is `plate`, the alert's own
    `location` is `alert location`, a dropped `evidence[<event_id>]` is `whole event`."""
    if path == "location":
        return ALERT_LOCATION
    head, sep, name = path.rpartition(".fields.")
    if sep and head.startswith("evidence["):
        return name
    return WHOLE_EVENT if path.startswith("evidence[") else path


def share(mix: ActionMix) -> dict[str, float]:
    """Percent of fields per action (0 for an empty mix)."""
    return {a: round(100.0 * mix.get(a) / mix.total, 1) if mix.total else 0.0 for a in ACTIONS}


def policy_label(policy_id: str, version: str, sha256: str) -> str:
    return f"{policy_id} {version} (sha256 {sha256[:12]})"


@dataclass
class _Row:
    releases: int = 0
    alerts: set[str] = field(default_factory=set)
    fields: Counter[str] = field(default_factory=Counter)

    def add(self, alert_id: str, actions: Iterable[str]) -> None:
        self.releases += 1
        self.alerts.add(alert_id)
        self.fields.update(actions)

    def mix(self, name: str) -> NamedMix:
        return NamedMix(
            name=name,
            releases=self.releases,
            alerts=len(self.alerts),
            fields=ActionMix.of(self.fields),
        )


def _rows(table: dict[str, _Row]) -> list[NamedMix]:
    """Rows by releases, most first, then by name."""
    ordered = sorted(table.items(), key=lambda kv: (-kv[1].releases, kv[0]))
    return [row.mix(name) for name, row in ordered]


def _add(table: dict[str, _Row], name: str, alert_id: str, actions: Iterable[str]) -> None:
    row = table.get(name)
    if row is None:
        row = table[name] = _Row()
    row.add(alert_id, actions)


@dataclass
class _FlowAcc:
    origin: str
    destination: str
    buckets: int
    total: _Row = field(default_factory=_Row)
    timeline: list[_Row] = field(default_factory=list)
    rules: dict[str, _Row] = field(default_factory=dict)
    policy_rules: dict[str, _Row] = field(default_factory=dict)
    names: dict[str, _Row] = field(default_factory=dict)
    withheld: Counter[tuple[str, str, Action]] = field(default_factory=Counter)
    keyed: Counter[str] = field(default_factory=Counter)
    key_fields: dict[str, _Row] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.timeline = [_Row() for _ in range(self.buckets)]

    @property
    def own(self) -> bool:
        return self.origin == self.destination

    def add(self, rec: AuditRecord, actions: list[FieldAction], bucket: int) -> None:
        aid = rec.alert_id
        acts = [a.action for a in actions]
        self.total.add(aid, acts)
        self.timeline[bucket].add(aid, acts)
        _add(self.rules, rec.rule_id, aid, acts)
        by_rule: dict[str, list[str]] = {}
        by_name: dict[str, list[str]] = {}
        for a in actions:
            by_rule.setdefault(a.policy_rule, []).append(a.action)
            name = field_name(a.path)
            by_name.setdefault(name, []).append(a.action)
            if a.action in WITHHELD:
                self.withheld[(name, a.policy_rule, a.action)] += 1
        for prule, group in by_rule.items():
            _add(self.policy_rules, prule, aid, group)
        for name, group in by_name.items():
            _add(self.names, name, aid, group)
        self._add_match(rec)

    def _add_match(self, rec: AuditRecord) -> None:
        if rec.match is None:
            return
        mine = [f for f in rec.match.fields if f.origin == self.origin]
        if not mine:
            return
        acts = {f.action for f in mine}
        self.keyed["with_key"] += 1
        pseudonymized = "pseudonymize" in acts
        self.keyed["pseudonymized"] += pseudonymized
        self.keyed["released"] += "release" in acts
        self.keyed["withheld"] += acts <= WITHHELD
        if not self.own and any(f.origin == self.destination for f in rec.match.fields):
            self.keyed["linked"] += 1
            self.keyed["linked_pseudonymized"] += pseudonymized
        by_name: dict[str, list[str]] = {}
        for f in mine:
            by_name.setdefault(field_name(f.path), []).append(f.action)
        for name, group in by_name.items():
            _add(self.key_fields, name, rec.alert_id, group)

    def flow(self, starts: list[datetime]) -> Flow:
        label = f"{self.origin} → {self.destination}"
        withheld = [
            WithheldRow(field=name, policy_rule=prule, action=action, count=n)
            for (name, prule, action), n in sorted(
                self.withheld.items(), key=lambda kv: (-kv[1], kv[0])
            )
        ]
        k = self.keyed
        return Flow(
            origin=self.origin,
            destination=self.destination,
            label=label,
            own=self.own,
            releases=self.total.releases,
            alerts=len(self.total.alerts),
            fields=ActionMix.of(self.total.fields),
            timeline=[
                TimeBucket(start=start, releases=row.releases, fields=ActionMix.of(row.fields))
                for start, row in zip(starts, self.timeline, strict=True)
            ],
            rules=_rows(self.rules),
            policy_rules=_rows(self.policy_rules),
            fields_by_name=_rows(self.names),
            withheld=withheld,
            matches=KeyMatches(
                releases_with_key=k["with_key"],
                pseudonymized=k["pseudonymized"],
                released_as_is=k["released"],
                withheld=k["withheld"],
                linked=k["linked"],
                linked_pseudonymized=k["linked_pseudonymized"],
                by_field=_rows(self.key_fields),
            ),
        )


@dataclass
class _PolicyAcc:
    first: datetime
    last: datetime
    total: _Row = field(default_factory=_Row)
    cross_border: Counter[str] = field(default_factory=Counter)
    actions: dict[tuple[str, str], set[str]] = field(default_factory=dict)


def _order(partners: Sequence[str], seen: Iterable[str]) -> list[str]:
    extra = sorted(set(seen) - set(partners))
    return [*partners, *extra]


def aggregate(
    records: Iterable[AuditRecord],
    *,
    since: datetime,
    until: datetime,
    partners: Sequence[str] = ("US", "MX"),
    source: str = "audit.sharing",
    generated_at: datetime,
    skipped: int = 0,
    title: str | None = None,
) -> Report:
    """The report over the records released in [since, until); others are left out."""
    bucket = bucket_size(since, until)
    starts = bucket_starts(since, until, bucket)
    size = BUCKET_SECONDS[bucket]
    first_start = starts[0].timestamp()
    flows: dict[tuple[str, str], _FlowAcc] = {}
    policies: dict[tuple[str, str, str], _PolicyAcc] = {}
    overall = _Row()
    by_dest: dict[str, _Row] = {}
    overview: list[Counter[str]] = [Counter() for _ in starts]
    rule_alerts: dict[str, set[str]] = {}
    rule_releases: dict[str, Counter[str]] = {}
    rule_cross: dict[str, Counter[str]] = {}
    rule_changed: dict[tuple[str, str], set[str]] = {}
    for rec in records:
        when = rec.released_at
        if not since <= when < until:
            continue
        idx = min(int((when.timestamp() - first_start) // size), len(starts) - 1)
        dest = rec.destination
        aid = rec.alert_id
        overall.add(aid, ())
        _add(by_dest, dest, aid, ())
        overview[idx][dest] += 1
        rule_alerts.setdefault(rec.rule_id, set()).add(aid)
        if rec.change != "raised":
            rule_changed.setdefault((rec.rule_id, rec.change), set()).add(aid)
        rule_releases.setdefault(rec.rule_id, Counter())[dest] += 1
        cross = rule_cross.setdefault(rec.rule_id, Counter())
        per_origin: dict[str, list[FieldAction]] = {}
        for a in rec.actions:
            per_origin.setdefault(a.origin, []).append(a)
        ref = rec.policy
        pkey = (ref.id, ref.version, ref.sha256)
        pol = policies.get(pkey)
        if pol is None:
            pol = policies[pkey] = _PolicyAcc(first=when, last=when)
        pol.first, pol.last = min(pol.first, when), max(pol.last, when)
        pol.total.add(aid, ())
        for origin, actions in per_origin.items():
            acc = flows.get((origin, dest))
            if acc is None:
                acc = flows[(origin, dest)] = _FlowAcc(origin, dest, len(starts))
            acc.add(rec, actions, idx)
            label = f"{origin} → {dest}"
            for a in actions:
                pol.actions.setdefault((label, field_name(a.path)), set()).add(a.action)
            if origin != dest:
                acts = [a.action for a in actions]
                cross.update(acts)
                pol.cross_border.update(acts)

    seen_origins = {o for o, _ in flows}
    seen_dests = {d for _, d in flows} | set(by_dest)
    countries = _order(partners, seen_origins | seen_dests)
    for origin in countries:
        for dest in countries:
            if (origin, dest) not in flows and origin in partners and dest in partners:
                flows[(origin, dest)] = _FlowAcc(origin, dest, len(starts))
    ordered = sorted(
        flows.values(),
        key=lambda f: (countries.index(f.origin), countries.index(f.destination)),
    )
    cross_flows = [f.flow(starts) for f in ordered if not f.own]
    own_flows = [f.flow(starts) for f in ordered if f.own]

    cross_mix: Counter[str] = Counter()
    own_mix: Counter[str] = Counter()
    for fl in cross_flows:
        cross_mix.update({a: fl.fields.get(a) for a in ACTIONS})
    for fl in own_flows:
        own_mix.update({a: fl.fields.get(a) for a in ACTIONS})
    dests = [c for c in countries if c in by_dest or c in partners]
    totals = Totals(
        releases=overall.releases,
        alerts=len(overall.alerts),
        releases_by_destination={d: by_dest[d].releases if d in by_dest else 0 for d in dests},
        alerts_by_destination={d: len(by_dest[d].alerts) if d in by_dest else 0 for d in dests},
        cross_border=ActionMix.of(cross_mix),
        own_country=ActionMix.of(own_mix),
        pseudonyms_matched=sum(f.matches.pseudonymized for f in cross_flows),
        pseudonyms_linked=sum(f.matches.linked_pseudonymized for f in cross_flows),
        timeline=[
            DestinationBucket(start=start, releases={d: counts.get(d, 0) for d in dests})
            for start, counts in zip(starts, overview, strict=True)
        ],
        rules=[
            RuleTotal(
                rule_id=rule_id,
                alerts=len(rule_alerts[rule_id]),
                releases={d: rule_releases[rule_id].get(d, 0) for d in dests},
                cross_border=ActionMix.of(rule_cross[rule_id]),
                updated=len(rule_changed.get((rule_id, "updated"), ())),
                withdrawn=len(rule_changed.get((rule_id, "withdrawn"), ())),
            )
            for rule_id in sorted(rule_alerts, key=lambda r: (-len(rule_alerts[r]), r))
        ],
    )
    uses, changes = _policies(policies)
    return Report(
        title=title or "\N{EN DASH}".join(partners) + " information sharing: bilateral review",
        generated_at=generated_at,
        source=source,
        since=since,
        until=until,
        bucket=bucket,
        partners=list(partners),
        skipped=skipped,
        totals=totals,
        cross_border=cross_flows,
        own_country=own_flows,
        policies=uses,
        policy_changes=changes,
    )


def _policies(
    policies: dict[tuple[str, str, str], _PolicyAcc],
) -> tuple[list[PolicyUse], list[PolicyChange]]:
    """Each policy applied, in order of first use, and what changed from one to the next."""
    ordered = sorted(policies.items(), key=lambda kv: (kv[1].first, kv[0]))
    uses = []
    for (pid, version, sha), acc in ordered:
        mix = ActionMix.of(acc.cross_border)
        uses.append(
            PolicyUse(
                id=pid,
                version=version,
                sha256=sha,
                label=policy_label(pid, version, sha),
                first_used=acc.first,
                last_used=acc.last,
                releases=acc.total.releases,
                alerts=len(acc.total.alerts),
                cross_border=mix,
                cross_border_share=share(mix),
            )
        )
    changes = []
    for (before, b_acc), (after, a_acc), b_use, a_use in zip(
        ordered, ordered[1:], uses, uses[1:], strict=False
    ):
        fields = [
            FieldChange(
                flow=flow,
                field=name,
                before=sorted(b_acc.actions[(flow, name)], key=RANK.__getitem__),
                after=sorted(a_acc.actions[(flow, name)], key=RANK.__getitem__),
            )
            for flow, name in sorted(b_acc.actions.keys() & a_acc.actions.keys())
            if b_acc.actions[(flow, name)] != a_acc.actions[(flow, name)]
        ]
        changes.append(
            PolicyChange(
                before=policy_label(*before),
                after=policy_label(*after),
                at=a_acc.first,
                share_change={
                    a: round(a_use.cross_border_share[a] - b_use.cross_border_share[a], 1)
                    for a in ACTIONS
                },
                fields=fields,
            )
        )
    return uses, changes
