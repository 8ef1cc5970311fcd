"""Distances on the globe and a grid index that finds neighbours without scanning all state."""

from __future__ import annotations

import math
from collections.abc import Iterator

EARTH_RADIUS_KM = 6371.0088
KM_PER_DEG_LAT = 111.32


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres."""
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


class Grid:
    """Square cells of `cell_km` north-south; probes enough neighbours to cover a radius."""

    __slots__ = ("cell_deg", "cell_km")

    def __init__(self, cell_km: float) -> None:
        if cell_km <= 0:
            raise ValueError("cell size must be positive")
        self.cell_km = cell_km
        self.cell_deg = cell_km / KM_PER_DEG_LAT

    def cell(self, lat: float, lon: float) -> tuple[int, int]:
        """The cell holding a point."""
        return (math.floor(lat / self.cell_deg), math.floor(lon / self.cell_deg))

    def cells_within(self, lat: float, lon: float, radius_km: float) -> Iterator[tuple[int, int]]:
        """Every cell that may hold a point within `radius_km` of (lat, lon)."""
        d = self.cell_deg
        r_lat = radius_km / KM_PER_DEG_LAT
        coslat = max(0.01, math.cos(math.radians(min(89.0, abs(lat) + r_lat))))
        r_lon = r_lat / coslat
        j0, j1 = math.floor((lon - r_lon) / d), math.floor((lon + r_lon) / d)
        for i in range(math.floor((lat - r_lat) / d), math.floor((lat + r_lat) / d) + 1):
            for j in range(j0, j1 + 1):
                yield (i, j)
