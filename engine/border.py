"""Which partner's territory holds a point, and how far it is from the US-Mexico border.

The line is engine/data/us-mx-border.json (OpenStreetMap, built by deploy/geo/build_border.py).
The side of the line is decided in degrees on a polygon closed far to the south; distances are
measured in metres in engine.metric's projection, the nearest segment found by an STRtree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely import LineString, Polygon, STRtree
from shapely.geometry.base import BaseGeometry

from engine.metric import to_metres, to_metres_many

# The side of the line past its ends: the south country's side is closed by these corners
# (the Pacific end runs west along the latitude of its first point, the Gulf end east along
# the latitude of its last one).
_FAR_WEST, _FAR_EAST, _FAR_SOUTH = -130.0, -80.0, 5.0
_DENSIFY_DEG = 0.01  # ~1 km: a segment that long, straight in degrees, bends < 1 cm projected

Line = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class BorderLine:
    """A boundary polyline ([lat, lon], west to east) between a northern and a southern country.

    Its geometries and its hash are computed once, on first use, and kept with it (hashing
    an 11,000-point line took 0.3 ms, more than any lookup)."""

    north: str
    south: str
    line: Line
    _built: dict[str, object] = field(
        default_factory=dict, init=False, compare=False, hash=False, repr=False
    )

    def __hash__(self) -> int:
        h = self._built.get("hash")
        if h is None:
            h = self._built["hash"] = hash((self.north, self.south, self.line))
        return h  # type: ignore[return-value]

    def south_side(self) -> BaseGeometry:
        """The south country's side of the line, in degrees (lon, lat), prepared."""
        built = self._built.get("south")
        if built is None:
            built = self._built["south"] = _south_side(self.line)
        return built  # type: ignore[return-value]

    def _tree(self) -> STRtree:
        built = self._built.get("tree")
        if built is None:
            built = self._built["tree"] = _segment_tree(_metric_coords(self.line))
        return built  # type: ignore[return-value]

    def metric_line(self) -> LineString:
        """The line in metres (engine.metric's projection)."""
        return LineString(_metric_coords(self.line))

    def country_at(self, lat: float, lon: float) -> str:
        """The country whose side of the line holds the point."""
        return self.south if shapely.contains_xy(self.south_side(), lon, lat) else self.north

    def distance_m(self, lat: float, lon: float) -> float:
        """Distance from the point to the nearest point of the line, in metres."""
        x, y = to_metres(lat, lon)
        _, dist = self._tree().query_nearest(shapely.Point(x, y), return_distance=True)
        return float(dist[0])

    def distance_km(self, lat: float, lon: float) -> float:
        """Distance from the point to the nearest point of the line, in kilometres."""
        return self.distance_m(lat, lon) / 1000.0


def _south_side(line: Line) -> BaseGeometry:
    pts = [(lon, lat) for lat, lon in line]
    first, last = pts[0], pts[-1]
    ring = [
        (_FAR_WEST, first[1]),
        *pts,
        (_FAR_EAST, last[1]),
        (_FAR_EAST, _FAR_SOUTH),
        (_FAR_WEST, _FAR_SOUTH),
    ]
    poly = shapely.make_valid(Polygon(ring))
    shapely.prepare(poly)
    return poly


def _metric_coords(line: Line) -> NDArray[np.float64]:
    """The line's vertices in metres, segments first cut to at most `_DENSIFY_DEG`: a segment
    is straight in degrees (GeoJSON), and a long one bends once projected."""
    dense = shapely.segmentize(LineString([(lon, lat) for lat, lon in line]), _DENSIFY_DEG)
    lonlat = shapely.get_coordinates(dense)
    xs, ys = to_metres_many(lonlat[:, 0], lonlat[:, 1])
    return np.column_stack([xs, ys])


def _segment_tree(coords: NDArray[np.float64]) -> STRtree:
    segments = [LineString(pair) for pair in np.stack([coords[:-1], coords[1:]], axis=1)]
    return STRtree(segments)


@lru_cache(maxsize=1)
def default_border() -> BorderLine:
    """The shipped US-Mexico boundary (engine/data/us-mx-border.json)."""
    raw = json.loads(resources.files("engine").joinpath("data/us-mx-border.json").read_text())
    return BorderLine(
        north=raw["north"], south=raw["south"], line=tuple((p[0], p[1]) for p in raw["line"])
    )
