"""What figures were measured on: the machine, and the exact code (read-only git)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CODE_DIRS = ("engine", "schemas", "streams", "rules")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def mem_total_gib() -> float:
    with contextlib.suppress(OSError):
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        return int(m.group(1)) / 2**20 if m else 0.0
    return 0.0


def cpus_and_memory() -> str:
    """`<model>, <n> logical CPUs, <x> GiB RAM`."""
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs, {mem_total_gib():.1f} GiB RAM"


def _git(*a: str) -> str:
    try:
        out = subprocess.run(
            ["git", *a], cwd=REPO, capture_output=True, text=True, check=False, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.rstrip()


def tree_state() -> str:
    """The commit and the uncommitted changes the figures were measured on."""
    head = _git("rev-parse", "--short", "HEAD") or "?"
    dirty = [
        line[3:]
        for line in _git("status", "--porcelain", "--", *CODE_DIRS).splitlines()
        if line.strip()
    ]
    h = hashlib.sha256()
    for d in CODE_DIRS:
        for p in sorted((REPO / d).rglob("*")):
            if p.is_file() and p.suffix in (".py", ".yaml", ".json"):
                h.update(str(p.relative_to(REPO)).encode())
                h.update(p.read_bytes())
    changed = f"{len(dirty)} changed paths ({', '.join(dirty)})" if dirty else "clean"
    return f"commit {head}, working tree {changed}; code digest {h.hexdigest()[:12]}"
