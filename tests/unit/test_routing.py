"""Co-partitioning (engine/routing.py): the keys a fact is routed under, their partitions, and
the routed copies the correlate stage receives."""

from __future__ import annotations

import zlib

import pytest

from engine.engine import Route
from engine.facts import Fact
from engine.geo import Grid
from engine.routing import REGION_KM, Origin, RoutedItem, Router, partition_for, route_items
from engine.rulefiles import parse_rules_text
from engine.ruletests import DEFAULT_START, build_event
from engine.watermarks import InputPartition

PLATE_RULES = """
id: plate-reads
type: event_count
title: Three reads of one plate
severity: low
select: {type: detection, where: {plate: {exists: true}}}
key: plate
threshold: 3
window: 10m
---
id: plate-reads-again
type: event_count
title: Five reads of one plate
severity: low
select: {type: detection}
key: plate
threshold: 5
window: 1h
"""
NEAR_RULE = """
id: near-seizure
type: proximity
title: A detection near a seizure
severity: high
select:
  seen: {type: detection}
  seizure: {type: weapon, where: {weapon_event: seizure}}
radius_km: 5
window: 60m
"""


def rules(*texts: str) -> Router:
    return Router(parse_rules_text("\n---\n".join(texts)))


def detection(event_id: str = "d1", **fields: object) -> Fact:
    return build_event({"id": event_id, "type": "detection", **fields}, DEFAULT_START)


def cell_centre() -> tuple[float, float]:
    """A point in the middle of a 50 km region: farther than 5 km from every edge."""
    grid = Grid(REGION_KM)
    i, j = grid.cell(31.33, -110.94)
    return (i + 0.5) * grid.cell_deg, (j + 0.5) * grid.cell_deg


def test_a_key_picks_the_same_partition_in_every_process() -> None:
    assert partition_for("plate:AB1", 8) == zlib.crc32(b"plate:AB1") % 8
    assert {partition_for(f"plate:P{n}", 4) for n in range(100)} == {0, 1, 2, 3}


def test_a_fact_is_routed_once_per_key_name_its_rules_use() -> None:
    router = rules(PLATE_RULES)
    assert router.routes(detection(plate="ab-1")) == [("plate:AB1", Route("plate", True))]
    assert router.routes(detection()) == []  # no plate: no rule can key it


def test_a_fact_no_rule_takes_is_not_routed() -> None:
    router = rules(PLATE_RULES)
    weapon = build_event({"id": "w1", "type": "weapon", "weapon_event": "theft"}, DEFAULT_START)
    assert router.routes(weapon) == []


def test_a_geographic_fact_goes_to_its_region_and_as_a_copy_to_near_neighbours() -> None:
    router = rules(NEAR_RULE)
    grid = Grid(REGION_KM)
    lat, lon = cell_centre()
    i, j = grid.cell(lat, lon)
    assert router.routes(detection(lat=lat, lon=lon)) == [(f"geo:{i}:{j}", Route("geo", True))]
    # 2 km inside the region's southern edge: its southern neighbour sees a copy
    south = i * grid.cell_deg + 2 / 111.32
    routes = router.routes(detection(lat=south, lon=lon))
    assert routes[0] == (f"geo:{i}:{j}", Route("geo", True))
    assert (f"geo:{i - 1}:{j}", Route("geo", False)) in routes[1:]
    assert all(not route.owner for _, route in routes[1:])


def test_the_routed_copies_carry_the_fact_where_it_was_read_and_their_partition() -> None:
    router = rules(PLATE_RULES, NEAR_RULE)
    lat, lon = cell_centre()
    fact = detection(plate="AB-1", lat=lat, lon=lon)
    origin = Origin("events.detections", 2, 41)
    items = route_items(fact, router, router.ruleset.rules_taking(fact), 4, 7.5, origin)
    assert [it.route for _, it in items] == [key for key, _ in router.routes(fact)]
    assert [it.primary for _, it in items] == [True, False]  # one copy answers for the event
    for partition, it in items:
        assert partition == partition_for(it.route, 4)
        assert (it.doc, it.ts, it.ingested_at, it.origin) == (fact.doc, fact.ts, 7.5, origin)
        assert it.event_id == "d1"
    assert origin.source == InputPartition("events.detections", 2)


def test_a_routed_copy_as_a_json_object_names_every_field_and_comes_back() -> None:
    item = RoutedItem(
        "plate:AB1", "plate", True, False, {"event_id": "e"}, 5.0, 6.0, Origin("t", 1, 9)
    )
    doc = item.as_doc()
    assert doc == {
        "route": "plate:AB1",
        "kind": "plate",
        "owner": True,
        "primary": False,
        "doc": {"event_id": "e"},
        "ts": 5.0,
        "ingested_at": 6.0,
        "origin": {"topic": "t", "partition": 1, "offset": 9},
    }
    assert RoutedItem.from_doc(doc) == item
    with pytest.raises(TypeError):
        RoutedItem.from_doc({**doc, "unknown": 1})
