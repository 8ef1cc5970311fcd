"""What the console's map draws: the shipped border line and the areas of responsibility, the
same geography that decides alerts' `territory` and `jurisdiction` (docs/jurisdiction.md)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from engine.areas import load_areas
from engine.errors import AreasError

STATIC = Path(__file__).resolve().parent / "static"


def border_feature() -> dict[str, Any]:
    """engine/data/us-mx-border.json (`line` of [lat, lon]) as a GeoJSON LineString feature."""
    raw = json.loads(resources.files("engine.data").joinpath("us-mx-border.json").read_text())
    return {
        "type": "Feature",
        "properties": {"kind": "border", "north": raw["north"], "south": raw["south"]},
        "geometry": {
            "type": "LineString",
            "coordinates": [[lon, lat] for lat, lon in raw["line"]],
        },
    }


def area_features(path: Path) -> list[dict[str, Any]]:
    """The areas of responsibility of the file, checked as the worker checks it (AreasError if
    refused), marked `kind: area` (`area_kind`: sector or state)."""
    areas = load_areas(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    by_id = {f["properties"]["id"]: f for f in doc["features"]}
    return [
        {
            "type": "Feature",
            "properties": {
                "kind": "area",
                "id": a.id,
                "name": a.name,
                "country": a.country,
                "area_kind": a.kind,
                "areas_version": areas.version,
            },
            "geometry": by_id[a.id]["geometry"],
        }
        for a in areas.areas
    ]


def map_geojson(areas_path: Path) -> bytes:
    """One FeatureCollection: the areas, then the border line (drawn on top). Read again when
    the areas file changes; a refused file leaves the last good one on the map."""
    try:
        stamp = areas_path.stat().st_mtime_ns
    except OSError:
        stamp = 0
    return _map_geojson(areas_path, stamp)


_last_good: dict[Path, bytes] = {}


@lru_cache(maxsize=4)
def _map_geojson(areas_path: Path, stamp: int) -> bytes:
    try:
        areas = area_features(areas_path)
    except AreasError:
        if areas_path in _last_good:
            return _last_good[areas_path]
        raise
    collection = {"type": "FeatureCollection", "features": [*areas, border_feature()]}
    body = json.dumps(collection, separators=(",", ":"), ensure_ascii=False).encode()
    _last_good[areas_path] = body
    return body
