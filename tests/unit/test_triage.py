"""engine/triage.py: states and transitions, roles, revisions, task forces, and what of an
action crosses to the partner under the default policy."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.errors import FusionError
from engine.policy import Keyring, load_policy
from engine.triage import (
    TaskForce,
    TriageBook,
    TriageError,
    TriageState,
    allowed_actions,
    apply,
    parse_task_forces,
    share,
    take_shared,
)
from schemas.triage import Actor, Assignee, Note, TriageAction
from streams.keys import generate

POLICY = load_policy(
    Path(__file__).resolve().parents[2] / "rules" / "policy.yaml",
    Keyring.parse(generate(key_id="ktest"), source="test keys"),
)
AT = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
FORCES = parse_task_forces(
    """
task_forces:
  - name: sonora-arizona
    title: Sonora-Arizona weapons
    members: [{user: ximena, country: MX}, {user: bob, country: US}]
""",
    "forces.yaml",
)
ANA = Actor(user="ximena", country="MX", role="analyst")
LUIS = Actor(user="luis", country="MX", role="lead")
VERA = Actor(user="vera", country="MX", role="viewer")
PIPE = Actor(user="pipeline", country="MX", role="pipeline")


def act(
    action: str,
    revision: int,
    actor: Actor = ANA,
    *,
    reason: str | None = None,
    assignee: Assignee | None = None,
    note: Note | None = None,
    country: str = "MX",
) -> TriageAction:
    return TriageAction.model_validate(
        {
            "action_id": uuid.uuid4().hex,
            "alert_id": "a1",
            "country": country,
            "revision": revision,
            "action": action,
            "actor": actor,
            "at": AT,
            "reason": reason,
            "assignee": assignee,
            "note": note,
        }
    )


def run(*actions: TriageAction) -> TriageState:
    state = TriageState("a1", "MX")
    for a in actions:
        state = apply(state, a, FORCES)
    return state


def test_the_life_of_an_alert() -> None:
    tf = Assignee(kind="task_force", name="sonora-arizona")
    state = run(
        act("acknowledge", 0),
        act("assign", 1, assignee=tf),
        act("start", 2),
        act("note", 3, note=Note(text="checked the plate", shareable=False)),
        act("close", 4, LUIS, reason="false_positive"),
    )
    assert (state.revision, state.status, state.reason, state.assignee) == (
        5,
        "closed",
        "false_positive",
        tf,
    )
    assert [n.text for n in state.notes] == ["checked the plate"]
    reopened = apply(state, act("reopen", 5, LUIS), FORCES)
    assert (reopened.status, reopened.reason, reopened.revision) == ("in_progress", None, 6)


def test_illegal_transitions_are_refused_with_the_allowed_states() -> None:
    with pytest.raises(TriageError, match=r"cannot reopen when new \(allowed when closed\)") as e:
        run(act("reopen", 0, LUIS))
    assert e.value.code == "illegal_transition"
    closed = run(act("close", 0, LUIS, reason="duplicate"))
    with pytest.raises(TriageError, match="cannot acknowledge when closed"):
        apply(closed, act("acknowledge", 1), FORCES)
    # a note is allowed on a closed alert
    assert apply(closed, act("note", 1, note=Note(text="x")), FORCES).revision == 2


def test_a_stale_revision_is_refused_with_the_current_state() -> None:
    state = run(act("acknowledge", 0))
    with pytest.raises(TriageError, match="made against revision 0, but it is at revision 1") as e:
        apply(state, act("start", 0), FORCES)
    assert e.value.code == "stale_revision" and e.value.state == state


@pytest.mark.parametrize(
    ("actor", "action", "message"),
    [
        (VERA, act("acknowledge", 0, VERA), "role viewer may not acknowledge"),
        (ANA, act("close", 0, ANA, reason="false_positive"), "role analyst may not close"),
        (
            ANA,
            act("assign", 0, assignee=Assignee(kind="person", name="luis")),
            "an analyst assigns only to self or a task force, not to luis",
        ),
        (
            LUIS,
            act("close", 0, LUIS, reason="automated_closure"),
            "only the pipeline closes as automated_closure",
        ),
        (PIPE, act("close", 0, PIPE, reason="other"), "the pipeline closes only as"),
        (
            Actor(user="bob", country="US", role="lead"),
            act("acknowledge", 0, Actor(user="bob", country="US", role="lead")),
            r"bob \(US\) may not act on MX's triage",
        ),
    ],
)
def test_roles(actor: Actor, action: TriageAction, message: str) -> None:
    with pytest.raises(TriageError, match=message) as e:
        run(action)
    assert e.value.code == "forbidden"


def test_what_each_role_may_do_now() -> None:
    new = TriageState("a1", "MX")
    assert allowed_actions(new, "viewer") == []
    assert allowed_actions(new, "analyst") == ["acknowledge", "start", "assign", "note"]
    assert "close" in allowed_actions(new, "lead")
    closed = run(act("close", 0, LUIS, reason="duplicate"))
    assert allowed_actions(closed, "lead") == ["reopen", "note"]


def test_an_analyst_assigns_self_or_a_task_force_a_lead_anyone() -> None:
    assert run(act("assign", 0, assignee=Assignee(kind="person", name="ximena"))).assignee
    assert run(act("assign", 0, LUIS, assignee=Assignee(kind="person", name="ximena"))).assignee
    with pytest.raises(TriageError, match="no task force 'nope' \\(known: sonora-arizona\\)"):
        run(act("assign", 0, assignee=Assignee(kind="task_force", name="nope")))


def test_invalid_actions() -> None:
    with pytest.raises(TriageError, match="close needs a reason"):
        run(act("close", 0, LUIS))
    with pytest.raises(TriageError, match="note needs its text"):
        run(act("note", 0))
    with pytest.raises(ValueError, match="at most 4000 characters"):
        Note(text="x" * 4001)


def test_the_pipeline_closes_a_withdrawn_alert() -> None:
    state = run(act("acknowledge", 0))
    closure = act(
        "close",
        1,
        PIPE,
        reason="automated_closure",
        note=Note(text="withdrawn: an inspection refutes it"),
    )
    closure = closure.model_copy(update={"alert_version": 2})
    after = apply(state, closure, FORCES)
    assert (after.status, after.reason, after.closed_versions) == (
        "closed",
        "automated_closure",
        frozenset({2}),
    )


def test_the_book_folds_the_topic_and_counts_losers_of_a_race() -> None:
    book = TriageBook("MX", FORCES)
    assert book.get("a1").revision == 0
    assert book.apply(act("acknowledge", 0)) is not None
    assert book.apply(act("start", 0)) is None  # written against revision 0 by a second console
    assert (book.get("a1").status, book.conflicts) == ("acknowledged", 1)
    with pytest.raises(TriageError, match="stale"):
        book.check(act("start", 0))


def test_task_forces_are_binational_and_errors_say_where() -> None:
    assert FORCES["sonora-arizona"].countries == {"MX", "US"}
    with pytest.raises(FusionError, match=r"f\.yaml: task force solo: .*binational"):
        parse_task_forces(
            "task_forces:\n  - name: solo\n    members: [{user: a, country: MX},"
            " {user: b, country: MX}]\n",
            "f.yaml",
        )
    with pytest.raises(FusionError, match=r"f\.yaml: task force t1: field members\.0\.country"):
        parse_task_forces(
            "task_forces:\n  - name: t1\n    members: [{user: a, country: mx}, {user: b, "
            "country: US}]\n",
            "f.yaml",
        )
    assert isinstance(FORCES["sonora-arizona"], TaskForce)


def test_default_policy_status_reason_task_force_and_shareable_notes_cross() -> None:
    tf = Assignee(kind="task_force", name="sonora-arizona")
    state = TriageState("a1", "MX")
    out = []
    for a in (
        act("acknowledge", 0),
        act("assign", 1, assignee=tf),
        act("note", 2, note=Note(text="MX only: informant name", shareable=False)),
        act("note", 3, note=Note(text="plate seen twice at Nogales", shareable=True)),
        act("assign", 4, LUIS, assignee=Assignee(kind="person", name="ximena")),
        act("close", 5, LUIS, reason="false_positive"),
    ):
        state = apply(state, a, FORCES)
        out.append(share(a, state, POLICY.doc.triage, FORCES, POLICY.ref))
    ack, assign, private, public, person, close = out
    assert ack is not None and ack.status == "acknowledged" and ack.actor is not None
    assert (ack.actor.country, ack.actor.role) == ("MX", "analyst")
    assert "ximena" not in ack.model_dump_json()
    assert assign is not None and assign.assignee == tf
    assert private is None and person is None
    assert public is not None and public.note == "plate seen twice at Nogales"
    assert {(f.field, f.action, f.policy_rule) for f in public.fields} >= {
        ("note", "release", "triage-shareable-notes (MLAT art. 7)"),
        ("status", "release", "triage-status (MLAT art. 7)"),
    }
    assert close is not None and (close.status, close.reason) == ("closed", "false_positive")
    assert close.policy == POLICY.ref
    partner = None
    for shared in (ack, assign, public, close, assign):  # a repeat changes nothing
        assert shared is not None
        partner = take_shared(partner, shared)
    assert partner is not None
    assert (partner.status, partner.reason, partner.assignee, partner.revision) == (
        "closed",
        "false_positive",
        tf,
        6,
    )
    assert [t for _, t in partner.notes] == ["plate seen twice at Nogales"]


def test_a_field_no_triage_rule_names_is_withheld() -> None:
    state = apply(TriageState("a1", "MX"), act("acknowledge", 0), FORCES)
    shared = share(act("acknowledge", 0), state, [], FORCES, POLICY.ref)
    assert shared is None


def test_dispositions_are_each_countrys_own_share_of_closed_alerts_by_reason() -> None:
    from engine.triage import dispositions

    def closed(alert_id: str, country: str, reason: str) -> TriageState:
        return TriageState(alert_id, country, revision=2, status="closed", reason=reason)  # type: ignore[arg-type]

    states = [
        closed("a1", "MX", "false_positive"),
        closed("a2", "MX", "false_positive"),
        closed("a3", "MX", "true_positive"),
        TriageState("a4", "MX", revision=1, status="acknowledged"),
        TriageState("a5", "MX"),  # never triaged
        closed("a1", "US", "duplicate"),
        closed("zz", "US", "duplicate"),  # its rule unknown
    ]
    rule_of = {"a1": "r1", "a2": "r1", "a3": "r1", "a4": "r1", "a5": "r1"}
    mx, us = dispositions(states, rule_of)
    assert (mx.country, mx.rule_id, dict(mx.closed), mx.open) == (
        "MX",
        "r1",
        {"false_positive": 2, "true_positive": 1},
        1,
    )
    assert mx.share("false_positive") == 2 / 3 and mx.share("duplicate") == 0
    assert (us.country, dict(us.closed), us.open) == ("US", {"duplicate": 1}, 0)


def test_an_assignment_to_a_task_force_that_does_not_cover_the_rule_is_refused() -> None:
    forces = parse_task_forces(
        "task_forces:\n  - name: weapons\n    members: [{user: a, country: MX}, "
        "{user: b, country: US}]\n    rules: [weapons-tip-near-seizure]\n",
        "f.yaml",
    )
    book = TriageBook("MX", forces)
    assign = act("assign", 0, assignee=Assignee(kind="task_force", name="weapons"))
    book.check(assign, "weapons-tip-near-seizure")
    with pytest.raises(TriageError, match="task force weapons does not cover rule watchlist-plate"):
        book.check(assign, "watchlist-plate")
