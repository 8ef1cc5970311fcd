"""The boundary line from OpenStreetMap: territory 100 m either side of the border, from the
treaties' own definitions (not from the data), and distances in metres."""

from __future__ import annotations

import itertools
import math

import pytest
import shapely
from pyproj import Geod

from engine.border import default_border

GEOD = Geod(ellps="WGS84")
# Treaty lines (1853 Gadsden Treaty, surveyed 1891-94), independent of the shipped data:
PARALLEL_31_47 = 31 + 47 / 60  # from the Rio Grande at El Paso west to 108°12' W
PARALLEL_31_20 = 31 + 20 / 60  # from 108°12' W west to 111°04' W (Nogales)
# A straight (geodesic) line from the Colorado river to the Pacific (Monuments 204 and 258).
COLORADO = (32.7186, -114.7196)
PACIFIC = (32.5343, -117.1243)


def _geodesic_lat_at(lon: float) -> float:
    """Latitude of the Colorado-Pacific geodesic at a longitude."""
    pts = GEOD.npts(COLORADO[1], COLORADO[0], PACIFIC[1], PACIFIC[0], 2000)
    for (lo1, la1), (lo2, la2) in itertools.pairwise(pts):
        if min(lo1, lo2) <= lon <= max(lo1, lo2):
            return la1 + (la2 - la1) * (lon - lo1) / (lo2 - lo1)
    raise AssertionError(lon)


PLACES = {
    "31°47' N at 107°30' W (Chihuahua / New Mexico)": (PARALLEL_31_47, -107.5),
    "31°20' N at 110°30' W (Sonora / Arizona, west of Nogales)": (PARALLEL_31_20, -110.5),
    "Colorado-Pacific line at 116° W (Baja California / California)": (
        _geodesic_lat_at(-116.0),
        -116.0,
    ),
    "Colorado-Pacific line at 115°30' W (Mexicali / Calexico)": (
        _geodesic_lat_at(-115.5),
        -115.5,
    ),
}
# Not used: near 109° W the monuments (set by astronomical latitude in the 1890s) and so the
# data run ~120 m south of the nominal 31°20' parallel, so the treaty text alone is no
# ground truth to 100 m there.


def _shift_north(lat: float, lon: float, metres: float) -> tuple[float, float]:
    lon2, lat2, _ = GEOD.fwd(lon, lat, 0.0 if metres >= 0 else 180.0, abs(metres))
    return lat2, lon2


@pytest.mark.parametrize("place", PLACES)
def test_a_hundred_metres_either_side_of_the_border(place):
    b = default_border()
    lat, lon = PLACES[place]
    assert b.country_at(*_shift_north(lat, lon, 100)) == "US"
    assert b.country_at(*_shift_north(lat, lon, -100)) == "MX"
    assert b.distance_m(lat, lon) < 100  # the data is within tens of metres of the treaty line


@pytest.mark.parametrize(
    ("name", "lat", "lon", "country"),
    [
        ("Nogales AZ", 31.3404, -110.9343, "US"),
        ("Nogales, Sonora", 31.3086, -110.9422, "MX"),
        ("Brownsville", 25.9017, -97.4975, "US"),
        ("Matamoros", 25.8690, -97.5027, "MX"),
        ("Laredo", 27.5306, -99.4803, "US"),
        ("Nuevo Laredo", 27.4763, -99.5164, "MX"),
        ("Ciudad Juarez", 31.6904, -106.4245, "MX"),
        ("Tijuana", 32.5149, -117.0382, "MX"),
    ],
)
def test_cities(name, lat, lon, country):
    assert default_border().country_at(lat, lon) == country, name


def test_distance_in_metres_matches_the_ellipsoid():
    b = default_border()
    line = shapely.LineString([(lon, lat) for lat, lon in b.line])
    for lon in (-110.0, -107.5):  # stretches where the line runs east-west
        crossing = line.intersection(shapely.LineString([(lon, 30.0), (lon, 33.0)]))
        lat = crossing.y + 0.05  # ~5.5 km north of the line
        _, _, metres = GEOD.inv(lon, lat, lon, crossing.y)
        assert math.isclose(b.distance_m(lat, lon), metres, abs_tol=20)
    assert 150 < b.distance_km(33.45, -112.07) < 250  # Phoenix
