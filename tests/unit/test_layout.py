"""The layout of `streams/` holds its rule (docs/layout.md): the worker and the tools stand
apart, and what both use stands beside them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

STREAMS = Path(__file__).resolve().parents[2] / "streams"
SHARED = ("cli", "clients", "keys", "settings", "topics")


def imported(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def reaching(folder: str, other: str) -> dict[str, list[str]]:
    """Per module under `streams/<folder>/`, what it imports from `streams.<other>`."""
    found = {}
    for path in (STREAMS / folder).rglob("*.py"):
        mods = sorted(m for m in imported(path) if m.startswith(f"streams.{other}"))
        if mods:
            found[str(path.relative_to(STREAMS))] = mods
    return found


def test_no_tool_imports_the_worker() -> None:
    assert reaching("tools", "worker") == {}


def test_the_worker_imports_no_tool() -> None:
    assert reaching("worker", "tools") == {}


@pytest.mark.parametrize("name", [n for n in SHARED if n != "cli"])
def test_what_both_use_imports_neither(name: str) -> None:
    mods = imported(STREAMS / f"{name}.py")
    assert [m for m in mods if m.startswith(("streams.worker", "streams.tools"))] == []


def test_the_top_level_holds_only_what_both_use() -> None:
    assert sorted(p.stem for p in STREAMS.glob("*.py") if p.stem != "__init__") == list(SHARED)
