"""Which partner's territory holds a point, and how far it is from the US-Mexico border."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from itertools import pairwise

from engine.geo import KM_PER_DEG_LAT, haversine_km


@dataclass(frozen=True, slots=True)
class BorderLine:
    """A simplified boundary polyline between a northern and a southern country."""

    north: str
    south: str
    line: tuple[tuple[float, float], ...]

    def country_at(self, lat: float, lon: float) -> str:
        """The country whose side of the line holds the point."""
        pts = self.line
        if lon <= pts[0][1]:
            return self.north if lat >= pts[0][0] else self.south
        if lon >= pts[-1][1]:
            return self.north if lat >= pts[-1][0] else self.south
        # The line is not monotonic in longitude (the Colorado river leg runs back west),
        # so count crossings of a ray going north: an odd count means south of the line.
        crossings = 0
        for (la1, lo1), (la2, lo2) in pairwise(pts):
            if (lo1 <= lon < lo2) or (lo2 <= lon < lo1):
                t = (lon - lo1) / (lo2 - lo1)
                if la1 + t * (la2 - la1) > lat:
                    crossings += 1
        return self.south if crossings % 2 == 1 else self.north

    def distance_km(self, lat: float, lon: float) -> float:
        """Distance from the point to the nearest point of the line, in kilometres."""
        best = math.inf
        kx = KM_PER_DEG_LAT * math.cos(math.radians(lat))
        ky = KM_PER_DEG_LAT
        near = (lat, lon)
        for la1, lo1, la2, lo2, la_lo, la_hi, lo_lo, lo_hi in _segments(self.line):
            # a lower bound from the segment's bounding box: skip it if it cannot be nearer
            gy = (la_lo - lat if lat < la_lo else lat - la_hi if lat > la_hi else 0.0) * ky
            gx = (lo_lo - lon if lon < lo_lo else lon - lo_hi if lon > lo_hi else 0.0) * kx
            if gx >= best or gy >= best:
                continue
            ax, ay = (lo1 - lon) * kx, (la1 - lat) * ky
            bx, by = (lo2 - lon) * kx, (la2 - lat) * ky
            dx, dy = bx - ax, by - ay
            seg = dx * dx + dy * dy
            t = 0.0 if seg == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / seg))
            px, py = ax + t * dx, ay + t * dy
            d = math.hypot(px, py)
            if d < best:
                best = d
                near = (lat + py / ky, lon + px / kx)
        if best < 50:
            return haversine_km(lat, lon, near[0], near[1])
        return best


@lru_cache(maxsize=8)
def _segments(
    line: tuple[tuple[float, float], ...],
) -> tuple[tuple[float, float, float, float, float, float, float, float], ...]:
    """Each segment of a line with its bounding box."""
    return tuple(
        (la1, lo1, la2, lo2, min(la1, la2), max(la1, la2), min(lo1, lo2), max(lo1, lo2))
        for (la1, lo1), (la2, lo2) in pairwise(line)
    )


@lru_cache(maxsize=1)
def default_border() -> BorderLine:
    """The shipped, simplified US-Mexico boundary."""
    raw = json.loads(resources.files("engine").joinpath("data/us-mx-border.json").read_text())
    return BorderLine(
        north=raw["north"], south=raw["south"], line=tuple((p[0], p[1]) for p in raw["line"])
    )
