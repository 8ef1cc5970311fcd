"""The engine's exceptions: one root, each saying where the problem is."""

from __future__ import annotations


def located(message: str, file: str | None, rule: str | None, field: str | None) -> str:
    """`<file>: <rule>: field <field>: <message>`, leaving out what is not known."""
    where = [w for w in (file, rule, field and f"field {field}") if w]
    return ": ".join([*where, message])


class FusionError(Exception):
    """Root of every error the fusion engine raises on purpose."""

    retriable = False


class RuleError(FusionError):
    """A rule file, rule or field is invalid; names all three where known."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        rule_id: str | None = None,
        field: str | None = None,
    ) -> None:
        self.file = file
        self.rule_id = rule_id
        self.field = field
        super().__init__(located(message, file, rule_id and f"rule {rule_id}", field))


class RuleSetError(FusionError):
    """A rule set was refused; carries every problem found, not only the first."""

    def __init__(self, errors: list[RuleError]) -> None:
        self.errors = errors
        lines = "\n".join(f"  - {e}" for e in errors)
        super().__init__(f"{len(errors)} problem(s) in the rule set:\n{lines}")


class PolicyError(FusionError):
    """A sharing policy file (or the keyring it needs) is invalid; names the file, the policy
    rule and the field where known. `problems` holds every problem found, this one first."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        rule: str | None = None,
        field: str | None = None,
        more: list[PolicyError] | None = None,
    ) -> None:
        self.file = file
        self.rule = rule
        self.field = field
        self.problems: list[PolicyError] = [self, *(more or [])]
        text = located(message, file, rule and f"policy rule {rule}", field)
        if more:
            text += f" (and {len(more)} more problem(s):"
            text += "".join(f"\n  - {p}" for p in more) + ")"
        self.detail = message
        super().__init__(text)


class SnapshotError(FusionError):
    """A state snapshot could not be read back."""


class AreasError(FusionError):
    """An areas-of-responsibility file is invalid; `problems` lists every problem found, each
    naming the file, the area and the field where known."""

    def __init__(self, file: str, problems: list[str]) -> None:
        self.file = file
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{file}: {len(problems)} problem(s) in the areas file:\n{lines}")
