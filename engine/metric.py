"""Metres on the ground: one conformal projection for the whole US-Mexico border region.

Lambert conformal conic on WGS-84, standard parallels 26° and 32° N, centred at 29° N 106° W:
scale is within 0.3 % of true from 24° to 34° N, so lengths and buffers in metres hold to a
few metres per kilometre along the whole border.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from pyproj import Transformer

PROJ = "+proj=lcc +lat_1=26 +lat_2=32 +lat_0=29 +lon_0=-106 +datum=WGS84 +units=m +no_defs"


@lru_cache(maxsize=1)
def _forward() -> Transformer:
    return Transformer.from_crs("EPSG:4326", PROJ, always_xy=True)


@lru_cache(maxsize=1)
def _inverse() -> Transformer:
    return Transformer.from_crs(PROJ, "EPSG:4326", always_xy=True)


def to_metres(lat: float, lon: float) -> tuple[float, float]:
    """(x, y) in metres of one point."""
    x, y = _forward().transform(lon, lat)
    return float(x), float(y)


def to_metres_many(
    lons: NDArray[np.float64], lats: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(xs, ys) in metres of many points."""
    xs, ys = _forward().transform(lons, lats)
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def to_degrees(x: float, y: float) -> tuple[float, float]:
    """(lat, lon) of a projected point."""
    lon, lat = _inverse().transform(x, y)
    return float(lat), float(lon)
