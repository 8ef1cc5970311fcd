"""The alerts a console holds: the newest ones, bounded, each once at its newest version."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from schemas.alerts import Alert, version_entry

DEFAULT_CAPACITY = 5000


class AlertStore:
    """Alerts by id in arrival order; past `capacity` the earliest arrived is forgotten.

    Each is held at its newest version, with a `history` of its versions (version, change,
    when, and for an update or withdrawal the revision). A version seen again (a worker
    restarted or replayed) or older than the one held changes nothing.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._alerts: OrderedDict[str, tuple[float, int, dict[str, Any]]] = OrderedDict()
        self._arrivals = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._alerts)

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._alerts

    def add(self, alert: Alert, doc: dict[str, Any]) -> bool:
        """Keep an alert version (`doc` is its JSON as received, to which a `history` is
        added); False if that version, or a newer one, is already held."""
        held = self._alerts.get(alert.alert_id)
        step = version_entry(doc)
        if held is not None:
            versions: list[dict[str, Any]] = held[2]["history"]
            if any(v["version"] == alert.version for v in versions):
                return False
            history = sorted([*versions, step], key=lambda v: int(v["version"]))
            if alert.version < max(int(v["version"]) for v in versions):
                held[2]["history"] = history  # an older version, late: history only
                return False
            doc = {**doc, "history": history}
            self._alerts.move_to_end(alert.alert_id)
        else:
            doc = {**doc, "history": [step]}
        self._arrivals += 1
        self._alerts[alert.alert_id] = (alert.raised_at.timestamp(), self._arrivals, doc)
        while len(self._alerts) > self.capacity:
            self._alerts.popitem(last=False)
            self.evicted += 1
        return True

    def get(self, alert_id: str) -> dict[str, Any] | None:
        entry = self._alerts.get(alert_id)
        return entry[2] if entry else None

    def newest_first(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The alerts held, newest version first (equal times: latest arrived first)."""
        ordered = sorted(self._alerts.values(), key=lambda e: (e[0], e[1]), reverse=True)
        return [doc for _, _, doc in ordered[:limit]]
