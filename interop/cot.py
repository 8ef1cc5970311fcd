"""Cursor on Target: one alert as released to a country, as a CoT event for TAK clients.

Pure: it reads only the released alert (the JSON object on `alerts.<cc>`), so a generalised
location and pseudonymised identifiers go out exactly as they were released.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.geo import haversine_km

SEVERITIES = ("low", "medium", "high", "critical")

_GROUND = {"low": "a-u-G", "medium": "a-s-G", "high": "a-h-G", "critical": "a-h-G"}
_VEHICLE = {"low": "a-u-G-E-V", "medium": "a-s-G-E-V", "high": "a-h-G-E-V", "critical": "a-h-G-E-V"}
DEFAULT_COT_TYPES: dict[str, dict[str, str]] = {
    "*": _GROUND,
    "watchlist-plate": _VEHICLE,
    "weapon-vehicle-link": _VEHICLE,
    "crossing-without-inspection": _VEHICLE,
}
"""CoT type per rule (`*`: any other rule) and severity: a ground atom whose affiliation grows
with severity (unknown, suspect, hostile), a ground vehicle for the rules about a vehicle."""

HOW = "m-f"
"""Machine, fused: the alert is the pipeline's correlation of several reports."""
UNKNOWN = 9999999.0
"""CoT's value for an unknown height (`hae`) or vertical error (`le`)."""
REPORTED_CE_M = 50.0
"""Circular error of a location released as reported (a sensor or an officer's fix)."""
MAX_EVIDENCE_LINES = 20

_COT_TYPE = re.compile(r"^[a-z](-[A-Za-z0-9.]+)*$")
# Characters XML 1.0 cannot hold at all, escaped or not.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class CotError(ValueError):
    """A CoT type table or alert that cannot make a CoT event."""


def cot_types(
    overrides: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, dict[str, str]]:
    """The default type table with `overrides` ({rule id or `*`: {severity: type}}) laid over
    it, each severity a rule names replacing the default's."""
    table = {rule: dict(by_severity) for rule, by_severity in DEFAULT_COT_TYPES.items()}
    for rule, by_severity in (overrides or {}).items():
        for severity, cot_type in by_severity.items():
            if severity not in SEVERITIES:
                raise CotError(
                    f"CoT types, rule {rule!r}: unknown severity {severity!r}; "
                    f"valid severities are {list(SEVERITIES)}"
                )
            if not isinstance(cot_type, str) or not _COT_TYPE.match(cot_type):
                raise CotError(
                    f"CoT types, rule {rule!r}, severity {severity!r}: {cot_type!r} is not a "
                    "CoT type like a-h-G-E-V"
                )
            table.setdefault(rule, {})[severity] = cot_type
    return table


def cot_type(types: Mapping[str, Mapping[str, str]], rule_id: str, severity: str) -> str:
    """The CoT type of a rule's alert at a severity: the rule's own entry, else `*`'s."""
    own = types.get(rule_id, {}).get(severity)
    if own:
        return own
    return types.get("*", {}).get(severity) or _GROUND.get(severity, "a-u-G")


def circular_error_m(alert: Mapping[str, Any]) -> float:
    """Radius in metres around the alert's point that holds where it happened.

    A generalised location: the half diagonal of its grid cell (the cell's centre is released,
    the place is anywhere in the cell). Else, when the point is one of the evidence's own
    locations, that location's error; when it is none of them, or the rule is a proximity rule
    (a centroid), the farthest evidence location from it."""
    loc = alert["location"]
    lat, lon = float(loc["lat"]), float(loc["lon"])
    if loc.get("precision_m"):
        return _half_diagonal(loc["precision_m"])
    centroid = (alert.get("explanation") or {}).get("rule_type") == "proximity"
    farthest = REPORTED_CE_M
    for ev in alert.get("evidence", ()):
        where = ev.get("fields", {}).get("location")
        if not isinstance(where, Mapping):
            continue
        try:
            elat, elon = float(where["lat"]), float(where["lon"])
        except (KeyError, TypeError, ValueError):
            continue
        own = _half_diagonal(where["precision_m"]) if where.get("precision_m") else REPORTED_CE_M
        apart = haversine_km(lat, lon, elat, elon) * 1000.0
        if apart < 1.0 and not centroid:
            return own
        farthest = max(farthest, apart + own)
    return farthest


def _half_diagonal(precision_m: float) -> float:
    return float(precision_m) * math.sqrt(2) / 2


