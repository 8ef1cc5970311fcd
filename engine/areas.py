"""Areas of responsibility: named, versioned areas (a country's sectors or states), each on its
country's side of the border, none overlapping; which one holds a point.

The file is GeoJSON: a FeatureCollection with a `version`, each feature a Polygon or
MultiPolygon with properties `id`, `name`, `country` and `kind` (docs/jurisdiction.md).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import shapely
from shapely import STRtree
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from engine.border import BorderLine, default_border
from engine.errors import AreasError

AreaKind = Literal["sector", "state"]
AREA_KINDS: tuple[str, ...] = get_args(AreaKind)
REQUIRED = ("id", "name", "country", "kind")
# Edges are stored to 1e-5 degrees (~1 m): where an edge meets a long straight stretch of the
# border, rounding leaves slivers under a metre wide. A piece across the border or shared by two
# areas counts only if it is wider than this (it survives shrinking by half of it).
SLIVER_DEG = 4e-5  # ~4 m
M_PER_DEG = 111_320.0


@dataclass(frozen=True, slots=True)
class Area:
    """One area of responsibility (geometry in degrees, lon/lat, prepared)."""

    id: str
    name: str
    country: str
    kind: str
    geometry: BaseGeometry


@dataclass(frozen=True, slots=True)
class Areas:
    """A loaded, checked areas file and its index."""

    version: str
    sha256: str
    areas: tuple[Area, ...]
    border: BorderLine
    _tree: STRtree

    def area_at(self, lat: float, lon: float) -> Area | None:
        """The area holding the point, or None."""
        for i in self._tree.query(shapely.Point(lon, lat)):
            area = self.areas[int(i)]
            if shapely.contains_xy(area.geometry, lon, lat):
                return area
        return None

    def by_id(self, area_id: str) -> Area | None:
        """The area with this id, or None."""
        for a in self.areas:
            if a.id == area_id:
                return a
        return None

    def jurisdiction(self, lat: float, lon: float) -> dict[str, Any]:
        """`{country, area_id, area_name, areas_version}` of a precise location; outside every
        area, the country whose territory holds it and a null area."""
        area = self.area_at(lat, lon)
        if area is None:
            return {
                "country": self.border.country_at(lat, lon),
                "area_id": None,
                "area_name": None,
                "areas_version": self.version,
            }
        return {
            "country": area.country,
            "area_id": area.id,
            "area_name": area.name,
            "areas_version": self.version,
        }


def _m2(geom: BaseGeometry) -> float:
    """Approximate area in square metres of a small geometry in degrees."""
    if geom.is_empty:
        return 0.0
    lat = geom.centroid.y
    return float(geom.area) * M_PER_DEG * M_PER_DEG * math.cos(math.radians(lat))


def _solid_m2(geom: BaseGeometry) -> float:
    """Square metres of the parts of `geom` wider than SLIVER_DEG (0 if all are slivers)."""
    if geom.is_empty or geom.area == 0:
        return 0.0
    if geom.buffer(-SLIVER_DEG / 2).is_empty:
        return 0.0
    return max(_m2(geom), 1.0)


def parse_areas(text: str, file: str, border: BorderLine | None = None) -> Areas:
    """Areas from a file's text; AreasError listing every problem if it is not sound."""
    border = border or default_border()
    problems: list[str] = []
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise AreasError(file, [f"not JSON: {e}"]) from e
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise AreasError(file, ["field type: must be a GeoJSON FeatureCollection"])
    version = doc.get("version")
    if not isinstance(version, str) or not version.strip():
        problems.append("field version: missing (a non-empty string, e.g. `2026.1`)")
    features = doc.get("features")
    if not isinstance(features, list) or not features:
        raise AreasError(file, [*problems, "field features: missing or empty"])
    countries = (border.north, border.south)
    south = border.south_side()
    areas: list[Area] = []
    seen: set[str] = set()
    for n, feature in enumerate(features):
        props = feature.get("properties") if isinstance(feature, dict) else None
        props = props if isinstance(props, dict) else {}
        label = f"feature {n}" + (
            f" (area {props['id']})" if isinstance(props.get("id"), str) else ""
        )
        bad = False
        for name in REQUIRED:
            value = props.get(name)
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{label}: field {name}: missing (a non-empty string)")
                bad = True
        if bad:
            continue
        if props["id"] in seen:
            problems.append(f"{label}: field id: {props['id']!r} used twice")
            continue
        seen.add(props["id"])
        if props["country"] not in countries:
            problems.append(
                f"{label}: field country: {props['country']!r} is not one of {list(countries)}"
            )
            continue
        if props["kind"] not in AREA_KINDS:
            problems.append(
                f"{label}: field kind: {props['kind']!r} is not one of {list(AREA_KINDS)}"
            )
            continue
        try:
            geom = shape(feature["geometry"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            problems.append(f"{label}: field geometry: not a GeoJSON geometry ({e})")
            continue
        if geom.geom_type not in ("Polygon", "MultiPolygon") or geom.is_empty:
            problems.append(f"{label}: field geometry: a {geom.geom_type}, not a (Multi)Polygon")
            continue
        if not geom.is_valid:
            problems.append(f"{label}: field geometry: invalid ({shapely.is_valid_reason(geom)})")
            continue
        own_side = (
            geom.intersection(south) if props["country"] == border.south else geom.difference(south)
        )
        across = _solid_m2(geom.difference(own_side))
        if across:
            other = border.north if props["country"] == border.south else border.south
            problems.append(
                f"{label}: field geometry: {across / 1e6:.3f} km² of it is in {other} territory "
                f"(an area must lie on its country's side of the border)"
            )
            continue
        shapely.prepare(geom)
        areas.append(Area(props["id"], props["name"], props["country"], props["kind"], geom))
    tree = STRtree([a.geometry for a in areas])
    for i, a in enumerate(areas):
        for j in tree.query(a.geometry):
            b = areas[int(j)]
            if int(j) <= i:
                continue
            overlap = _solid_m2(a.geometry.intersection(b.geometry))
            if overlap:
                problems.append(
                    f"areas {a.id} and {b.id} overlap by {overlap / 1e6:.3f} km² "
                    f"(a point must be in one area at most)"
                )
    if problems:
        raise AreasError(file, problems)
    digest = hashlib.sha256(text.encode()).hexdigest()
    return Areas(str(version), digest, tuple(areas), border, tree)


def load_areas(path: Path, border: BorderLine | None = None) -> Areas:
    """Areas from a file; AreasError naming the file and every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise AreasError(str(path), [f"cannot read: {e}"]) from e
    return parse_areas(text, str(path), border)


@lru_cache(maxsize=1)
def default_areas() -> Areas:
    """The shipped areas (engine/data/areas.geojson)."""
    text = resources.files("engine").joinpath("data/areas.geojson").read_text(encoding="utf-8")
    return parse_areas(text, "engine/data/areas.geojson")
