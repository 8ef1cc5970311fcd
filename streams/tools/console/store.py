"""The alerts a console holds: the newest ones, bounded, each once."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from schemas.alerts import Alert

DEFAULT_CAPACITY = 5000


class AlertStore:
    """Alerts by id in arrival order; past `capacity` the earliest arrived is forgotten.

    An alert id seen again (a worker restarted or replayed) is kept as first received.
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
        """Keep an alert (`doc` is its JSON as received); False if its id is already held."""
        if alert.alert_id in self._alerts:
            return False
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
        """The alerts held, newest raised first (equal times: latest arrived first)."""
        ordered = sorted(self._alerts.values(), key=lambda e: (e[0], e[1]), reverse=True)
        return [doc for _, _, doc in ordered[:limit]]
