"""The release step (engine/release.py): who gets an alert, and what of it leaves for each
country, field by field, with the audit record that accounts for every field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.facts import Fact
from engine.hits import RawAlert
from engine.release import InterimPolicy, iso_z, recipients, release, release_json
from engine.ruletests import DEFAULT_START, build_event
from schemas.alerts import PolicyRef

PARTNERS = frozenset({"US", "MX"})
IN_US = (32.2226, -110.9747)  # Tucson
IN_MX = (29.0729, -110.9559)  # Hermosillo
NOW = 1_800_000_000.0


def fact(event_id: str, country: str, **fields: Any) -> Fact:
    etype = fields.pop("type", "detection")
    spec = {"id": event_id, "type": etype, "country": country, "at": fields.pop("at", 0)}
    return build_event({**spec, **fields}, DEFAULT_START)


def alert(
    *evidence: Fact,
    at: tuple[float, float] = IN_US,
    key: str | None = None,
    extra: tuple[str, ...] = (),
) -> RawAlert:
    return RawAlert(
        alert_id="a1",
        rule_id="r1",
        title="Rule one",
        severity="high",
        score=70,
        raised_at=evidence[-1].ts,
        first_seen=evidence[0].ts,
        last_seen=evidence[-1].ts,
        lat=at[0],
        lon=at[1],
        evidence=evidence,
        key=key,
        extra_recipients=extra,
    )


@dataclass
class ScriptedPolicy:
    """A sharing policy that answers from a script: (origin, destination, field) -> action;
    every other field is released. Its transforms mark what they touched."""

    script: dict[tuple[str, str, str], str] = field(default_factory=dict)
    zone: set[str] = field(default_factory=set)

    @property
    def ref(self) -> PolicyRef:
        return PolicyRef(id="scripted", version="1", sha256="0" * 64)

    def action(
        self,
        origin: str,
        destination: str,
        event_type: str,
        field: str,
        at: tuple[float, float] | None = None,
    ) -> tuple[str, str]:
        act = self.script.get((origin, destination, field), "release")
        return act, f"{act}-{field}"

    def transform(self, action: str, field: str, value: Any, destination: str) -> Any:
        if field == "location":
            return {"lat": round(value["lat"], 1), "lon": round(value["lon"], 1), "precision_m": 1}
        return f"{action}:{value}"

    def tlp(self, rule_id: str, severity: str) -> str:
        return "TLP:AMBER"

    def zone_recipients(self, lat: float, lon: float, rule_id: str) -> set[str]:
        return set(self.zone)


def test_recipients_are_the_contributors_the_territory_and_whom_the_policy_names() -> None:
    us_read = fact("d1", "US", plate="AB1")
    mx_read = fact("d2", "MX", plate="AB1")
    policy = InterimPolicy()
    assert recipients(alert(us_read), PARTNERS, policy) == ["US"]
    assert recipients(alert(us_read, at=IN_MX), PARTNERS, policy) == ["MX", "US"]
    assert recipients(alert(mx_read, at=IN_MX), PARTNERS, policy) == ["MX"]
    assert recipients(alert(us_read, extra=("MX",)), PARTNERS, policy) == ["MX", "US"]
    assert recipients(alert(us_read), PARTNERS, ScriptedPolicy(zone={"MX"})) == ["MX", "US"]
    # only partners: a country named by the rule but not configured gets nothing
    assert recipients(alert(us_read, extra=("CA",)), PARTNERS, policy) == ["US"]


def test_own_data_goes_as_is_and_another_countrys_identifiers_are_withheld() -> None:
    listed = fact("s1", "MX", type="suspect", person_ref="P-1", plate="AB-12")
    seen = fact("d1", "US", at="1h", plate="ab12")
    raw = alert(listed, seen, key="AB12")
    out = release_json(raw, "US", ["MX", "US"], InterimPolicy(), now=NOW, topic="alerts.us")
    assert out is not None
    body, audit = out
    assert [e["event_id"] for e in body["evidence"]] == ["s1", "d1"]
    assert "person_ref" not in body["evidence"][0]["fields"]
    assert "plate" not in body["evidence"][0]["fields"]
    assert body["evidence"][1]["fields"]["plate"] == "ab12"
    assert {(r["path"], r["action"]) for r in body["redactions"]} == {
        ("evidence[0].fields.person_ref", "redact"),
        ("evidence[0].fields.plate", "redact"),
    }
    assert (body["recipient"], body["recipients"]) == ("US", ["MX", "US"])
    assert body["raised_at"] == iso_z(raw.raised_at) and body["tlp"] == "TLP:AMBER+STRICT"
    assert body["location"] == {"lat": IN_US[0], "lon": IN_US[1], "precision_m": None}
    # the audit record: the topic, when, the policy, and one action per field and origin
    assert (audit["topic"], audit["released_at"]) == ("alerts.us", iso_z(NOW))
    assert audit["policy"] == body["policy"]
    fields = [(a["path"], a["origin"]) for a in audit["actions"]]
    assert len(fields) == len(set(fields))
    assert ("evidence[0].fields.person_ref", "MX") in fields
    assert ("location", "MX") in fields and ("location", "US") in fields
    # the key, as the rules read it, in both countries' fields, with what became of it
    assert sorted((m["path"], m["action"]) for m in audit["match"]["fields"]) == [
        ("evidence[0].fields.plate", "redact"),
        ("evidence[1].fields.plate", "release"),
    ]


def test_the_model_and_json_releases_are_one() -> None:
    raw = alert(fact("s1", "MX", type="suspect", person_ref="P-1"), fact("d1", "US", at="1h"))
    policy = InterimPolicy()
    modelled = release(raw, "US", ["MX", "US"], policy, now=NOW, topic="alerts.us")
    as_json = release_json(raw, "US", ["MX", "US"], policy, now=NOW, topic="alerts.us")
    assert modelled is not None and as_json is not None
    body, audit = modelled
    assert body.model_dump(mode="json") == as_json[0]
    assert audit.model_dump(mode="json") == as_json[1]


def test_evidence_the_policy_drops_is_left_out_and_said() -> None:
    listed = fact("s1", "MX", type="suspect", person_ref="P-1", plate="AB-12")
    seen = fact("d1", "US", at="1h", plate="ab12")
    policy = ScriptedPolicy({("MX", "US", "*"): "drop"})
    out = release_json(
        alert(listed, seen, key="AB12"), "US", ["MX", "US"], policy, now=NOW, topic="t"
    )
    assert out is not None
    body, audit = out
    assert [e["event_id"] for e in body["evidence"]] == ["d1"]
    assert body["redactions"][0] == {
        "path": "evidence[s1]",
        "action": "drop",
        "policy_rule": "drop-*",
    }
    assert {"path": "evidence[s1]", "action": "drop", "policy_rule": "drop-*", "origin": "MX"} in (
        audit["actions"]
    )
    assert {"path": "evidence[s1].fields.plate", "origin": "MX", "action": "drop"} in (
        audit["match"]["fields"]
    )


def test_nothing_goes_when_every_piece_of_evidence_is_dropped() -> None:
    policy = ScriptedPolicy({("MX", "US", "*"): "drop"})
    raw = alert(fact("s1", "MX", type="suspect", person_ref="P-1"))
    assert release_json(raw, "US", ["MX", "US"], policy, now=NOW, topic="t") is None
    assert release(raw, "US", ["MX", "US"], policy, now=NOW, topic="t") is None


def test_transformed_fields_carry_the_policys_value() -> None:
    policy = ScriptedPolicy({("MX", "US", "plate"): "pseudonymize"})
    raw = alert(fact("d1", "MX", plate="AB1"))
    out = release_json(raw, "US", ["MX", "US"], policy, now=NOW, topic="t")
    assert out is not None
    body, _ = out
    assert body["evidence"][0]["fields"]["plate"] == "pseudonymize:AB1"
    assert body["redactions"] == [
        {
            "path": "evidence[0].fields.plate",
            "action": "pseudonymize",
            "policy_rule": "pseudonymize-plate",
        }
    ]


def test_the_location_is_generalised_when_any_origin_may_not_give_it_as_is() -> None:
    policy = ScriptedPolicy({("MX", "US", "location"): "generalize"})
    raw = alert(fact("d1", "MX"), fact("d2", "US", at="1m"))
    out = release_json(raw, "US", ["MX", "US"], policy, now=NOW, topic="t")
    assert out is not None
    body, audit = out
    assert body["location"] == {"lat": 32.2, "lon": -111.0, "precision_m": 1}
    assert {"path": "location", "action": "generalize", "policy_rule": "generalize-location"} in (
        body["redactions"]
    )
    located = [a for a in audit["actions"] if a["path"] == "location"]
    assert {(a["origin"], a["action"]) for a in located} == {
        ("MX", "generalize"),
        ("US", "generalize"),
    }


def test_times_are_written_as_the_models_dump_them() -> None:
    assert iso_z(0.0) == "1970-01-01T00:00:00Z"
    assert iso_z(1.25) == "1970-01-01T00:00:01.250000Z"
