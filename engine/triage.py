"""Triage of alerts, pure: each country's state of an alert (new, acknowledged, in progress,
closed), what each role may do, the revision every action names, the task forces, and what
of an action the sharing policy lets cross to the partner.

A country's triage of an alert is the fold of its actions on `triage.<cc>` in topic order
(`TriageBook.apply`): an action made against another revision than the current one, or not
allowed from the current status, is refused there too, so two consoles racing on the log
cannot both win. Nothing here reads a clock or a topic: the shell passes both in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.errors import FusionError
from engine.policy.model import TriageFieldName, TriageShareRule
from schemas.alerts import PolicyRef
from schemas.triage import (
    NOTE_MAX_CHARS,
    ActionKind,
    Actor,
    Assignee,
    CloseReason,
    Role,
    SharedActor,
    SharedField,
    SharedTriage,
    Status,
    TriageAction,
)

STATUSES: tuple[Status, ...] = ("new", "acknowledged", "in_progress", "closed")
CLOSE_REASONS: tuple[CloseReason, ...] = (
    "false_positive",
    "duplicate",
    "true_positive",
    "benign_positive",
    "automated_closure",
    "other",
)
PIPELINE = "pipeline"
WITHHELD_RULE = "not-named-in-policy"

# The status an action leads to, from the statuses it is allowed in (None: status unchanged).
TRANSITIONS: dict[ActionKind, tuple[frozenset[Status], Status | None]] = {
    "acknowledge": (frozenset({"new"}), "acknowledged"),
    "start": (frozenset({"new", "acknowledged"}), "in_progress"),
    "close": (frozenset({"new", "acknowledged", "in_progress"}), "closed"),
    "reopen": (frozenset({"closed"}), "in_progress"),
    "assign": (frozenset({"new", "acknowledged", "in_progress"}), None),
    "note": (frozenset(STATUSES), None),
}
# What each role may do (an analyst assigns only to self or a task force: `check_role`).
ROLE_ACTIONS: dict[Role, frozenset[ActionKind]] = {
    "viewer": frozenset(),
    "analyst": frozenset({"acknowledge", "start", "assign", "note"}),
    "lead": frozenset({"acknowledge", "start", "close", "reopen", "assign", "note"}),
    "pipeline": frozenset({"close"}),
}

RefusalCode = Literal[
    "unknown_alert", "illegal_transition", "stale_revision", "forbidden", "invalid"
]


class TriageError(FusionError):
    """An action refused, with a code the console maps to its HTTP status, and the state the
    action was refused against (for the caller to show and retry from)."""

    def __init__(self, code: RefusalCode, message: str, state: TriageState | None = None) -> None:
        self.code = code
        self.state = state
        super().__init__(message)


# -- task forces ---------------------------------------------------------------------------


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Member(_Config):
    """A member of a task force: a user of one country."""

    user: Annotated[str, Field(min_length=1, max_length=64)]
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]


class TaskForce(_Config):
    """A binational task force: a name, its members (from both countries), the rules it
    covers (none named: every rule)."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
    title: str = ""
    members: Annotated[list[Member], Field(min_length=2)]
    rules: list[str] | None = None

    @model_validator(mode="after")
    def _binational(self) -> TaskForce:
        countries = {m.country for m in self.members}
        if len(countries) < 2:
            raise ValueError(
                f"a task force is binational: its members are all from {sorted(countries)}"
            )
        return self

    @property
    def countries(self) -> frozenset[str]:
        return frozenset(m.country for m in self.members)

    def has_member(self, user: str, country: str) -> bool:
        return any(m.user == user and m.country == country for m in self.members)

    def covers(self, rule_id: str) -> bool:
        return self.rules is None or rule_id in self.rules


class TaskForceFile(_Config):
    task_forces: list[TaskForce] = Field(default_factory=list)


