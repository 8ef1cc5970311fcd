"""streams/tools/relay.py's decisions without Kafka: what of each country's triage reaches the
partners that received the alert, once; nothing loops back; a withdrawal closes the triage."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from schemas.alerts import Alert
from schemas.triage import Actor, Assignee, Note, TriageAction
from streams.tools.relay import TriageRelay
from tests.unit.test_console import alert_doc
from tests.unit.test_triage import FORCES, POLICY

AT = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
ANA = Actor(user="ximena", country="MX", role="analyst")


def relay() -> TriageRelay:
    return TriageRelay(
        partners=["US", "MX"],
        forces=FORCES,
        rules=POLICY.doc.triage,
        policy=POLICY.ref,
        inbound_topic=lambda cc: f"triage.{cc.lower()}.inbound",
        clock=lambda: AT,
    )


def action(kind: str, revision: int, **extra: object) -> TriageAction:
    return TriageAction.model_validate(
        {
            "action_id": uuid.uuid4().hex,
            "alert_id": "a1",
            "country": "MX",
            "revision": revision,
            "action": kind,
            "actor": ANA,
            "at": AT,
            **extra,
        }
    )


def both(**extra: object) -> Alert:
    return Alert.model_validate(alert_doc("a1", recipients=["MX", "US"], **extra))


def test_actions_reach_the_partner_once_with_their_audit() -> None:
    r = relay()
    assert r.go_live() == ([], [])
    r.take_alert("MX", both())
    releases, closures = r.take_action(action("acknowledge", 0))
    assert closures == [] and [x.destination for x in releases] == ["US"]
    (release,) = releases
    assert release.audit.topic == "triage.us.inbound" and release.shared.status == "acknowledged"
    assert release.audit.fields == release.shared.fields and release.audit.revision == 1
    private = action("note", 1, note=Note(text="MX only", shareable=False))
    assert r.take_action(private) == ([], [])
    tf = Assignee(kind="task_force", name="sonora-arizona")
    (release,) = r.take_action(action("assign", 2, assignee=tf))[0]
    assert release.shared.assignee == tf


def test_an_alert_only_mx_received_sends_nothing_to_the_us() -> None:
    r = relay()
    r.go_live()
    r.take_alert("MX", Alert.model_validate(alert_doc("a1", recipients=["MX"])))
    assert r.take_action(action("acknowledge", 0)) == ([], [])


def test_an_action_read_before_its_alert_waits_for_it() -> None:
    r = relay()
    r.go_live()
    assert r.take_action(action("acknowledge", 0)) == ([], [])
    releases, _ = r.take_alert("MX", both())
    assert [x.destination for x in releases] == ["US"]


def test_a_restart_releases_only_what_was_not_released() -> None:
    first = relay()
    first.go_live()
    first.take_alert("MX", both())
    (done,) = first.take_action(action("acknowledge", 0))[0]
    ack = action("acknowledge", 0)
    start = action("start", 1)
    again = relay()  # reads everything back
    again.take_alert("MX", both())
    again.take_action(ack)
    again.take_action(start)
    again.seen_release("US", done.shared)
    releases, closures = again.go_live()
    assert [x.shared.revision for x in releases] == [2] and closures == []


def test_a_withdrawal_closes_the_triage_once_and_says_why() -> None:
    r = relay()
    r.go_live()
    r.take_alert("MX", both())
    r.take_action(action("acknowledge", 0))
    withdrawn = both(
        version=2,
        change="withdrawn",
        revision={
            "reason": "an inspection refutes the crossing",
            "records": ["insp-1"],
            "superseded_by": None,
        },
    )
    _, closures = r.take_alert("MX", withdrawn)
    (closure,) = closures
    assert (closure.revision, closure.reason, closure.actor.role) == (
        1,
        "automated_closure",
        "pipeline",
    )
    assert closure.note is not None and "an inspection refutes the crossing" in closure.note.text
    assert r.take_alert("MX", withdrawn) == ([], [])  # not twice before it is read back
    releases, more = r.take_action(closure)
    assert more == [] and releases[0].shared.reason == "automated_closure"
    assert r.books["MX"].get("a1").status == "closed"
    # read back after a restart: closed already, nothing more
    assert r.take_alert("MX", withdrawn) == ([], [])
