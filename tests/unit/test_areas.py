"""Areas of responsibility (engine/areas.py): places named from outside the data land in the
right area; a broken file is refused with every problem named; `jurisdiction` on released
alerts is decided on the precise location, the same in every destination's copy; a broken
file on reload leaves the running areas in force."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from engine.areas import default_areas, parse_areas
from engine.errors import AreasError
from engine.release import release_json
from streams.settings import Settings
from streams.worker.metrics import Metrics
from streams.worker.reload import LiveAreas
from tests.unit.test_release import PARTNERS, ScriptedPolicy, alert, fact

# City centres (city hall or main square, public gazetteers), not read from the data.
PLACES = [
    ("Nogales AZ", 31.3404, -110.9343, "US", "usbp-tca", "Tucson Sector"),
    ("El Paso", 31.7587, -106.4869, "US", "usbp-ept", "El Paso Sector"),
    ("Laredo", 27.5064, -99.5075, "US", "usbp-lrt", "Laredo Sector"),
    ("McAllen", 26.2034, -98.2300, "US", "usbp-rgv", "Rio Grande Valley Sector"),
    ("San Diego", 32.7157, -117.1611, "US", "usbp-sdc", "San Diego Sector"),
    ("Yuma", 32.6927, -114.6277, "US", "usbp-yum", "Yuma Sector"),
    ("Del Rio", 29.3627, -100.8968, "US", "usbp-drt", "Del Rio Sector"),
    ("Tijuana", 32.5149, -117.0382, "MX", "mx-bcn", "Baja California"),
    ("Ciudad Juárez", 31.6904, -106.4245, "MX", "mx-chh", "Chihuahua"),
    ("Nuevo Laredo", 27.4763, -99.5164, "MX", "mx-tam", "Tamaulipas"),
    ("Presidio TX", 29.5608, -104.3722, "US", "usbp-bbt", "Big Bend Sector"),
    ("Calexico", 32.6789, -115.4989, "US", "usbp-elc", "El Centro Sector"),
    ("Nogales, Sonora", 31.3086, -110.9422, "MX", "mx-son", "Sonora"),
    ("Piedras Negras", 28.7000, -100.5231, "MX", "mx-coa", "Coahuila"),
    ("Anáhuac NL", 27.2400, -100.1300, "MX", "mx-nle", "Nuevo León"),
]


@pytest.mark.parametrize(("name", "lat", "lon", "country", "area_id", "area_name"), PLACES)
def test_places_land_in_the_right_area(name, lat, lon, country, area_id, area_name):
    j = default_areas().jurisdiction(lat, lon)
    assert j == {
        "country": country,
        "area_id": area_id,
        "area_name": area_name,
        "areas_version": default_areas().version,
    }, name


def test_outside_every_area_the_area_is_null_and_the_country_is_the_territory():
    areas = default_areas()
    assert areas.jurisdiction(33.45, -112.07)["area_id"] is None  # Phoenix: no sector listed
    assert areas.jurisdiction(33.45, -112.07)["country"] == "US"
    assert areas.jurisdiction(19.43, -99.13) == {  # Mexico City
        "country": "MX",
        "area_id": None,
        "area_name": None,
        "areas_version": areas.version,
    }


def square(lon: float, lat: float, d: float = 0.1) -> dict[str, Any]:
    return {
        "type": "Polygon",
        "coordinates": [
            [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
        ],
    }


def feature(area_id: str, geometry: Any, country: str = "US", **props: Any) -> dict[str, Any]:
    p = {"id": area_id, "name": area_id.title(), "country": country, "kind": "sector", **props}
    return {
        "type": "Feature",
        "properties": {k: v for k, v in p.items() if v is not None},
        "geometry": geometry,
    }


def doc(*features: dict[str, Any], version: str | None = "t1") -> str:
    d: dict[str, Any] = {"type": "FeatureCollection", "features": list(features)}
    if version is not None:
        d["version"] = version
    return json.dumps(d)


def problems(text: str) -> list[str]:
    with pytest.raises(AreasError) as e:
        parse_areas(text, "areas.geojson")
    assert str(e.value).startswith("areas.geojson: ")
    return e.value.problems


def test_a_sound_file_loads():
    a = parse_areas(doc(feature("a", square(-111, 32)), feature("b", square(-110.9, 32))), "f")
    assert [x.id for x in a.areas] == ["a", "b"]  # touching is not overlapping
    assert a.jurisdiction(32.05, -110.95)["area_id"] == "a"


def test_overlapping_areas_are_refused_naming_both():
    assert problems(doc(feature("a", square(-111, 32)), feature("b", square(-110.95, 32)))) == [
        "areas a and b overlap by 52.517 km² (a point must be in one area at most)"
    ]


def test_every_problem_is_named_at_once():
    bowtie = {
        "type": "Polygon",
        "coordinates": [[[-111, 32], [-110, 33], [-110, 32], [-111, 33], [-111, 32]]],
    }
    got = problems(
        doc(
            feature("a", square(-111, 32), name=None),
            feature("b", bowtie),
            feature("c", square(-111, 32.5), country="CA"),
            feature("d", square(-111, 32.5), kind="county"),
            feature("e", {"type": "Point", "coordinates": [-111, 32]}),
            feature("f", square(-111, 31.0)),  # wholly south of the 31 deg 20 min line: Mexico
            feature("g", square(-100, 32.5)),
            feature("g", square(-99, 32.5)),
            version=None,
        )
    )
    assert got[0] == "field version: missing (a non-empty string, e.g. `2026.1`)"
    assert got[1] == "feature 0 (area a): field name: missing (a non-empty string)"
    assert got[2].startswith("feature 1 (area b): field geometry: invalid (Self-intersection")
    assert got[3] == "feature 2 (area c): field country: 'CA' is not one of ['US', 'MX']"
    assert got[4] == "feature 3 (area d): field kind: 'county' is not one of ['sector', 'state']"
    assert got[5] == "feature 4 (area e): field geometry: a Point, not a (Multi)Polygon"
    assert got[6].startswith("feature 5 (area f): field geometry: 106.166 km²")
    assert got[6].endswith(
        "km² of it is in MX territory (an area must lie on its country's side of the border)"
    )
    assert got[7] == "feature 7 (area g): field id: 'g' used twice"
    assert len(got) == 8


def test_not_geojson_is_refused():
    assert problems("{")[0].startswith("not JSON")
    assert problems("[]") == ["field type: must be a GeoJSON FeatureCollection"]


def test_jurisdiction_is_decided_on_the_precise_location_and_the_same_for_both():
    # Precisely 400 m south of the 31°20' line (Sonora); the US copy is generalised to a 1 km
    # cell whose centre may be on the other side: jurisdiction still says Sonora in both.
    at = (31.3341 - 0.0036, -110.5)
    raw = alert(fact("e1", "MX"), fact("e2", "US"), at=at)
    policy = ScriptedPolicy({("MX", "US", "location"): "generalize"})
    copies = {}
    for dest in ("US", "MX"):
        out = release_json(raw, dest, sorted(PARTNERS), policy, now=0.0, topic=f"alerts.{dest}")
        assert out is not None
        copies[dest] = out[0]
    assert copies["US"]["location"] != copies["MX"]["location"]
    assert (
        copies["US"]["jurisdiction"]
        == copies["MX"]["jurisdiction"]
        == {
            "country": "MX",
            "area_id": "mx-son",
            "area_name": "Sonora",
            "areas_version": default_areas().version,
        }
    )


def test_a_broken_areas_file_on_reload_leaves_the_running_areas(tmp_path: Path, caplog):
    path = tmp_path / "areas.geojson"
    path.write_text(doc(feature("a", square(-111, 32)), version="v1"))
    live = LiveAreas(Settings(areas_path=path, areas_reload_s=0.001), Metrics())
    assert live.current().version == "v1"
    path.write_text(
        doc(feature("a", square(-111, 32)), feature("b", square(-110.95, 32)), version="v2")
    )
    os.utime(path)
    time.sleep(0.002)
    assert live.maybe_reload() is None
    assert live.current().version == "v1"
    assert "areas reload refused, the running areas stay" in caplog.text
    assert "areas a and b overlap" in caplog.text
    path.write_text(
        doc(feature("a", square(-111, 32)), feature("b", square(-110.9, 32)), version="v3")
    )
    time.sleep(0.002)
    new = live.maybe_reload()
    assert new is not None and live.current().version == "v3"


def test_fusion_areas_check_names_every_problem(tmp_path: Path, capsys):
    from streams.cli import main

    good = tmp_path / "good.geojson"
    good.write_text(doc(feature("a", square(-111, 32)), version="v9"))
    assert main(["areas", "check", str(good)]) == 0
    assert "areas version v9, 1 areas: ok" in capsys.readouterr().out
    bad = tmp_path / "bad.geojson"
    bad.write_text(doc(feature("a", square(-111, 32)), feature("b", square(-110.95, 32))))
    assert main(["areas", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: 1 problem(s) in the areas file" in err and "areas a and b overlap" in err
