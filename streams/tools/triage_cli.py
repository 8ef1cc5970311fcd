"""`fusion triage ALERT_ID ack|start|assign|note|close|reopen --user NAME`: one triage action
as a named user of the users file, with the console's checks (password, role, the alert on
the user's alert topic, the transition, the revision), written to the user's country's triage
topic and confirmed once read back."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from engine.triage import TriageBook, TriageError
from schemas.triage import ActionKind, Actor, Assignee, Note, TriageAction
from streams.clients import aiokafka_config
from streams.settings import Settings
from streams.tools.accounts import AccountError, Accounts, User, configured_task_forces
from streams.tools.console.feed import subscribe_all
from streams.tools.console.triage import TriageWriter, find_alert

ACTIONS: dict[str, ActionKind] = {
    "ack": "acknowledge",
    "acknowledge": "acknowledge",
    "start": "start",
    "assign": "assign",
    "note": "note",
    "close": "close",
    "reopen": "reopen",
}


async def read_book(settings: Settings, book: TriageBook) -> None:
    """Fold the country's triage topic, read to its end as of now, into the book."""
    topic = settings.triage_topic(book.country)
    consumer = AIOKafkaConsumer(
        group_id=None,
        enable_auto_commit=False,
        client_id="fusion-triage-cli",
        **aiokafka_config(settings),
    )
    try:
        await consumer.start()
        tps = sorted(await subscribe_all(consumer, [topic]))
        if not tps:
            raise AccountError(f"cannot read {topic}")
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for record in records:
                    if record.offset < ends[tp]:
                        book.apply(TriageAction.model_validate_json(record.value or b""))
    finally:
        await consumer.stop()


async def act(settings: Settings, action: TriageAction, *, current: bool = False) -> str:
    """Check, write and confirm an action (`current`: made against the current revision)."""
    forces = configured_task_forces(settings)
    book = TriageBook(action.country, forces)
    await read_book(settings, book)
    if current:
        action = action.model_copy(update={"revision": book.get(action.alert_id).revision})
    book.check(action)  # the role first: a viewer learns nothing more about the alert
    topic = settings.alert_topic(action.country)
    alert = await find_alert(settings, topic, action.alert_id)
    if alert is None:
        raise TriageError("unknown_alert", f"unknown alert {action.alert_id}: not on {topic}")
    book.check(action, str(alert.get("rule_id", "")))
    writer = TriageWriter(settings, action.country)
    await writer.start()
    try:
        await writer.write(action)
    finally:
        await writer.stop()
    after = TriageBook(action.country, forces)
    await read_book(settings, after)
    state = after.get(action.alert_id)
    if state.revision != action.revision + 1 or state.updated_by != action.actor:
        raise TriageError(
            "stale_revision",
            f"alert {action.alert_id}: another action took "
            f"revision {action.revision} first; now {state.status} at revision "
            f"{state.revision}",
        )
    text = f"{action.alert_id}: {action.country} {state.status}"
    if state.reason:
        text += f", {state.reason}"
    if state.assignee:
        text += f"; assigned to {state.assignee.kind.replace('_', ' ')} {state.assignee.name}"
    return f"{text} (revision {state.revision})"


def _login(settings: Settings, name: str, from_stdin: bool) -> User:
    accounts = Accounts(settings.users_file)
    if not accounts.configured:
        raise AccountError("no users: set FUSION_USERS_FILE")
    password = sys.stdin.readline().rstrip("\n") if from_stdin else getpass.getpass()
    user = accounts.authenticate(name, password)
    if user is None:
        raise AccountError("wrong user name or password")
    return user


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fusion triage", description=__doc__.split("\n\n")[0])
    ap.add_argument("alert_id")
    ap.add_argument("action", choices=sorted(ACTIONS))
    ap.add_argument("--user", required=True, help="a user of FUSION_USERS_FILE")
    ap.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    ap.add_argument(
        "--reason",
        help="for close: false_positive, duplicate, true_positive, benign_positive, other",
    )
    ap.add_argument("--to", help="for assign: task_force:NAME or person:NAME")
    ap.add_argument("--note", help="for note (or a close's comment), at most 4,000 characters")
    ap.add_argument("--shareable", action="store_true", help="the note may cross to the partner")
    ap.add_argument(
        "--revision",
        type=int,
        default=-1,
        help="the revision the action is made against (default: the current one)",
    )
    args = ap.parse_args(argv)
    settings = Settings()
    try:
        user = _login(settings, args.user, args.password_stdin)
        assignee = None
        if args.to:
            kind, _, name = args.to.partition(":")
            assignee = Assignee.model_validate({"kind": kind, "name": name})
        note = Note(text=args.note, shareable=args.shareable) if args.note else None
        action = TriageAction(
            action_id=uuid.uuid4().hex,
            alert_id=args.alert_id,
            country=user.country,
            revision=max(args.revision, 0),
            action=ACTIONS[args.action],
            actor=Actor(user=user.name, country=user.country, role=user.role),
            at=datetime.now(UTC),
            reason=args.reason,
            assignee=assignee,
            note=note,
        )
        print(asyncio.run(act(settings, action, current=args.revision < 0)))
    except (AccountError, TriageError) as e:
        print(f"fusion triage: {e}", file=sys.stderr)
        return 3 if isinstance(e, TriageError) and e.code == "forbidden" else 1
    except ValidationError as e:
        print(f"fusion triage: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
