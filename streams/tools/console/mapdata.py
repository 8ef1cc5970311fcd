"""What the console's map draws: the shipped border line and the border states' outlines."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

STATIC = Path(__file__).resolve().parent / "static"
STATES_FILE = STATIC / "data" / "border-states.json"


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


def state_features(path: Path = STATES_FILE) -> list[dict[str, Any]]:
    """The border states' outlines (see static/data/README.md), marked `kind: state`."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return [{**f, "properties": {**f["properties"], "kind": "state"}} for f in data["features"]]


@lru_cache(maxsize=1)
def map_geojson() -> bytes:
    """One FeatureCollection: the state outlines, then the border line (drawn on top)."""
    collection = {"type": "FeatureCollection", "features": [*state_features(), border_feature()]}
    return json.dumps(collection, separators=(",", ":"), ensure_ascii=False).encode()
