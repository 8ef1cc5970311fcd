"""The engine's exceptions: one root, each saying where the problem is."""

from __future__ import annotations


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
        where = []
        if file:
            where.append(file)
        if rule_id:
            where.append(f"rule {rule_id}")
        if field:
            where.append(f"field {field}")
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class RuleSetError(FusionError):
    """A rule set was refused; carries every problem found, not only the first."""

    def __init__(self, errors: list[RuleError]) -> None:
        self.errors = errors
        lines = "\n".join(f"  - {e}" for e in errors)
        super().__init__(f"{len(errors)} problem(s) in the rule set:\n{lines}")


class PolicyError(FusionError):
    """A sharing policy file is invalid."""


class SnapshotError(FusionError):
    """A state snapshot could not be read back."""
