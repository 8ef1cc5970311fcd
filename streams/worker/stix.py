"""The `stix.<cc>` topics: each alert a partner receives, as a STIX 2.1 bundle
(`interop/stix.py` makes them), written when `FUSION_STIX_TOPICS` is on."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from streams.settings import Settings

log = logging.getLogger(__name__)


class StixOutput:
    """The bundle of each alert a partner receives, for its `stix.<cc>` topic."""

    def __init__(self, settings: Settings) -> None:
        from interop.stix import bundle_json  # stix2 takes ~0.1 s to import: only when on

        self.settings = settings
        self.topics = {p: settings.stix_topic(p) for p in settings.partners}
        self.bundle_json = bundle_json

    def bundle(self, destination: str, alert: Mapping[str, Any]) -> bytes:
        """The bundle of one alert as released to `destination`, linking to its console."""
        url = self.settings.alert_url(destination, alert["alert_id"])
        return self.bundle_json([alert], urls=[url])

    def message(self, destination: str, alert: Mapping[str, Any]) -> tuple[str, bytes] | None:
        """(topic, bundle) for one released alert; None, logged, if no bundle could be made
        (the alert itself has gone out: a bundle never holds the pipeline back)."""
        try:
            return self.topics[destination], self.bundle(destination, alert)
        except Exception:
            log.exception("no STIX bundle for alert %s to %s", alert.get("alert_id"), destination)
            return None


def stix_output(settings: Settings) -> StixOutput | None:
    """The STIX output if `FUSION_STIX_TOPICS` is on."""
    return StixOutput(settings) if settings.stix_topics else None
