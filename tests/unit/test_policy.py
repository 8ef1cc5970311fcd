"""The sharing policy: loading and refusals, the default policy per field and direction,
pseudonyms that still correlate (across origins and across a key rotation), generalisation,
drop, unknown fields, and a property test over generated alerts. No broker."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import PolicyError
from engine.facts import Fact
from engine.geo import haversine_km
from engine.hits import RawAlert, alert_id
from engine.policy import (
    DEFAULT_SHOW,
    DEFAULT_WITHHOLD,
    Keyring,
    Policy,
    check_policy,
    generalize_location,
    load_policy,
    normalize_identifier,
    parse_policy,
    reload_policy,
    same_subject,
)
from engine.release import recipients, release
from engine.rulefiles import load_rules
from engine.ruletests import DEFAULT_START, build_event
from schemas.events import COMMON_FIELDS, normalize_plate

REPO = Path(__file__).resolve().parents[2]
POLICY_FILE = REPO / "rules" / "policy.yaml"
POLICY_TEXT = POLICY_FILE.read_text()

BORDER_US = (31.3404, -110.9343)  # Nogales, US side, ~1 km from the line
BORDER_MX = (31.3086, -110.9422)  # Nogales, Mexican side, ~2.6 km from the line
INLAND_MX = (30.90, -110.60)  # Sonora, ~48 km from the line
INLAND_US = (32.2226, -110.9747)  # Tucson, ~95 km from the line
PN = re.compile(r"^pn:(?P<kind>[a-z_]+):(?P<key>[a-z0-9-]+):(?P<hex>[0-9a-f]{32})$")


def secret(seed: str) -> str:
    return base64.b64encode(hashlib.sha256(seed.encode()).digest()).decode()


def keyring(*ids: str, kinds: tuple[str, ...] = ("plate", "person_ref", "serial")) -> Keyring:
    return Keyring.parse(
        {k: [{"id": i, "secret": secret(f"{k}/{i}")} for i in ids] for k in kinds},
        source="test-keys",
    )


KEYS = keyring("k2026a")
DEFAULT = load_policy(POLICY_FILE, KEYS)


def fact(**kw: Any) -> Fact:
    return build_event(kw, DEFAULT_START)


def raw_alert(*facts: Fact, where: tuple[float, float] | None = None, **kw: Any) -> RawAlert:
    lat, lon = where or (facts[0].lat, facts[0].lon)
    ts = [f.ts for f in facts]
    rule_id = kw.pop("rule_id", "watchlist-plate")
    return RawAlert(
        alert_id=alert_id(rule_id, [f.event_id for f in facts]),
        rule_id=rule_id,
        title=kw.pop("title", "A test alert"),
        severity=kw.pop("severity", "high"),
        score=kw.pop("score", 70),
        raised_at=max(ts),
        first_seen=min(ts),
        last_seen=max(ts),
        lat=lat,
        lon=lon,
        evidence=tuple(facts),
        key=None,
        extra_recipients=(),
    )


def out_for(alert: RawAlert, dest: str, policy: Policy = DEFAULT) -> tuple[Any, Any]:
    who = sorted({"US", "MX", dest})
    res = release(alert, dest, who, policy, now=0.0, topic=f"alerts.{dest.lower()}")
    assert res is not None
    return res


def policy_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(POLICY_TEXT)
    for path, value in changes.items():
        node: Any = doc
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = keys[-1]
        if value is DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return doc


DELETE = object()


def as_text(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False)


# -- loading ---------------------------------------------------------------------------------


def test_default_policy_loads_with_id_version_and_file_hash():
    assert DEFAULT.ref.id == "us-mx-border-sharing"
    assert DEFAULT.ref.version == "2026.4"
    assert DEFAULT.ref.sha256 == hashlib.sha256(POLICY_FILE.read_bytes()).hexdigest()
    assert DEFAULT.doc.border_zone_km == 25 and DEFAULT.doc.location_precision_m == 1000


def test_rule_loader_skips_the_policy_file():
    rs = load_rules([REPO / "rules"])
    assert "us-mx-border-sharing" not in rs.by_id and len(rs) > 0


def test_hash_is_of_the_exact_bytes():
    a = parse_policy(POLICY_TEXT, KEYS)
    b = parse_policy(POLICY_TEXT + "\n# a comment changes the bytes\n", KEYS)
    assert a.ref.sha256 != b.ref.sha256 and a.ref.id == b.ref.id


RULES_IDX = {r["name"]: i for i, r in enumerate(yaml.safe_load(POLICY_TEXT)["rules"])}
IDENT = RULES_IDX["cross-border-identifiers"]
TRACE = RULES_IDX["cross-border-weapon-trace"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {f"rules__{IDENT}__fields__plate": "hash"},
            r"<inline>: policy rule cross-border-identifiers: field fields\.plate: Input should "
            r"be 'release', 'pseudonymize', 'generalize', 'redact' or 'drop'; got 'hash'$",
        ),
        (
            {f"rules__{IDENT}__fields__plate": "drop"},
            r"<inline>: policy rule cross-border-identifiers: field fields\.plate: `drop` "
            r"withholds a whole event, not one field: write `event: drop`, or `redact` to "
            r"withhold the field$",
        ),
        (
            {f"rules__{TRACE}__fields__serial": "generalize"},
            r"<inline>: policy rule cross-border-weapon-trace: field fields\.serial: only "
            r"`location` can be generalized$",
        ),
        (
            {f"rules__{TRACE}__fields__plat": "release"},
            r"<inline>: policy rule cross-border-weapon-trace: field fields\.plat: unknown field "
            r"'plat' for event types \['weapon'\]; valid fields are \['caliber', 'location', "
            r"'make', 'model', 'person_ref', 'plate', 'quantity', 'serial', 'weapon_event'\]$",
        ),
        (
            {f"rules__{IDENT}__fields__location": "pseudonymize"},
            r"<inline>: policy rule cross-border-identifiers: field fields\.location: a location "
            r"cannot be pseudonymized: generalize or redact it$",
        ),
        (
            {"version": 2026.1},
            r'<inline>: field version: must be text: quote it, e\.g\. version: "2026\.1"$',
        ),
        ({"border_zone_km": DELETE}, r"<inline>: field border_zone_km: required, but missing$"),
        (
            {"border_zone_km": -5},
            r"<inline>: field border_zone_km: Input should be greater than 0$",
        ),
        ({"sharing": "yes"}, r"<inline>: field sharing: Extra inputs are not permitted$"),
        (
            {"tlp__by_severity__high": "TLP:WHITE"},
            r"<inline>: field tlp\.by_severity\.high: Input should be 'TLP:RED', "
            r"'TLP:AMBER\+STRICT', 'TLP:AMBER', 'TLP:GREEN' or 'TLP:CLEAR'; got 'TLP:WHITE'$",
        ),
        (
            {"tlp__by_severity__low": DELETE},
            r"<inline>: field tlp\.by_severity\.low: no TLP label for severity 'low'$",
        ),
        (
            {f"rules__{IDENT}__from": ["USA"]},
            r"<inline>: policy rule cross-border-identifiers: field from\.0: String should match "
            r"pattern '\^\[A-Z\]\{2\}\$'; got 'USA'$",
        ),
        (
            {f"rules__{IDENT}__fields": {}},
            r"<inline>: policy rule cross-border-identifiers: the rule decides nothing: give "
            r"`event`, `fields` or `other_fields`$",
        ),
        (
            {f"rules__{TRACE}__name": "cross-border-identifiers"},
            rf"<inline>: policy rule cross-border-identifiers: field name: the name is already "
            rf"used by rule #{IDENT + 1}$",
        ),
        (
            {"recipients__0__partners": []},
            r"<inline>: policy rule border-zone-both-partners: field recipients\.partners: List "
            r"should have at least 1 item after validation, not 0$",
        ),
        (
            {f"rules__{IDENT}__other_fields": "pseudonymize"},
            r"<inline>: policy rule cross-border-identifiers: field other_fields: Input should "
            r"be 'release' or 'redact'; got 'pseudonymize'$",
        ),
    ],
)
def test_broken_policy_is_refused_naming_file_rule_and_field(changes, message):
    with pytest.raises(PolicyError, match=message):
        parse_policy(as_text(policy_doc(**changes)), KEYS)


def test_pseudonymizing_without_a_key_of_that_kind_is_refused():
    keys = keyring("k2026a", kinds=("plate", "serial"))
    with pytest.raises(
        PolicyError,
        match=r"^<inline>: policy rule cross-border-identifiers: field fields\.person_ref: no "
        r"pseudonymisation key of kind 'person_ref' in test-keys \(it has keys for "
        r"\['plate', 'serial'\]\)$",
    ):
        parse_policy(POLICY_TEXT, keys)


def test_every_problem_is_reported_at_once():
    doc = policy_doc(
        **{f"rules__{IDENT}__fields__plate": "drop", f"rules__{TRACE}__fields__serial": "x"}
    )
    with pytest.raises(PolicyError) as ei:
        parse_policy(as_text(doc), KEYS)
    # pydantic refuses the unknown action before the semantic checks run: both are named.
    doc2 = policy_doc(
        **{
            f"rules__{IDENT}__fields__plate": "drop",
            f"rules__{TRACE}__fields__serial": "generalize",
        }
    )
    with pytest.raises(PolicyError, match=r"\(and 1 more problem\(s\):") as ei2:
        parse_policy(as_text(doc2), KEYS)
    assert [p.field for p in ei2.value.problems] == ["fields.plate", "fields.serial"]
    assert ei.value.problems[0].field == "fields.serial"


def test_check_reports_every_problem_of_every_file(tmp_path: Path):
    bad = tmp_path / "policy-bad.yaml"
    bad.write_text(
        as_text(
            policy_doc(
                **{
                    f"rules__{IDENT}__fields__plate": "drop",
                    f"rules__{TRACE}__fields__serial": "generalize",
                }
            )
        )
    )
    problems = check_policy([POLICY_FILE, bad], KEYS)
    assert [(p.file, p.rule, p.field) for p in problems] == [
        (str(bad), "cross-border-identifiers", "fields.plate"),
        (str(bad), "cross-border-weapon-trace", "fields.serial"),
    ]


def test_not_yaml_and_not_a_mapping_are_refused():
    with pytest.raises(
        PolicyError,
        match=r"^<inline>: not valid YAML at line 2, column 8: expected .,. or .\]., but got .:.$",
    ):
        parse_policy("id: [x\nversion: 1\n", KEYS)
    with pytest.raises(PolicyError, match=r"^<inline>: a policy file must be a mapping .*got list"):
        parse_policy("- 1\n", KEYS)


def test_file_errors_name_the_path(tmp_path: Path):
    p = tmp_path / "policy.yaml"
    with pytest.raises(PolicyError, match=rf"^{re.escape(str(p))}: cannot read the policy file"):
        load_policy(p, KEYS)
    p.write_text(as_text(policy_doc(border_zone_km="near")))
    with pytest.raises(
        PolicyError,
        match=rf"^{re.escape(str(p))}: field border_zone_km: Input should be a valid number",
    ):
        load_policy(p, KEYS)


def test_reload_keeps_the_old_policy_when_the_new_file_is_broken(tmp_path: Path):
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY_TEXT)
    current = load_policy(p, KEYS)
    same = reload_policy(current, p)
    assert same.policy is current and not same.changed and same.error is None

    p.write_text(as_text(policy_doc(**{f"rules__{IDENT}__fields__plate": "publish"})))
    refused = reload_policy(current, p)
    assert refused.policy is current and not refused.changed
    assert refused.error is not None
    assert str(refused.error).startswith(
        f"{p}: policy rule cross-border-identifiers: field fields.plate: Input should be"
    )

    p.write_text(as_text(policy_doc(version="2026.2", border_zone_km=30)))
    changed = reload_policy(current, p)
    assert changed.changed and changed.error is None
    assert changed.policy.ref.version == "2026.2" and changed.policy.doc.border_zone_km == 30


# -- the default policy, field by field --------------------------------------------------------

XB = "cross-border"


@pytest.mark.parametrize(
    ("origin", "dest", "etype", "field", "at", "expected"),
    [
        # a country gets its own data as is, wherever it is
        ("US", "US", "suspect", "person_ref", INLAND_US, ("release", "own-data")),
        ("MX", "MX", "detection", "plate", INLAND_MX, ("release", "own-data")),
        ("MX", "MX", "detection", "location", INLAND_MX, ("release", "own-data")),
        ("MX", "MX", "*", "location", INLAND_MX, ("release", "own-data")),
        ("MX", "MX", "detection", "anything_new", None, ("release", "own-data")),
        # across the border: identifiers as pseudonyms, both directions
        ("US", "MX", "suspect", "person_ref", None, ("pseudonymize", f"{XB}-identifiers")),
        ("MX", "US", "suspect", "person_ref", None, ("pseudonymize", f"{XB}-identifiers")),
        ("MX", "US", "track", "plate", None, ("pseudonymize", f"{XB}-identifiers")),
        ("US", "MX", "weapon", "plate", None, ("pseudonymize", f"{XB}-identifiers")),
        # weapon identification for trace cooperation
        ("US", "MX", "weapon", "serial", None, ("release", f"{XB}-weapon-trace")),
        ("MX", "US", "weapon", "make", None, ("release", f"{XB}-weapon-trace")),
        ("MX", "US", "weapon", "model", None, ("release", f"{XB}-weapon-trace")),
        ("US", "MX", "weapon", "caliber", None, ("release", f"{XB}-weapon-trace")),
        # locations: as is in the border zone, ~1 km outside it, strictest when unknown
        ("US", "MX", "detection", "location", BORDER_US, ("release", f"{XB}-location-border-zone")),
        ("MX", "US", "suspect", "location", BORDER_MX, ("release", f"{XB}-location-border-zone")),
        (
            "US",
            "MX",
            "detection",
            "location",
            INLAND_US,
            ("generalize", f"{XB}-location-elsewhere"),
        ),
        ("MX", "US", "weapon", "location", INLAND_MX, ("generalize", f"{XB}-location-elsewhere")),
        ("MX", "US", "track", "location", None, ("generalize", f"{XB}-location-elsewhere")),
        ("MX", "US", "*", "location", BORDER_MX, ("release", f"{XB}-location-border-zone")),
        ("MX", "US", "*", "location", INLAND_MX, ("generalize", f"{XB}-location-elsewhere")),
        # other details, the whole event, and fields no rule names
        ("US", "MX", "detection", "confidence", None, ("release", f"{XB}-event-details")),
        ("US", "MX", "suspect", "watchlist", None, ("release", f"{XB}-event-details")),
        ("US", "MX", "detection", "*", None, ("release", f"{XB}-event-details")),
        ("US", "MX", "detection", "serial", None, ("redact", DEFAULT_WITHHOLD)),
        ("US", "MX", "track", "vin", None, ("redact", DEFAULT_WITHHOLD)),
    ],
)
def test_default_policy_per_field_and_direction(origin, dest, etype, field, at, expected):
    act, rule = DEFAULT.action(origin, dest, etype, field, at=at)
    assert act == expected[0]
    assert rule == expected[1] or rule == f"{expected[1]} (MLAT art. 7)"


def test_policy_rule_names_cite_the_agreement():
    _, rule = DEFAULT.action("US", "MX", "suspect", "person_ref")
    assert rule == "cross-border-identifiers (MLAT art. 7)"


def test_release_to_the_other_country_with_the_default_policy():
    sus = fact(id="s1", type="suspect", country="MX", person_ref="mx-p-1", plate="XKZ-481")
    gun = fact(
        id="w1",
        type="weapon",
        country="US",
        serial="ab123",
        make="Colt",
        model="M4",
        caliber="5.56",
        plate="xkz 481",
        lat=INLAND_US[0],
        lon=INLAND_US[1],
    )
    alert = raw_alert(sus, gun, where=INLAND_US, rule_id="weapon-vehicle-link")
    us, _ = out_for(alert, "US")
    mx, _ = out_for(alert, "MX")
    # Mexico's suspect, seen by the US: identifiers pseudonymised; its own weapon as is.
    us_sus, us_gun = us.evidence
    assert us_sus.fields["person_ref"][0].startswith("pn:person_ref:k2026a:")
    assert us_sus.fields["plate"][0].startswith("pn:plate:k2026a:")
    assert us_sus.fields["watchlist"] == "general" and us_sus.fields["risk"] == "high"
    assert us_gun.fields["serial"] == "ab123" and us_gun.fields["plate"] == "xkz 481"
    # The US weapon, seen by Mexico: trace fields as is, the plate pseudonymised, and the same
    # pseudonym as Mexico's own plate would have had if it had been shown as one.
    mx_sus, mx_gun = mx.evidence
    assert mx_sus.fields["person_ref"] == "mx-p-1"
    assert {k: mx_gun.fields[k] for k in ("serial", "make", "model", "caliber")} == {
        "serial": "ab123",
        "make": "Colt",
        "model": "M4",
        "caliber": "5.56",
    }
    assert mx_gun.fields["plate"] == DEFAULT.transform("pseudonymize", "plate", "XKZ481", "MX")
    # Tucson is far from the border: the US weapon's location is coarsened for Mexico.
    loc = mx_gun.fields["location"]
    assert loc["precision_m"] == 1000
    assert 0 < haversine_km(loc["lat"], loc["lon"], *INLAND_US) < 0.75
    assert {(r.path, r.action, r.policy_rule) for r in mx.redactions} >= {
        ("evidence[1].fields.plate", "pseudonymize", "cross-border-identifiers (MLAT art. 7)"),
        (
            "evidence[1].fields.location",
            "generalize",
            "cross-border-location-elsewhere (MLAT art. 7)",
        ),
        ("location", "generalize", "cross-border-location-elsewhere (MLAT art. 7)"),
    }
    assert mx.location.lat != round(INLAND_US[0], 6)
    assert mx.policy == DEFAULT.ref and us.policy == DEFAULT.ref
    assert mx.tlp == "TLP:AMBER+STRICT"


def test_locations_in_the_border_zone_are_released_as_is_and_audited():
    sus = fact(id="s1", type="suspect", country="MX", lat=BORDER_MX[0], lon=BORDER_MX[1])
    det = fact(id="d1", type="detection", country="US", lat=INLAND_US[0], lon=INLAND_US[1])
    alert = raw_alert(sus, det, where=BORDER_MX)
    us, audit = out_for(alert, "US")
    assert us.evidence[0].fields["location"] == {"lat": BORDER_MX[0], "lon": BORDER_MX[1]}
    assert (us.location.lat, us.location.lon) == BORDER_MX
    assert "location" not in {r.path for r in us.redactions}
    mx, mx_audit = out_for(alert, "MX")
    assert mx.evidence[1].fields["location"]["precision_m"] == 1000  # US data, inland
    assert (mx.location.lat, mx.location.lon) == BORDER_MX
    loc = {(a.origin, a.action) for a in audit.actions if a.path == "location"}
    assert loc == {("MX", "release"), ("US", "release")}
    assert {a.action for a in mx_audit.actions if a.path == "location"} == {"release"}


def test_alert_location_outside_the_zone_is_generalized_and_audited():
    det = fact(id="d1", type="detection", country="US", lat=INLAND_US[0], lon=INLAND_US[1])
    alert = raw_alert(det, where=INLAND_US)
    mx, audit = out_for(alert, "MX")
    assert haversine_km(mx.location.lat, mx.location.lon, *INLAND_US) < 0.75
    (loc,) = [a for a in audit.actions if a.path == "location"]
    assert (loc.action, loc.origin) == ("generalize", "US")
    us, _ = out_for(alert, "US")
    assert (us.location.lat, us.location.lon) == INLAND_US


def test_zone_recipients_and_tlp():
    assert DEFAULT.zone_recipients(*BORDER_MX, "coordinated-crossing") == {"US", "MX"}
    assert DEFAULT.zone_recipients(*INLAND_MX, "coordinated-crossing") == set()
    det = [
        fact(id=f"c{i}", type="detection", country="MX", lat=BORDER_MX[0], lon=BORDER_MX[1])
        for i in range(2)
    ]
    assert recipients(raw_alert(*det), frozenset({"US", "MX"}), DEFAULT) == ["MX", "US"]
    inland = [
        fact(id=f"c{i}", type="detection", country="MX", lat=INLAND_MX[0], lon=INLAND_MX[1])
        for i in range(2)
    ]
    assert recipients(raw_alert(*inland), frozenset({"US", "MX"}), DEFAULT) == ["MX"]
    assert DEFAULT.tlp("any-rule", "medium") == "TLP:AMBER"
    custom = parse_policy(as_text(policy_doc(tlp__by_rule={"watchlist-plate": "TLP:RED"})), KEYS)
    assert custom.tlp("watchlist-plate", "low") == "TLP:RED"
    assert custom.tlp("coordinated-crossing", "critical") == "TLP:AMBER+STRICT"


# -- pseudonyms --------------------------------------------------------------------------------


def test_pseudonyms_carry_kind_and_key_id_and_are_deterministic():
    (p,) = DEFAULT.transform("pseudonymize", "plate", "abc-123", "MX")
    m = PN.match(p)
    assert m and m["kind"] == "plate" and m["key"] == "k2026a"
    # Same key material loaded again (a restart): the same pseudonym.
    again = load_policy(POLICY_FILE, keyring("k2026a"))
    assert again.transform("pseudonymize", "plate", "ABC 123", "MX") == [p]
    # Another destination, another kind, another value: another pseudonym.
    assert DEFAULT.transform("pseudonymize", "plate", "ABC123", "US") != [p]
    assert DEFAULT.transform("pseudonymize", "serial", "ABC123", "MX") != [p]
    assert DEFAULT.transform("pseudonymize", "plate", "ABC124", "MX") != [p]


def test_identifiers_are_normalised_before_pseudonymisation():
    assert normalize_identifier("plate", " xkz-481 ") == "XKZ481" == normalize_plate("xkz 481")
    assert normalize_identifier("person_ref", "  mx-p-1 ") == "MX-P-1"
    assert normalize_identifier("serial", "ab123\n") == "AB123"


def test_same_identifier_from_either_origin_gives_the_same_pseudonym_for_a_destination():
    """With a third partner, Mexico receives US and Canadian data as pseudonyms: the same plate
    and person from either origin correlate."""
    us = fact(id="u", type="suspect", country="US", agency="CBP", person_ref="p-9", plate="ab-12")
    ca = fact(id="c", type="suspect", country="CA", agency="RCMP", person_ref=" P-9", plate="AB 12")
    alert = raw_alert(us, ca)
    mx, _ = out_for(alert, "MX")
    a, b = mx.evidence
    assert a.fields["plate"] == b.fields["plate"]
    assert a.fields["person_ref"] == b.fields["person_ref"]
    # A policy that pseudonymises for everyone shows it for a country's own data too.
    everyone = policy_doc()
    everyone["rules"].insert(
        0,
        {"name": "pseudonyms-for-all", "fields": {"plate": "pseudonymize"}},
    )
    pol = parse_policy(as_text(everyone), KEYS)
    mx_own = fact(id="m", type="detection", country="MX", plate="AB-12")
    us_det = fact(id="d", type="detection", country="US", plate="ab12")
    out, _ = out_for(raw_alert(mx_own, us_det), "MX", pol)
    assert out.evidence[0].fields["plate"] == out.evidence[1].fields["plate"]
    assert same_subject(out.evidence[0].fields["plate"], a.fields["plate"])


def test_rotation_window_keeps_matching_working():
    before = keyring("k2026a")  # only the old key
    during = keyring("k2026b", "k2026a")  # new primary, old still active
    after = keyring("k2026b")  # old key retired
    old = before.pseudonyms("plate", "XKZ-481", "MX")
    mid = during.pseudonyms("plate", "xkz 481", "MX")
    new = after.pseudonyms("plate", "XKZ481", "MX")
    assert [PN.match(p)["key"] for p in mid] == ["k2026b", "k2026a"]  # type: ignore[index]
    # An alert released before the rotation matches one released during the window...
    assert same_subject(old, mid)
    # ...and alerts released during the window match those released after it.
    assert same_subject(mid, new)
    # Directly, old and new do not: the window is what carries matching across.
    assert not same_subject(old, new)
    assert not same_subject(mid, during.pseudonyms("plate", "XKZ482", "MX"))
    # The pipeline side: a pseudonym made under the old key is recognised while it is active.
    assert during.matches(old[0], "xkz-481", "MX")
    assert not during.matches(old[0], "XKZ482", "MX")
    assert not after.matches(old[0], "XKZ481", "MX")
    assert after.matches(new[0], "XKZ481", "MX")
    # The release step emits both pseudonyms during the window, primary first.
    pol = load_policy(POLICY_FILE, during)
    assert pol.transform("pseudonymize", "plate", "XKZ-481", "MX") == mid


def test_keyring_refusals_never_echo_key_material():
    short = base64.b64encode(b"x" * 16).decode()
    with pytest.raises(
        PolicyError,
        match=r"^keys\.json: field plate\.0\.secret: must hold at least 32 bytes of key "
        r"material, got 16$",
    ) as ei:
        Keyring.parse({"plate": [{"id": "k1", "secret": short}]}, source="keys.json")
    assert short not in str(ei.value) and ei.value.__cause__ is None
    with pytest.raises(
        PolicyError, match=r"^keys\.json: field plate\.0\.secret: must be base64 text"
    ):
        Keyring.parse({"plate": [{"id": "k1", "secret": "not base64!"}]}, source="keys.json")
    with pytest.raises(PolicyError, match=r"^keys\.json: field plate\.0\.id: String should match"):
        Keyring.parse({"plate": [{"id": "K:1", "secret": secret("a")}]}, source="keys.json")
    three = [{"id": f"k{i}", "secret": secret(str(i))} for i in range(3)]
    with pytest.raises(
        PolicyError, match=r"^keys\.json: field plate: List should have at most 2 items"
    ):
        Keyring.parse({"plate": three}, source="keys.json")
    with pytest.raises(PolicyError, match=r"^keys\.json: a keys file must map identifier kinds"):
        Keyring.from_text("[1, 2]", source="keys.json")
    assert "secret" not in repr(KEYS).replace("secret=SecretBytes(b'**********')", "")


# -- generalisation, drop, unknown fields ------------------------------------------------------


@given(
    lat=st.floats(min_value=-80, max_value=80, allow_nan=False),
    lon=st.floats(min_value=-179.9, max_value=179.9, allow_nan=False),
)
def test_generalisation_is_about_one_km(lat: float, lon: float):
    g = generalize_location({"lat": lat, "lon": lon}, 1000)
    assert haversine_km(lat, lon, g["lat"], g["lon"]) <= 0.72
    assert g["precision_m"] == 1000
    # Every point of the cell gives the same answer: the answer says nothing finer than 1 km.
    assert generalize_location(g, 1000) == g


def test_generalisation_hides_small_moves_and_shows_large_ones():
    a = generalize_location({"lat": 30.9001, "lon": -110.6001}, 1000)
    b = generalize_location({"lat": 30.9002, "lon": -110.6002}, 1000)
    far = generalize_location({"lat": 30.95, "lon": -110.6}, 1000)
    assert a == b and a != far


DROP_MX_WEAPONS_FOR_US = """
id: drop-test
version: "1"
border_zone_km: 25
location_precision_m: 1000
tlp:
  by_severity: {low: TLP:GREEN, medium: TLP:AMBER, high: TLP:AMBER, critical: TLP:RED}