def remarks(alert: Mapping[str, Any]) -> str:
    """What a person reads on the map: TLP, title, severity and score, and the evidence with
    each event's agency, country and fields as released."""
    lines = [
        f"{alert['tlp']} {alert['title']}",
        f"Severity {alert['severity']}, score {alert['score']}, rule {alert['rule_id']}",
    ]
    change = alert.get("change", "raised")
    if change != "raised":
        revision = alert.get("revision") or {}
        said = f"{str(change).upper()} (version {alert.get('version')})"
        lines.insert(1, f"{said}: {revision.get('reason', '')}")
    evidence = list(alert.get("evidence", ()))
    agencies = sorted({f"{e['source']['agency']} ({e['source']['country']})" for e in evidence})
    place = alert.get("jurisdiction")
    if place is not None:
        area = place.get("area_name") or "outside every area"
        lines.append(f"Jurisdiction: {area} ({place['country']})")
    lines.append(f"Evidence: {len(evidence)} events from {', '.join(agencies)}")
    for ev in evidence[:MAX_EVIDENCE_LINES]:
        src = ev["source"]
        fields = ", ".join(
            f"{name}={_field_text(value)}"
            for name, value in ev.get("fields", {}).items()
            if name != "location" and value is not None
        )
        lines.append(
            f"- {ev['event_type']} {ev['occurred_at']} {src['agency']} ({src['country']})"
            + (f": {fields}" if fields else "")
        )
    if len(evidence) > MAX_EVIDENCE_LINES:
        lines.append(f"- and {len(evidence) - MAX_EVIDENCE_LINES} more")
    lines.append(f"Alert {alert['alert_id']}")
    return "\n".join(lines)


def _field_text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " / ".join(_field_text(v) for v in value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}={_field_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def alert_to_cot(
    alert: Mapping[str, Any],
    *,
    link: str,
    stale_s: float,
    types: Mapping[str, Mapping[str, str]] | None = None,
) -> bytes:
    """The CoT event (XML, UTF-8) of one alert as released to `alert["recipient"]`.

    `time` and `start` are when the pipeline raised the alert and `stale` is `stale_s` later, so
    an event held back by a TAK outage does not arrive looking fresh; `link` is the alert in
    that country's console."""
    if stale_s <= 0:
        raise CotError(f"stale_s must be positive, got {stale_s}")
    raised = datetime.fromisoformat(str(alert["raised_at"]))
    raised = raised.astimezone(UTC) if raised.tzinfo else raised.replace(tzinfo=UTC)
    loc = alert["location"]
    rule_id, severity = str(alert["rule_id"]), str(alert["severity"])
    alert_id, recipient = str(alert["alert_id"]), str(alert["recipient"])
    # A withdrawal is the same uid, already stale, with TAK's force-delete: clients drop it.
    withdrawn = alert.get("change") == "withdrawn"
    stale = raised if withdrawn else raised + timedelta(seconds=stale_s)

    event = ET.Element(
        "event",
        _attrs(
            version="2.0",
            uid=cot_uid(alert_id, recipient),
            type=cot_type(types if types is not None else DEFAULT_COT_TYPES, rule_id, severity),
            how=HOW,
            time=_cot_time(raised),
            start=_cot_time(raised),
            stale=_cot_time(stale),
        ),
    )
    ET.SubElement(
        event,
        "point",
        _attrs(
            lat=f"{float(loc['lat']):.6f}",
            lon=f"{float(loc['lon']):.6f}",
            hae=f"{UNKNOWN:.1f}",
            ce=f"{circular_error_m(alert):.1f}",
            le=f"{UNKNOWN:.1f}",
        ),
    )
    detail = ET.SubElement(event, "detail")
    if withdrawn:
        ET.SubElement(detail, "__forcedelete")
    ET.SubElement(detail, "contact", _attrs(callsign=str(alert["title"])))
    ET.SubElement(detail, "remarks").text = _clean(remarks(alert))
    ET.SubElement(
        detail,
        "link",
        _attrs(
            uid=alert_id,
            relation="r-u",
            mime="text/html",
            url=link,
            remarks="The alert in the console",
        ),
    )
    policy = alert.get("policy") or {}
    fusion = ET.SubElement(
        detail,
        "__fusion",
        _attrs(
            alert_id=alert_id,
            rule_id=rule_id,
            severity=severity,
            score=str(alert["score"]),
            tlp=str(alert["tlp"]),
            recipient=recipient,
            first_seen=str(alert["first_seen"]),
            last_seen=str(alert["last_seen"]),
            policy=f"{policy.get('id', '')} {policy.get('version', '')}".strip(),
        ),
    )
    place = alert.get("jurisdiction")
    if place is not None:
        ET.SubElement(
            fusion,
            "jurisdiction",
            _attrs(
                country=str(place["country"]),
                area_id=str(place.get("area_id") or ""),
                area_name=str(place.get("area_name") or ""),
                areas_version=str(place["areas_version"]),
            ),
        )
    for ev in alert.get("evidence", ()):
        ET.SubElement(
            fusion,
            "evidence",
            _attrs(
                event_id=str(ev["event_id"]),
                event_type=str(ev["event_type"]),
                occurred_at=str(ev["occurred_at"]),
                agency=str(ev["source"]["agency"]),
                country=str(ev["source"]["country"]),
            ),
        )
    xml: bytes = ET.tostring(event, encoding="utf-8", xml_declaration=True)
    return xml


def cot_uid(alert_id: str, recipient: str) -> str:
    """The CoT uid of an alert's copy for one country (a repeat of the alert updates it)."""
    return f"border-fusion.{alert_id}.{recipient.lower()}"


def _cot_time(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _attrs(**values: str) -> dict[str, str]:
    return {name: _clean(value) for name, value in values.items()}


def _clean(text: str) -> str:
    """Text XML can carry: characters XML 1.0 forbids (even escaped) become U+FFFD; the
    serializer escapes the rest."""
    return _NOT_XML.sub("\ufffd", text)
