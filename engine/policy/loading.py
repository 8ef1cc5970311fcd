"""Loading a policy file, and reloading it while a worker runs. A broken file is refused with
every problem named by file, policy rule and field; on reload the policy in force stays."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from engine.border import BorderLine
from engine.errors import PolicyError
from engine.policy.decisions import Policy
from engine.policy.keys import Keyring
from engine.policy.model import PolicyDoc, clean_message
from schemas.events import COMMON_FIELDS, EVENT_MODELS

SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")
EVENT_FIELDS: dict[str, frozenset[str]] = {
    etype: frozenset(model.model_fields) - COMMON_FIELDS for etype, model in EVENT_MODELS.items()
}
EVENT_FIELDS["patrol"] = EVENT_FIELDS["track"]  # a track of own forces, asked apart


def _named(doc: Any, section: str, index: int) -> str:
    items = doc.get(section) if isinstance(doc, Mapping) else None
    if isinstance(items, list) and index < len(items):
        item = items[index]
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            return str(item["name"])
    return f"#{index + 1}"


def _from_validation(e: ValidationError, doc: Any, file: str) -> PolicyError:
    problems: list[PolicyError] = []
    for err in e.errors():
        loc = list(err["loc"])
        rule: str | None = None
        if len(loc) >= 2 and loc[0] in ("rules", "recipients") and isinstance(loc[1], int):
            rule = _named(doc, str(loc[0]), loc[1])
            loc = loc[2:] if loc[0] == "rules" else ["recipients", *loc[2:]]
        msg = clean_message(err["msg"])
        value = err.get("input")
        if err["type"] in ("literal_error", "enum", "string_pattern_mismatch") and isinstance(
            value, str | int | float
        ):
            msg = f"{msg}; got {value!r}"
        if err["type"] == "missing":
            msg = "required, but missing"
        problems.append(
            PolicyError(msg, file=file, rule=rule, field=".".join(map(str, loc)) or None)
        )
    return _combine(problems)


def _combine(problems: list[PolicyError]) -> PolicyError:
    first, rest = problems[0], problems[1:]
    if not rest:
        return first
    err = PolicyError(first.detail, file=first.file, rule=first.rule, field=first.field, more=rest)
    err.problems = [first, *rest]
    return err


def _semantic_problems(doc: PolicyDoc, keyring: Keyring, file: str) -> list[PolicyError]:
    out: list[PolicyError] = []

    def bad(msg: str, rule: str | None, field: str | None) -> None:
        out.append(PolicyError(msg, file=file, rule=rule, field=field))

    seen: dict[str, int] = {}
    for i, r in enumerate(doc.rules):
        if r.name in seen:
            bad(f"the name is already used by rule #{seen[r.name] + 1}", r.name, "name")
        seen.setdefault(r.name, i)
        if r.event is None and not r.fields and r.other_fields is None:
            bad("the rule decides nothing: give `event`, `fields` or `other_fields`", r.name, None)
        types: list[str] = list(r.event_types) if r.event_types else sorted(EVENT_FIELDS)
        known = frozenset[str]().union(*(EVENT_FIELDS[t] for t in types))
        for name, act in r.fields.items():
            where = f"fields.{name}"
            if name not in known:
                bad(
                    f"unknown field {name!r} for event types {sorted(types)}; "
                    f"valid fields are {sorted(known)}",
                    r.name,
                    where,
                )
            elif act == "drop":
                bad(
                    "`drop` withholds a whole event, not one field: write `event: drop`, "
                    "or `redact` to withhold the field",
                    r.name,
                    where,
                )
            elif act == "generalize" and name != "location":
                bad("only `location` can be generalized", r.name, where)
            elif act == "pseudonymize" and name == "location":
                bad("a location cannot be pseudonymized: generalize or redact it", r.name, where)
            elif act == "pseudonymize" and name not in keyring.kinds():
                have = sorted(keyring.kinds())
                bad(
                    f"no pseudonymisation key of kind {name!r} in {keyring.source}"
                    + (f" (it has keys for {have})" if have else ""),
                    r.name,
                    where,
                )
    missing = [s for s in SEVERITIES if s not in doc.tlp.by_severity]
    if missing:
        bad(f"no TLP label for severity {missing[0]!r}", None, f"tlp.by_severity.{missing[0]}")
    names: set[str] = set()
    for z in doc.recipients:
        if z.name in names:
            bad("the name is already used by another recipients entry", z.name, "name")
        names.add(z.name)
    return out


def parse_policy(
    data: bytes | str,
    keyring: Keyring,
    *,
    file: str = "<inline>",
    border: BorderLine | None = None,
) -> Policy:
    """A policy from the bytes of a policy file (hashed as given); PolicyError names the file,
    the policy rule and the field of every problem."""
    raw = data.encode() if isinstance(data, str) else data
    sha = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError("not UTF-8 text", file=file) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PolicyError(f"not valid YAML{where}: {getattr(e, 'problem', e)}", file=file) from e
    if not isinstance(doc, dict):
        raise PolicyError(
            "a policy file must be a mapping with id, version, border_zone_km, "
            f"location_precision_m, tlp and rules; got {type(doc).__name__}",
            file=file,
        )
    try:
        model = PolicyDoc.model_validate(doc)
    except ValidationError as e:
        raise _from_validation(e, doc, file) from None
    problems = _semantic_problems(model, keyring, file)
    if problems:
        raise _combine(problems)
    return Policy(model, sha256=sha, keyring=keyring, file=file, border=border)


def load_policy(path: Path | str, keys: Keyring) -> Policy:
    """The policy in a file, hashed (SHA-256 of its bytes) into every alert and audit record."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise PolicyError(f"cannot read the policy file: {e.strerror or e}", file=str(p)) from e
    return parse_policy(raw, keys, file=str(p))


@dataclass(frozen=True, slots=True)
class Reload:
    """The outcome of a reload: the policy in force, whether it changed, and why a new file
    was refused (the old policy then stays in force)."""

    policy: Policy
    changed: bool
    error: PolicyError | None = None


def reload_policy(current: Policy, path: Path | str, keys: Keyring | None = None) -> Reload:
    """Load the file again if its bytes changed; a refused file leaves `current` in force."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        err = PolicyError(f"cannot read the policy file: {e.strerror or e}", file=str(p))
        return Reload(current, False, err)
    if hashlib.sha256(raw).hexdigest() == current.ref.sha256 and keys is None:
        return Reload(current, False)
    try:
        new = parse_policy(raw, keys or current.keyring, file=str(p), border=current.border)
    except PolicyError as e:
        return Reload(current, False, e)
    changed = new.ref != current.ref or new.keyring != current.keyring
    return Reload(new, changed)


def check_policy(paths: Iterable[Path | str], keys: Keyring) -> list[PolicyError]:
    """Every problem of every policy file, for a CI check."""
    out: list[PolicyError] = []
    for p in paths:
        try:
            load_policy(p, keys)
        except PolicyError as e:
            out.extend(e.problems)
    return out