def parse_task_forces(text: str, source: str) -> dict[str, TaskForce]:
    """The task forces of a configuration file (YAML), by name; errors name the file, the
    task force and the field."""
    try:
        doc = yaml.safe_load(text) or {}
        parsed = TaskForceFile.model_validate(doc)
    except yaml.YAMLError as e:
        raise FusionError(f"{source}: not YAML: {e}") from e
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = err["loc"]
            where = ""
            if len(loc) >= 2 and loc[0] == "task_forces" and isinstance(loc[1], int):
                entries = doc.get("task_forces") if isinstance(doc, dict) else None
                name = (
                    entries[loc[1]].get("name")
                    if isinstance(entries, list) and isinstance(entries[loc[1]], dict)
                    else None
                )
                where = f"task force {name or loc[1]}: "
                loc = loc[2:]
            field_path = ".".join(str(x) for x in loc)
            problems.append(
                f"{where}{'field ' + field_path + ': ' if field_path else ''}"
                f"{err['msg'].removeprefix('Value error, ')}"
            )
        raise FusionError(f"{source}: " + "; ".join(problems)) from e
    forces: dict[str, TaskForce] = {}
    for force in parsed.task_forces:
        if force.name in forces:
            raise FusionError(f"{source}: task force {force.name}: named twice")
        forces[force.name] = force
    return forces


# -- a country's state of one alert ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoteEntry:
    revision: int
    author: Actor
    at: datetime
    text: str
    shareable: bool


@dataclass(frozen=True, slots=True)
class TriageState:
    """One country's triage of one alert, after `revision` actions."""

    alert_id: str
    country: str
    revision: int = 0
    status: Status = "new"
    reason: CloseReason | None = None
    assignee: Assignee | None = None
    notes: tuple[NoteEntry, ...] = ()
    updated_at: datetime | None = None
    updated_by: Actor | None = None
    closed_versions: frozenset[int] = frozenset()
    """Alert versions whose withdrawal closed this triage (an automated closure is made once)."""

    def to_json(self) -> dict[str, object]:
        return {
            "alert_id": self.alert_id,
            "country": self.country,
            "revision": self.revision,
            "status": self.status,
            "reason": self.reason,
            "assignee": self.assignee.model_dump() if self.assignee else None,
            "notes": [
                {
                    "revision": n.revision,
                    "author": n.author.model_dump(),
                    "at": n.at.isoformat(),
                    "text": n.text,
                    "shareable": n.shareable,
                }
                for n in self.notes
            ],
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "updated_by": self.updated_by.model_dump() if self.updated_by else None,
        }


def check_role(actor: Actor, action: TriageAction, forces: Mapping[str, TaskForce]) -> None:
    """Refuse (`forbidden`) what the actor's role or country may not do."""
    if actor.country != action.country:
        raise TriageError(
            "forbidden",
            f"{actor.user} ({actor.country}) may not act on {action.country}'s triage",
        )
    if action.action not in ROLE_ACTIONS[actor.role]:
        raise TriageError(
            "forbidden", f"role {actor.role} may not {action.action} (user {actor.user})"
        )
    if actor.role == "pipeline" and action.reason != "automated_closure":
        raise TriageError("forbidden", "the pipeline closes only as automated_closure")
    if action.action == "assign" and action.assignee is not None:
        who = action.assignee
        if who.kind == "person" and actor.role == "analyst" and who.name != actor.user:
            raise TriageError(
                "forbidden",
                f"an analyst assigns only to self or a task force, not to {who.name}",
            )
    if action.reason == "automated_closure" and actor.role != "pipeline":
        raise TriageError("forbidden", "only the pipeline closes as automated_closure")


def check_action(
    state: TriageState,
    action: TriageAction,
    forces: Mapping[str, TaskForce],
    rule_id: str | None = None,
) -> None:
    """Refuse an action the state does not allow: a stale revision, an illegal transition,
    or an action missing what it needs, or an assignment to a task force that does not cover
    the alert's rule (when `rule_id` is known) (`invalid`)."""
    if action.alert_id != state.alert_id or action.country != state.country:
        raise TriageError(
            "invalid",
            f"action on {action.alert_id} ({action.country}) "
            f"applied to {state.alert_id} ({state.country})",
        )
    if action.revision != state.revision:
        raise TriageError(
            "stale_revision",
            f"alert {state.alert_id}: stale revision: made against revision {action.revision}, "
            f"but it is at "
            f"revision {state.revision} ({state.status})",
            state,
        )
    allowed, _ = TRANSITIONS[action.action]
    if state.status not in allowed:
        raise TriageError(
            "illegal_transition",
            f"alert {state.alert_id}: cannot {action.action} when {state.status} "
            f"(allowed when {', '.join(s for s in STATUSES if s in allowed)})",
            state,
        )
    if action.action == "close" and action.reason is None:
        raise TriageError(
            "invalid", f"close needs a reason, one of {', '.join(CLOSE_REASONS)}", state
        )
    if action.action != "close" and action.reason is not None:
        raise TriageError("invalid", f"{action.action} takes no reason", state)
    if action.action == "assign":
        if action.assignee is None:
            raise TriageError("invalid", "assign needs an assignee", state)
        if action.assignee.kind == "task_force":
            force = forces.get(action.assignee.name)
            if force is None:
                known = ", ".join(sorted(forces)) or "none configured"
                raise TriageError(
                    "invalid", f"no task force {action.assignee.name!r} (known: {known})", state
                )
            if rule_id is not None and not force.covers(rule_id):
                raise TriageError(
                    "invalid",
                    f"task force {force.name} does not cover rule {rule_id} "
                    f"(it covers {', '.join(force.rules or [])})",
                    state,
                )
            if state.country not in force.countries:
                raise TriageError(
                    "invalid", f"task force {force.name} has no member from {state.country}", state
                )
    elif action.assignee is not None:
        raise TriageError("invalid", f"{action.action} takes no assignee", state)
    if action.action == "note" and action.note is None:
        raise TriageError("invalid", "note needs its text", state)
    if action.note is not None and len(action.note.text) > NOTE_MAX_CHARS:
        raise TriageError("invalid", f"a note is at most {NOTE_MAX_CHARS} characters", state)


