"""The geography's cost per call: which country holds a point and how far it is from the border
(what a rule reading `territory` or `border_km`, and the policy's zone, pay per event), and the
area of responsibility of an alert's location (`jurisdiction`, paid once per alert).

    .venv/bin/python bench/geo_bench.py [--points 20000] [--repo PATH]

`--repo` times another checkout's engine (e.g. the commit before the finer border), so the
same script gives the before and the after figures. `make bench` prints this section too.
"""

from __future__ import annotations

import argparse
import importlib
import random
import sys
import time
from pathlib import Path
from typing import Any

# A coarse outline of the border region to draw points from (not the border itself):
# points fall within ~35 km either side of it.
_SPINE = [(-117.1, 32.55), (-114.7, 32.7), (-111.0, 31.33), (-108.2, 31.33), (-106.5, 31.78),
          (-104.5, 29.6), (-101.4, 29.77), (-99.5, 27.5), (-97.2, 25.95)]  # fmt: skip


def points(n: int, seed: int = 11) -> list[tuple[float, float]]:
    """`n` (lat, lon) points near the border, the same for every run and checkout."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        i = rng.randrange(len(_SPINE) - 1)
        (x1, y1), (x2, y2) = _SPINE[i], _SPINE[i + 1]
        t = rng.random()
        out.append((y1 + t * (y2 - y1) + rng.uniform(-0.3, 0.3), x1 + t * (x2 - x1)))
    return out


def _best_of(fn: Any, pts: list[tuple[float, float]], repeat: int = 3) -> float:
    """µs per call, best of `repeat` passes (after one warm-up call)."""
    fn(*pts[0])
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for lat, lon in pts:
            fn(lat, lon)
        best = min(best, time.perf_counter() - t0)
    return best / len(pts) * 1e6


def measure(n: int = 20_000) -> dict[str, float]:
    """µs per call of each geography function the checkout has."""
    pts = points(n)
    border = importlib.import_module("engine.border").default_border()
    out = {
        "territory (country_at)": _best_of(border.country_at, pts),
        "border_km (distance_km)": _best_of(border.distance_km, pts),
    }
    out["both, per event"] = out["territory (country_at)"] + out["border_km (distance_km)"]
    try:
        areas = importlib.import_module("engine.areas").default_areas()
    except ImportError:  # a checkout from before the areas of responsibility
        return out
    out["jurisdiction, per alert"] = _best_of(areas.jurisdiction, pts)
    return out


def render(figures: dict[str, float], n: int, points_in_line: int) -> str:
    rows = "\n".join(f"| {name} | {us:.1f} |" for name, us in figures.items())
    return (
        f"Geography per call ({n:,} points within ~35 km of the border, best of 3; border line "
        f"of {points_in_line:,} points):\n\n| call | µs |\n|---|---:|\n{rows}\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=20_000)
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(args.repo.resolve()))
    figures = measure(args.points)
    line = importlib.import_module("engine.border").default_border().line
    print(render(figures, args.points, len(line)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