rules:
  - name: own-data
    direction: domestic
    other_fields: release
  - name: no-weapon-events-to-the-us
    cites: Annex B
    from: MX
    to: US
    event_types: [weapon]
    event: drop
  - name: details-only
    direction: cross-border
    fields: {subject_kind: release, sensor_kind: release, location: generalize}
"""


def test_drop_withholds_the_whole_event_and_says_so():
    pol = parse_policy(DROP_MX_WEAPONS_FOR_US, KEYS)
    gun = fact(id="w1", type="weapon", country="MX", serial="S1", plate="ZZ-1")
    det = fact(id="d1", type="detection", country="MX", plate="ZZ-1", sensor_kind="camera")
    alert = raw_alert(gun, det)
    us, audit = out_for(alert, "US", pol)
    assert [e.event_id for e in us.evidence] == ["d1"]
    assert ("evidence[w1]", "drop", "no-weapon-events-to-the-us (Annex B)") in {
        (r.path, r.action, r.policy_rule) for r in us.redactions
    }
    assert ("evidence[w1]", "drop") in {(a.path, a.action) for a in audit.actions}
    assert "S1" not in orjson.dumps(us.model_dump(mode="json")).decode()
    # Mexico's own events go to Mexico as is.
    mx, _ = out_for(alert, "MX", pol)
    assert [e.event_id for e in mx.evidence] == ["w1", "d1"]
    # Nothing left to show: nothing is released.
    only_gun = raw_alert(gun)
    assert release(only_gun, "US", ["MX", "US"], pol, now=0.0, topic="alerts.us") is None


def test_unknown_and_unnamed_fields_are_withheld():
    pol = parse_policy(DROP_MX_WEAPONS_FOR_US, KEYS)
    det = fact(id="d1", type="detection", country="MX", plate="ZZ-1", confidence=0.5)
    us, _ = out_for(raw_alert(det), "US", pol)
    fields = us.evidence[0].fields
    assert set(fields) == {"subject_kind", "sensor_kind", "location"}
    withheld = {r.path.rsplit(".", 1)[1] for r in us.redactions if r.action == "redact"}
    assert withheld == {"plate", "confidence", "count", "sensor_id"}
    assert {r.policy_rule for r in us.redactions if r.action == "redact"} == {DEFAULT_WITHHOLD}
    assert pol.action("MX", "US", "detection", "a_field_added_later") == (
        "redact",
        DEFAULT_WITHHOLD,
    )
    assert pol.action("MX", "US", "detection", "*") == ("release", DEFAULT_SHOW)


def test_transform_is_only_for_pseudonymize_and_generalize():
    with pytest.raises(ValueError, match="not 'redact'"):
        DEFAULT.transform("redact", "plate", "X", "MX")


# -- the property: nothing of one country's identifiers leaks to the other -----------------

PLATE = st.tuples(
    st.from_regex(r"[G-Z]{3}[0-9]{4}", fullmatch=True),
    st.sampled_from(["as is", "lower", "dash", "space"]),
).map(
    lambda t: {
        "as is": t[0],
        "lower": t[0].lower(),
        "dash": f"{t[0][:3]}-{t[0][3:]}",
        "space": f"{t[0][:3]} {t[0][3:].lower()}",
    }[t[1]]
)
PERSON = st.tuples(st.from_regex(r"[G-Z]{2}-[0-9]{5}", fullmatch=True), st.booleans()).map(
    lambda t: t[0].lower() if t[1] else t[0]
)
WHERE = st.tuples(
    st.floats(min_value=30.2, max_value=32.6), st.floats(min_value=-114.5, max_value=-106.6)
)


@st.composite
def event_specs(draw: st.DrawFn, i: int) -> dict[str, Any]:
    etype = draw(st.sampled_from(["detection", "suspect", "weapon", "track"]))
    lat, lon = draw(WHERE)
    spec: dict[str, Any] = {
        "id": f"e{i}",
        "type": etype,
        "country": draw(st.sampled_from(["US", "MX"])),
        "lat": lat,
        "lon": lon,
        "at": f"{i}m",
    }
    if etype == "suspect":
        spec["person_ref"] = draw(PERSON)
    elif etype == "weapon":
        if draw(st.booleans()):
            spec["person_ref"] = draw(PERSON)
        spec["serial"] = draw(st.from_regex(r"SN[0-9]{6}", fullmatch=True))
    if draw(st.booleans()) or etype == "track":
        spec["plate"] = draw(PLATE)
    return spec


@st.composite
def alerts(draw: st.DrawFn) -> RawAlert:
    n = draw(st.integers(min_value=1, max_value=5))
    specs = [draw(event_specs(i)) for i in range(n)]
    # Reuse identifiers across events (and countries) sometimes, as real alerts do.
    if n > 1 and draw(st.booleans()):
        src, dst = specs[0], specs[-1]
        if "plate" in src:
            dst["plate"] = src["plate"]
        if "person_ref" in src and dst["type"] in ("suspect", "weapon"):
            dst["person_ref"] = src["person_ref"]
    facts = [fact(**s) for s in specs]
    where = draw(st.one_of(st.none(), WHERE))
    return raw_alert(
        *facts,
        where=where,
        rule_id=draw(st.sampled_from(["watchlist-plate", "weapon-vehicle-link"])),
        severity=draw(st.sampled_from(["low", "medium", "high", "critical"])),
    )


def _idents(f: Fact) -> list[tuple[str, str]]:
    out = []
    for name in ("plate", "person_ref"):
        v = getattr(f.event, name, None)
        if v:
            out.append((name, v))
    return out


DROP_POLICY = parse_policy(DROP_MX_WEAPONS_FOR_US, KEYS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alert=alerts(), policy=st.sampled_from([DEFAULT, DROP_POLICY]))
def test_released_alerts_leak_no_foreign_identifiers_and_account_for_every_field(
    alert: RawAlert, policy: Policy
):
    for dest in ("US", "MX"):
        res = release(alert, dest, ["MX", "US"], policy, now=0.0, topic="t")
        if res is None:
            assert all(
                policy.action(f.country, dest, f.event_type, "*")[0] == "drop"
                for f in alert.evidence
            )
            continue
        out, audit = res
        text = orjson.dumps(out.model_dump(mode="json")).decode()
        # 1. No raw person_ref or plate of the other country, in any spelling we accept as
        #    the same identifier, unless the destination reported that identifier itself.
        own = {
            (k, normalize_identifier(k, v))
            for f in alert.evidence
            if f.country == dest
            for k, v in _idents(f)
        }
        for f in alert.evidence:
            if f.country == dest:
                continue
            for k, v in _idents(f):
                if (k, normalize_identifier(k, v)) in own:
                    continue
                for form in {v, v.strip(), normalize_identifier(k, v)}:
                    assert form not in text, (k, form, dest)
        # 2. Every field not released as is is listed in `redactions`.
        redacted = {r.path: r.action for r in out.redactions}
        shown = {e.event_id: (i, e) for i, e in enumerate(out.evidence)}
        for f in alert.evidence:
            if f.event_id not in shown:
                assert redacted[f"evidence[{f.event_id}]"] == "drop"
                continue
            i, ev = shown[f.event_id]
            raw = {k: v for k, v in f.doc.items() if k not in COMMON_FIELDS}
            for name, value in raw.items():
                path = f"evidence[{i}].fields.{name}"
                if ev.fields.get(name, ...) != value:
                    assert redacted.get(path) in ("pseudonymize", "generalize", "redact"), path
                else:
                    assert path not in redacted
        if (out.location.lat, out.location.lon) != (round(alert.lat, 6), round(alert.lon, 6)):
            assert redacted.get("location") == "generalize"
        # 3. The audit record has an action for every field, agreeing with `redactions`.
        audited = {(a.path, a.action) for a in audit.actions}
        for f in alert.evidence:
            if f.event_id not in shown:
                assert (f"evidence[{f.event_id}]", "drop") in audited
                continue
            i, _ = shown[f.event_id]
            names = {k for k in f.doc if k not in COMMON_FIELDS}
            assert names <= {
                p.rsplit(".", 1)[1] for p, _ in audited if p.startswith(f"evidence[{i}].")
            }
        for r in out.redactions:
            assert (r.path, r.action) in audited, r
        assert {a.origin for a in audit.actions if a.path == "location"} == {
            f.country for f in alert.evidence
        }
        assert out.policy == audit.policy == policy.ref


def test_the_workers_json_release_is_exactly_what_the_models_dump() -> None:
    """The worker writes `release_json`'s objects without building the models: they must be
    valid alerts and audit records, and dump back to themselves."""
    import io

    from engine.release import release_json
    from engine.replay import correlate_file
    from streams.tools.simulator import Simulator

    sim = Simulator(seed=5, scenario_share=0.3, run_id="rj")
    clock = iter(range(1_780_000_000, 1_780_000_000 + 9000, 3))
    lines = [
        orjson.dumps(ev)
        for (_, ev), _ in zip(sim.stream(lambda: float(next(clock))), range(2500), strict=False)
    ]
    alerts, _ = correlate_file(
        io.BytesIO(b"\n".join(lines)),
        load_rules([REPO / "rules"]),
        partners=frozenset({"US", "MX"}),
    )
    assert len({a.rule_id for a in alerts}) >= 2
    for a in alerts:
        who = recipients(a, frozenset({"US", "MX"}), DEFAULT)
        for dest in who:
            out = release_json(a, dest, who, DEFAULT, now=1_780_000_123.5, topic="alerts.x")
            models = release(a, dest, who, DEFAULT, now=1_780_000_123.5, topic="alerts.x")
            assert out is not None and models is not None
            assert models[0].model_dump(mode="json") == out[0]
            assert models[1].model_dump(mode="json") == out[1]
