"""Rule files: YAML documents to a validated `RuleSet`, with errors that name the file, the
rule and the field, and every problem of a set reported at once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from engine.correlators import RULE_TYPES
from engine.errors import RuleError, RuleSetError
from engine.rules import RuleBase, RuleSet


def _where(loc: Sequence[int | str]) -> str:
    return ".".join(str(p) for p in loc) or "(rule)"


def parse_rule(doc: Any, *, file: str, index: int) -> RuleBase:
    """Validate one rule document; raise RuleError naming the file, the rule and the field."""
    # The rule-type table imports the rule models, which build on this module: read it at
    # call time, not at import.
    if not isinstance(doc, dict):
        raise RuleError(f"rule #{index + 1} must be a mapping, got {type(doc).__name__}", file=file)
    rule_id = doc.get("id") if isinstance(doc.get("id"), str) else f"#{index + 1}"
    kind = doc.get("type")
    if kind not in RULE_TYPES:
        valid = sorted(RULE_TYPES)
        raise RuleError(
            f"unknown rule type {kind!r}; valid options are {valid}",
            file=file,
            rule_id=rule_id,
            field="type",
        )
    body = {k: v for k, v in doc.items() if k != "type"}
    try:
        return RULE_TYPES[kind].rule.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise RuleError(
            f"{first['msg']}{more}", file=file, rule_id=rule_id, field=_where(first["loc"])
        ) from e


def _documents(path: Path, raw: bytes) -> list[Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RuleError("not UTF-8 text", file=str(path)) from e
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RuleError(f"not valid YAML{where}: {getattr(e, 'problem', e)}", file=str(path)) from e
    rules: list[Any] = []
    for d in docs:
        if isinstance(d, dict) and "rules" in d and "id" not in d:
            if not isinstance(d["rules"], list):
                raise RuleError("`rules:` must be a list of rules", file=str(path))
            rules.extend(d["rules"])
        else:
            rules.append(d)
    return rules


def _key_conflicts(rules: list[RuleBase], sources: dict[str, str]) -> list[RuleError]:
    """Rules are co-partitioned by key name, so one name must mean one key everywhere."""
    first: dict[str, RuleBase] = {}
    errors = []
    for r in rules:
        spec = r.route_key()
        if spec is None:
            continue
        seen = first.setdefault(spec.name, r)
        other = seen.route_key()
        if seen is not r and other is not None and other.fields != spec.fields:
            errors.append(
                RuleError(
                    f"key {spec.name!r} reads fields {dict(spec.fields) or 'by its name'} here but "
                    f"{dict(other.fields) or 'by its name'} in rule {seen.id}; "
                    "give the key another name or the same fields",
                    file=sources.get(r.id),
                    rule_id=r.id,
                    field="key",
                )
            )
    return errors


def load_rules(paths: Sequence[Path | str]) -> RuleSet:
    """Load every rule file (a directory means its *.yaml files); report all problems at once."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted([*p.glob("*.yaml"), *p.glob("*.yml")]))
        else:
            files.append(p)
    errors: list[RuleError] = []
    rules: list[RuleBase] = []
    sources: dict[str, str] = {}
    contents: dict[str, bytes] = {}
    for f in files:
        if f.name.startswith("policy"):
            continue
        try:
            raw = f.read_bytes()
            contents[str(f)] = raw
            docs = _documents(f, raw)
        except (OSError, RuleError) as e:
            errors.append(e if isinstance(e, RuleError) else RuleError(str(e), file=str(f)))
            continue
        for i, doc in enumerate(docs):
            try:
                rule = parse_rule(doc, file=str(f), index=i)
            except RuleError as e:
                errors.append(e)
                continue
            if rule.id in sources:
                errors.append(
                    RuleError(
                        f"duplicate rule id, already defined in {sources[rule.id]}",
                        file=str(f),
                        rule_id=rule.id,
                        field="id",
                    )
                )
                continue
            sources[rule.id] = str(f)
            rules.append(rule)
    errors.extend(_key_conflicts(rules, sources))
    if errors:
        raise RuleSetError(errors)
    if not files:
        raise RuleSetError([RuleError(f"no rule files found in {', '.join(map(str, paths))}")])
    return RuleSet(rules, sources, contents)


def parse_rules_text(text: str, *, file: str = "<inline>") -> RuleSet:
    """A rule set from YAML text (for tests and tools)."""
    errors: list[RuleError] = []
    rules: list[RuleBase] = []
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise RuleSetError([RuleError(f"not valid YAML: {e}", file=file)]) from e
    flat: list[Any] = []
    for d in docs:
        flat.extend(d["rules"] if isinstance(d, dict) and "rules" in d and "id" not in d else [d])
    for i, doc in enumerate(flat):
        try:
            rules.append(parse_rule(doc, file=file, index=i))
        except RuleError as e:
            errors.append(e)
    errors.extend(_key_conflicts(rules, {r.id: file for r in rules}))
    if errors:
        raise RuleSetError(errors)
    return RuleSet(rules)