def apply(state: TriageState, action: TriageAction, forces: Mapping[str, TaskForce]) -> TriageState:
    """The state after the action, or `TriageError` (the state is unchanged)."""
    check_role(action.actor, action, forces)
    check_action(state, action, forces)
    _, to = TRANSITIONS[action.action]
    revision = state.revision + 1
    notes = state.notes
    if action.note is not None:
        notes = (
            *notes,
            NoteEntry(revision, action.actor, action.at, action.note.text, action.note.shareable),
        )
    closed_versions = state.closed_versions
    if action.alert_version is not None:
        closed_versions = closed_versions | {action.alert_version}
    if to == "closed":
        reason = action.reason
    elif to is not None:
        reason = None
    else:
        reason = state.reason
    return replace(
        state,
        revision=revision,
        status=to or state.status,
        reason=reason,
        assignee=action.assignee if action.action == "assign" else state.assignee,
        notes=notes,
        updated_at=action.at,
        updated_by=action.actor,
        closed_versions=closed_versions,
    )


def allowed_actions(state: TriageState, role: Role) -> list[ActionKind]:
    """What a role may do now (the console shows only these)."""
    return [
        kind
        for kind, (allowed, _) in TRANSITIONS.items()
        if kind in ROLE_ACTIONS[role] and state.status in allowed
    ]


@dataclass
class TriageBook:
    """One country's triage of every alert it has acted on: the fold of its topic."""

    country: str
    forces: Mapping[str, TaskForce]
    states: dict[str, TriageState] = field(default_factory=dict)
    conflicts: int = 0

    def get(self, alert_id: str) -> TriageState:
        return self.states.get(alert_id) or TriageState(alert_id, self.country)

    def check(self, action: TriageAction, rule_id: str | None = None) -> None:
        """Refuse what `apply` would refuse (and, with the alert's rule, an assignment to a
        task force that does not cover it), changing nothing."""
        check_role(action.actor, action, self.forces)
        check_action(self.get(action.alert_id), action, self.forces, rule_id)

    def apply(self, action: TriageAction) -> TriageState | None:
        """Take an action read from the topic; one the state refuses (it lost a race, or
        was written by something that skipped the checks) is counted and left out."""
        try:
            state = apply(self.get(action.alert_id), action, self.forces)
        except TriageError:
            self.conflicts += 1
            return None
        self.states[action.alert_id] = state
        return state


# -- what crosses --------------------------------------------------------------------------


