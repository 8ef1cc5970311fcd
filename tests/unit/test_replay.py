from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import orjson

from engine.replay import replay
from engine.rulefiles import load_rules
from streams.cli import main
from streams.tools.simulator import Simulator

REPO = Path(__file__).resolve().parents[2]
PARTNERS = frozenset({"US", "MX"})


def stream(n: int = 3000) -> bytes:
    sim = Simulator(seed=11, scenario_share=0.2, run_id="replay")
    clock = iter(range(1_780_000_000, 1_780_000_000 + 10 * n, 2))
    lines = []
    for (_, ev), _ in zip(sim.stream(lambda: float(next(clock))), range(n), strict=False):
        lines.append(orjson.dumps(ev))
    lines.insert(10, b"{broken")
    lines.insert(20, lines[5])  # a duplicate
    return b"\n".join(lines) + b"\n"


def run(data: bytes) -> tuple[bytes, object]:
    out = io.BytesIO()
    stats = replay(io.BytesIO(data), out, load_rules([REPO / "rules"]), partners=PARTNERS)
    return out.getvalue(), stats


def test_replay_twice_gives_identical_alerts_ids_included():
    data = stream()
    a, stats = run(data)
    b, _ = run(data)
    assert a == b
    alerts = [orjson.loads(line) for line in a.splitlines()]
    assert {x["rule_id"] for x in alerts} >= {"watchlist-plate", "coordinated-crossing"}
    assert stats.rejected == 1 and stats.duplicates == 1  # type: ignore[attr-defined]
    for x in alerts:
        raised = datetime.fromisoformat(x["raised_at"])
        assert raised.tzinfo is not None and raised <= datetime.now(UTC)


def test_replay_cli_reads_a_file(tmp_path, capsys):
    f = tmp_path / "events.jsonl"
    f.write_bytes(stream(500))
    assert main(["replay", str(f), "--destination", "mx"]) == 0
    out = capsys.readouterr()
    assert "replay: " in out.err and "alerts" in out.err
    for line in out.out.splitlines():
        assert orjson.loads(line)["recipient"] == "MX"


def test_rules_cli_reports_untested_and_failing(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text(
        "id: lonely\ntype: event_count\ntitle: no tests here\nseverity: low\n"
        "select: {type: track}\nkey: track_id\nthreshold: 2\nwindow: 1m\n"
    )
    assert main(["rules", "test", str(tmp_path)]) == 1
    assert "UNTESTED lonely: the rule carries no tests" in capsys.readouterr().out
    assert main(["rules", "check", str(tmp_path)]) == 0
