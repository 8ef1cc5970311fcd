"""What happens to a field of an event from one origin country going to one destination.

For each origin country (whose agency reported the event), destination country, event type,
zone and field, one action:

- `release`: the value as is;
- `pseudonymize`: keyed pseudonyms of the normalised identifier (`engine.policy.keys`);
- `generalize`: the location snapped to the centre of a grid cell `location_precision_m` wide;
- `redact`: withheld; the alert's `redactions` says so;
- `drop` (written `event: drop`): the whole event is not shown.

Rules are tried in order; the first rule that matches the event and names the field (or has
`other_fields`) decides. A field no matching rule names is withheld (`redact`); an event no
matching rule says `event:` of is shown. The zone is `inside` within `border_zone_km` of the
US-Mexico boundary, else `outside`, taken where the event is (for the alert's own location:
where the alert is); when the release step cannot say where, the strictest answer any zone
would get applies. An alert always has a location, so for it any action but `release` means
`generalize`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from engine.border import BorderLine, default_border
from engine.geo import KM_PER_DEG_LAT
from engine.policy.keys import Keyring
from engine.policy.model import PolicyDoc, PolicyRule
from schemas.alerts import PolicyRef

ZoneName = Literal["inside", "outside"]

# Stricter answers win when the zone is not known.
STRICTNESS: dict[str, int] = {
    "release": 0,
    "generalize": 1,
    "pseudonymize": 2,
    "redact": 3,
    "drop": 4,
}
DEFAULT_WITHHOLD = "default-withhold-unnamed-fields"
DEFAULT_SHOW = "default-show-events"


def generalize_location(value: Mapping[str, Any], precision_m: int) -> dict[str, Any]:
    """The centre of the `precision_m` grid cell holding the point (at most ~0.71 x precision
    away from it), and the precision."""
    lat, lon = float(value["lat"]), float(value["lon"])
    step_km = precision_m / 1000.0
    dlat = step_km / KM_PER_DEG_LAT
    clat = min(90.0, max(-90.0, (math.floor(lat / dlat) + 0.5) * dlat))
    dlon = step_km / (KM_PER_DEG_LAT * max(math.cos(math.radians(clat)), 0.01))
    clon = min(180.0, max(-180.0, (math.floor(lon / dlon) + 0.5) * dlon))
    return {"lat": round(clat, 6), "lon": round(clon, 6), "precision_m": precision_m}


def _border_km(border: BorderLine, lat: float, lon: float) -> float:
    return border.distance_km(lat, lon)


class Policy:
    """A loaded sharing policy and its keyring: the release step's `ReleasePolicy`."""

    def __init__(
        self,
        doc: PolicyDoc,
        *,
        sha256: str,
        keyring: Keyring,
        file: str,
        border: BorderLine | None = None,
    ) -> None:
        self.doc = doc
        self.file = file
        self.keyring = keyring
        self.border = border or default_border()
        self._ref = PolicyRef(id=doc.id, version=doc.version, sha256=sha256)
        self._tlp_rule: dict[str, str] = dict(doc.tlp.by_rule)
        self._tlp_severity: dict[str, str] = {k: v for k, v in doc.tlp.by_severity.items()}
        self._decisions: dict[tuple[str, str, str, str, str, str | None], tuple[str, str]] = {}
        self._zones: dict[tuple[float, float], ZoneName] = {}

    def __repr__(self) -> str:
        return f"Policy({self._ref.id} v{self._ref.version} from {self.file})"

    @property
    def ref(self) -> PolicyRef:
        return self._ref

    def zone_at(self, lat: float, lon: float) -> ZoneName:
        """`inside` within `border_zone_km` of the border, else `outside`."""
        zones = self._zones
        zone = zones.get((lat, lon))
        if zone is None:
            km = _border_km(self.border, lat, lon)
            zone = "inside" if km <= self.doc.border_zone_km else "outside"
            if len(zones) >= 100_000:
                zones.clear()
            zones[(lat, lon)] = zone
        return zone

    def action(
        self,
        origin: str,
        destination: str,
        event_type: str,
        field: str,
        at: tuple[float, float] | None = None,
        rule_id: str | None = None,
    ) -> tuple[str, str]:
        """(action, policy rule) for one field (`*`: the whole event) of an event from `origin`
        going to `destination`; `at` is where the event is (for the alert's own location,
        asked with event type `*`: where the alert is), None if unknown. `rule_id`, the alert's
        rule, is given for `patrol` events (policy rules with `alert_rules` need it)."""
        if at is not None:
            zone = self.zone_at(*at)
            act, rule = self._decide(origin, destination, event_type, field, zone, rule_id)
        else:
            act, rule = max(
                (
                    self._decide(origin, destination, event_type, field, z, rule_id)
                    for z in ("inside", "outside")
                ),
                key=lambda d: STRICTNESS[d[0]],
            )
        if event_type == "*" and field == "location" and act != "release":
            if act != "generalize":
                rule = f"{rule}; an alert's location is generalized, never withheld"
            return "generalize", rule
        return act, rule

    def _decide(
        self,
        origin: str,
        destination: str,
        event_type: str,
        field: str,
        zone: ZoneName,
        rule_id: str | None = None,
    ) -> tuple[str, str]:
        key = (origin, destination, event_type, field, zone, rule_id)
        hit = self._decisions.get(key)
        if hit is not None:
            return hit
        out = self._first_match(origin, destination, event_type, field, zone, rule_id)
        if len(self._decisions) < 100_000:
            self._decisions[key] = out
        return out

    def _first_match(
        self,
        origin: str,
        destination: str,
        event_type: str,
        field: str,
        zone: ZoneName,
        rule_id: str | None = None,
    ) -> tuple[str, str]:
        for r in self.doc.rules:
            if not _applies(r, origin, destination, event_type, zone, rule_id):
                continue
            if field == "*":
                if r.event is not None:
                    return ("drop" if r.event == "drop" else "release"), r.label
                continue
            act = r.fields.get(field) or r.other_fields
            if act is not None:
                return act, r.label
        if field == "*":
            return "release", DEFAULT_SHOW
        return "redact", DEFAULT_WITHHOLD

    def transform(self, action: str, field: str, value: Any, destination: str) -> Any:
        """The released value under `pseudonymize` (a list of pseudonyms, primary first) or
        `generalize` (a grid-cell centre with its `precision_m`)."""
        if action == "pseudonymize":
            return self.keyring.pseudonyms(field, value, destination)
        if action == "generalize":
            return generalize_location(value, self.doc.location_precision_m)
        raise ValueError(f"transform applies to pseudonymize and generalize, not {action!r}")

    def tlp(self, rule_id: str, severity: str) -> str:
        """The TLP label named for the rule, else for the severity."""
        return self._tlp_rule.get(rule_id) or self._tlp_severity[severity]

    def zone_recipients(self, lat: float, lon: float, rule_id: str) -> set[str]:
        """Partners the policy names for alerts of this rule at this place."""
        zone = self.zone_at(lat, lon)
        out: set[str] = set()
        for r in self.doc.recipients:
            if r.zone not in ("anywhere", zone):
                continue
            if r.rules is not None and rule_id not in r.rules:
                continue
            out.update(r.partners)
        return out


def _applies(
    r: PolicyRule,
    origin: str,
    destination: str,
    event_type: str,
    zone: str,
    rule_id: str | None = None,
) -> bool:
    if r.alert_rules is not None and rule_id not in r.alert_rules:
        return False
    if r.from_ is not None and origin not in r.from_:
        return False
    if r.to is not None and destination not in r.to:
        return False
    if r.direction == "domestic" and origin != destination:
        return False
    if r.direction == "cross-border" and origin == destination:
        return False
    # Event type `*` (the alert's own location) matches only rules for every event type.
    if r.event_types is not None and event_type not in r.event_types:
        return False
    return r.zone in ("anywhere", zone)
