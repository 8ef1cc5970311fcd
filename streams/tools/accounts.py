"""The consoles' users: a users file kept out of the repository (like the keys file,
`streams/keys.py`), one entry per user with a country, a role and an argon2id hash of the
password; `fusion users add|disable|passwd|list FILE` manages it.

    {"users": [{"name": "ximena", "country": "MX", "role": "analyst",
                "hash": "$argon2id$v=19$...", "disabled": false}]}

Roles: `viewer` reads; `analyst` acknowledges, starts work, notes, assigns to self or a task
force; `lead` also closes, reopens and assigns to anyone (engine/triage.py, `ROLE_ACTIONS`).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import FusionError
from engine.triage import TaskForce, parse_task_forces
from streams.settings import Settings

UserRole = Literal["viewer", "analyst", "lead"]
# argon2id (the library's default type) with its RFC 9106 low-memory profile.
HASHER = PasswordHasher()
# A hash compared when the user is unknown, so that an unknown name takes as long as a
# known one with a wrong password.
_DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(16))
MIN_PASSWORD = 12


class AccountError(FusionError):
    """The users file or a user is invalid; says which."""


class User(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9._-]{1,31}$")]
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    role: UserRole
    hash: Annotated[str, Field(pattern=r"^\$argon2id\$")]
    disabled: bool = False


class UsersDoc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    users: list[User] = Field(default_factory=list)


class Accounts:
    """The users of a users file, read again whenever the file changes (so `disable` and
    `passwd` take effect without a restart)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, User] = {}

    @property
    def configured(self) -> bool:
        return self.path is not None

    def users(self) -> dict[str, User]:
        if self.path is None:
            return {}
        try:
            st = self.path.stat()
        except OSError as e:
            raise AccountError(f"cannot read the users file {self.path}: {e.strerror}") from e
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._users = {u.name: u for u in read_users(self.path).users}
            self._stamp = stamp
        return self._users

    def get(self, name: str) -> User | None:
        """An enabled user by name."""
        user = self.users().get(name)
        return user if user is not None and not user.disabled else None

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if the name is of an enabled user and the password is theirs."""
        user = self.get(name)
        try:
            HASHER.verify(user.hash if user else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            return None
        return user


def read_users(path: Path) -> UsersDoc:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return UsersDoc.model_validate(doc)
    except OSError as e:
        raise AccountError(f"cannot read the users file {path}: {e.strerror}") from e
    except (ValueError, ValidationError) as e:
        raise AccountError(f"{path}: not a users file: {e}") from e


def write_users(path: Path, doc: UsersDoc) -> None:
    """Write the users file readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(doc.model_dump_json(indent=2) + "\n")
    os.replace(tmp, path)


def new_password() -> str:
    return secrets.token_urlsafe(15)


def add_user(path: Path, name: str, country: str, role: UserRole, password: str) -> User:
    """Add a user (refused if the name is taken)."""
    doc = read_users(path) if path.exists() else UsersDoc()
    if any(u.name == name for u in doc.users):
        raise AccountError(f"{path}: user {name} exists (passwd changes the password)")
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password is at least {MIN_PASSWORD} characters")
    try:
        user = User(name=name, country=country.upper(), role=role, hash=HASHER.hash(password))
    except ValidationError as e:
        raise AccountError(f"user {name}: {e}") from e
    write_users(path, UsersDoc(users=[*doc.users, user]))
    return user


def change_user(
    path: Path, name: str, *, password: str | None = None, disabled: bool | None = None
) -> User:
    doc = read_users(path)
    found = next((u for u in doc.users if u.name == name), None)
    if found is None:
        raise AccountError(f"{path}: no user {name}")
    update: dict[str, object] = {}
    if password is not None:
        if len(password) < MIN_PASSWORD:
            raise AccountError(f"a password is at least {MIN_PASSWORD} characters")
        update["hash"] = HASHER.hash(password)
    if disabled is not None:
        update["disabled"] = disabled
    changed = found.model_copy(update=update)
    users = [changed if u.name == name else u for u in doc.users]
    write_users(path, UsersDoc(users=users))
    return changed


def _password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password from stdin (`--password-stdin`), else a new one to print."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    if args.prompt:
        return getpass.getpass("password: "), False
    return new_password(), True


def main(argv: Sequence[str] | None = None) -> int:
    """`fusion users {add|disable|enable|passwd|list} FILE ...`."""
    ap = argparse.ArgumentParser(prog="fusion users", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add", help="add a user; prints a new password unless given one")
    a.add_argument("file", type=Path)
    a.add_argument("name")
    a.add_argument("--country", required=True, help="the user's country, e.g. MX")
    a.add_argument("--role", required=True, choices=("viewer", "analyst", "lead"))
    for name, text in (("disable", "the user can no longer log in"), ("enable", "again")):
        d = sub.add_parser(name, help=text)
        d.add_argument("file", type=Path)
        d.add_argument("name")
    p = sub.add_parser("passwd", help="a new password; prints it unless given one")
    p.add_argument("file", type=Path)
    p.add_argument("name")
    for parser in (a, p):
        parser.add_argument("--password-stdin", action="store_true", help="read it from stdin")
        parser.add_argument("--prompt", action="store_true", help="ask for it")
    ls = sub.add_parser("list", help="name, country, role, disabled (never the hashes)")
    ls.add_argument("file", type=Path)
    args = ap.parse_args(argv)
    path: Path = args.file
    try:
        if args.cmd == "add":
            password, show = _password(args)
            user = add_user(path, args.name, args.country, args.role, password)
            print(f"added {user.name} ({user.country}, {user.role})")
            if show:
                print(f"password: {password}")
        elif args.cmd == "passwd":
            password, show = _password(args)
            change_user(path, args.name, password=password)
            print(f"changed the password of {args.name}")
            if show:
                print(f"password: {password}")
        elif args.cmd in ("disable", "enable"):
            change_user(path, args.name, disabled=args.cmd == "disable")
            print(f"{args.cmd}d {args.name}")
        else:
            for u in read_users(path).users:
                print(f"{u.name:16} {u.country} {u.role:8}{' disabled' if u.disabled else ''}")
    except AccountError as e:
        print(f"fusion users: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


def configured_task_forces(settings: Settings) -> dict[str, TaskForce]:
    """The task forces of FUSION_TASK_FORCES_FILE (none when unset)."""
    path = settings.task_forces_file
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise AccountError(f"cannot read the task forces file {path}: {e.strerror}") from e
    forces = parse_task_forces(text, str(path))
    for force in forces.values():
        unknown = sorted(set(force.countries) - set(settings.partners))
        if unknown:
            raise AccountError(
                f"{path}: task force {force.name}: members from {unknown}, "
                f"not partners {settings.partners}"
            )
    return forces
