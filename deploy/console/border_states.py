"""Cut the border states out of Natural Earth's admin-1 GeoJSON and simplify them for the console.

Usage: border_states.py ADMIN1_GEOJSON OUT_JSON (deploy/console/vendor.sh runs it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# ISO 3166-2 codes: the US and Mexican states along the border, and Baja California Sur so the
# peninsula is whole.
STATES = (
    "US-CA", "US-AZ", "US-NM", "US-TX",
    "MX-BCN", "MX-BCS", "MX-SON", "MX-CHH", "MX-COA", "MX-NLE", "MX-TAM",
)  # fmt: skip
TOLERANCE_DEG = 0.005  # Douglas-Peucker tolerance, about 500 m
MIN_RING_AREA_DEG2 = 0.005  # islands smaller than about 50 km2 are dropped
DECIMALS = 3


def _perpendicular(p: list[float], a: list[float], b: list[float]) -> float:
    dx, dy = b[0] - a[0], b[1] - a[1]
    if dx == 0 and dy == 0:
        return float(((p[0] - a[0]) ** 2 + (p[1] - a[1]) ** 2) ** 0.5)
    t = ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / (dx * dx + dy * dy)
    t = max(0.0, min(1.0, t))
    x, y = a[0] + t * dx, a[1] + t * dy
    return float(((p[0] - x) ** 2 + (p[1] - y) ** 2) ** 0.5)


def simplify(points: list[list[float]], tolerance: float) -> list[list[float]]:
    """Douglas-Peucker, iterative (rings have tens of thousands of points)."""
    if len(points) < 3:
        return points
    keep = [False] * len(points)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    while stack:
        first, last = stack.pop()
        best, index = 0.0, -1
        for i in range(first + 1, last):
            d = _perpendicular(points[i], points[first], points[last])
            if d > best:
                best, index = d, i
        if index >= 0 and best > tolerance:
            keep[index] = True
            stack.extend(((first, index), (index, last)))
    return [p for p, k in zip(points, keep, strict=True) if k]


def _area(ring: list[list[float]]) -> float:
    return abs(
        sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(ring, ring[1:] + ring[:1], strict=True)) / 2
    )


def _ring(ring: list[list[float]]) -> list[list[float]] | None:
    if _area(ring) < MIN_RING_AREA_DEG2:
        return None
    out = [[round(x, DECIMALS), round(y, DECIMALS)] for x, y in simplify(ring, TOLERANCE_DEG)]
    return out if len(out) >= 4 else None


def _polygons(geometry: dict[str, Any]) -> list[list[list[list[float]]]]:
    polys = (
        geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]
    )
    out = []
    for poly in polys:
        outer = _ring(poly[0])
        if outer is not None:
            out.append([outer])  # outlines only: holes (lakes) are left out
    return out


def cut(admin1: dict[str, Any]) -> dict[str, Any]:
    """The border states as a GeoJSON FeatureCollection of MultiPolygons."""
    by_code = {f["properties"].get("iso_3166_2"): f for f in admin1["features"]}
    missing = [c for c in STATES if c not in by_code]
    if missing:
        raise SystemExit(f"border_states: not in the admin-1 data: {missing}")
    features = []
    for code in STATES:
        f = by_code[code]
        features.append(
            {
                "type": "Feature",
                "properties": {
                    "iso_3166_2": code,
                    "country": code[:2],
                    "name": f["properties"]["name"],
                },
                "geometry": {"type": "MultiPolygon", "coordinates": _polygons(f["geometry"])},
            }
        )
    return {"type": "FeatureCollection", "features": features}


def main(argv: list[str]) -> int:
    source, target = Path(argv[0]), Path(argv[1])
    data = cut(json.loads(source.read_text(encoding="utf-8")))
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    target.write_text(text + "\n", encoding="utf-8")
    points = sum(
        len(ring) for f in data["features"] for p in f["geometry"]["coordinates"] for ring in p
    )
    print(f"border_states: {len(data['features'])} states, {points} points, {len(text)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