def share(
    action: TriageAction,
    after: TriageState,
    rules: Iterable[TriageShareRule],
    forces: Mapping[str, TaskForce],
    policy: PolicyRef,
) -> SharedTriage | None:
    """The action as the partner receives it, field by field under the policy's triage
    rules; None when nothing of it may cross (a note its author did not mark shareable, an
    assignment to a person)."""
    rule_list = list(rules)

    def decide(name: TriageFieldName) -> tuple[bool, str]:
        for rule in rule_list:
            if name in rule.fields:
                return rule.fields[name] == "release", rule.label
        return False, WITHHELD_RULE

    decisions: list[SharedField] = []

    def field_of(name: TriageFieldName, present: bool, eligible: bool) -> bool:
        if not present:
            return False
        released, label = decide(name)
        released = released and eligible
        decisions.append(
            SharedField(field=name, action="release" if released else "redact", policy_rule=label)
        )
        return released

    status_ok = field_of("status", True, True)
    reason_ok = field_of("reason", after.reason is not None, True)
    assignee = action.assignee if action.action == "assign" else None
    force = forces.get(assignee.name) if assignee and assignee.kind == "task_force" else None
    binational = force is not None and len(force.countries) >= 2
    assignee_ok = field_of("assignee", assignee is not None, binational)
    note = action.note
    note_ok = field_of("note", note is not None, bool(note and note.shareable))
    actor_ok = field_of("actor", True, True)

    substantive = {
        "acknowledge": status_ok,
        "start": status_ok,
        "close": status_ok,
        "reopen": status_ok,
        "assign": assignee_ok,
        "note": note_ok,
    }[action.action]
    if not substantive:
        return None
    return SharedTriage(
        alert_id=action.alert_id,
        country=action.country,
        revision=after.revision,
        action=action.action,
        at=action.at,
        status=after.status if status_ok else None,
        reason=after.reason if reason_ok else None,
        assignee=assignee if assignee_ok else None,
        note=note.text if note_ok and note else None,
        actor=SharedActor(country=action.actor.country, role=action.actor.role)
        if actor_ok
        else None,
        fields=decisions,
        policy=policy,
    )


@dataclass(frozen=True, slots=True)
class PartnerState:
    """What a partner's triage of an alert shows, folded from what crossed (never merged with
    one's own)."""

    alert_id: str
    country: str
    revision: int = 0
    status: Status | None = None
    reason: CloseReason | None = None
    assignee: Assignee | None = None
    notes: tuple[tuple[int, str], ...] = ()
    at: datetime | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "alert_id": self.alert_id,
            "country": self.country,
            "revision": self.revision,
            "status": self.status,
            "reason": self.reason,
            "assignee": self.assignee.model_dump() if self.assignee else None,
            "notes": [{"revision": r, "text": t} for r, t in self.notes],
            "at": self.at.isoformat() if self.at else None,
        }


def take_shared(current: PartnerState | None, shared: SharedTriage) -> PartnerState:
    """A partner's state after one shared record (a repeat or an older one changes nothing)."""
    state = current or PartnerState(shared.alert_id, shared.country)
    if shared.revision <= state.revision:
        return state
    status = shared.status or state.status
    reason = (
        shared.reason
        if shared.status == "closed"
        else (state.reason if shared.status is None else None)
    )
    assignee = shared.assignee if shared.action == "assign" else state.assignee
    notes = state.notes
    if shared.note is not None:
        notes = (*notes, (shared.revision, shared.note))
    return replace(
        state,
        revision=shared.revision,
        status=status,
        reason=reason,
        assignee=assignee,
        notes=notes,
        at=shared.at,
    )


@dataclass(frozen=True, slots=True)
class Disposition:
    """How one country closed the alerts of one rule: closed alerts by reason, and the open
    ones (each country's own figures: never summed across countries)."""

    country: str
    rule_id: str
    closed: Mapping[CloseReason, int]
    open: int

    @property
    def closed_total(self) -> int:
        return sum(self.closed.values())

    def share(self, reason: CloseReason) -> float:
        """The share of the closed alerts closed for this reason (0 when none is closed)."""
        total = self.closed_total
        return self.closed.get(reason, 0) / total if total else 0.0


def dispositions(states: Iterable[TriageState], rule_of: Mapping[str, str]) -> list[Disposition]:
    """Per country and rule, the alerts triaged (at revision 1 or more) by where they stand;
    alerts whose rule is not known (not in `rule_of`) are left out."""
    closed: dict[tuple[str, str], dict[CloseReason, int]] = {}
    still_open: dict[tuple[str, str], int] = {}
    for state in states:
        rule = rule_of.get(state.alert_id)
        if rule is None or state.revision == 0:
            continue
        key = (state.country, rule)
        closed.setdefault(key, {})
        still_open.setdefault(key, 0)
        if state.status == "closed" and state.reason is not None:
            closed[key][state.reason] = closed[key].get(state.reason, 0) + 1
        else:
            still_open[key] += 1
    return [
        Disposition(
            country,
            rule,
            dict(sorted(closed[(country, rule)].items())),
            still_open[(country, rule)],
        )
        for country, rule in sorted(closed)
    ]
