"""Realistic border events of all four types, rule scenarios mixed into background noise."""

from __future__ import annotations

import random
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.border import default_border

US_AGENCIES = ("CBP", "USBP", "ATF", "DEA", "HSI")
MX_AGENCIES = ("SEDENA", "GN", "FGR", "SEMAR", "INM")
CROSSINGS = (  # ports of entry and well-known corridors: (name, lat, lon)
    ("San Ysidro", 32.5422, -117.0297),
    ("Calexico", 32.6784, -115.4989),
    ("Nogales", 31.3320, -110.9406),
    ("El Paso", 31.7630, -106.4510),
    ("Del Rio", 29.3627, -100.8968),
    ("Laredo", 27.5000, -99.5070),
    ("Hidalgo", 26.0960, -98.2710),
    ("Brownsville", 25.9020, -97.4970),
)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")


@dataclass
class Simulator:
    """Generates (event type, event) pairs. Event times are recent: `now` minus a small lag."""

    seed: int = 7
    scenario_share: float = 0.02
    run_id: str = ""

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.n = 0
        self.run_id = self.run_id or "".join(self.rng.choices(string.ascii_lowercase, k=6))
        self.border = default_border().line

    def _id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.run_id}-{self.n}"

    def _plate(self, pool: str = "bg") -> str:
        r = self.rng
        if pool == "bg":
            return (
                f"{r.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}{r.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}"
                f"{r.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}-{r.randint(0, 9999):04d}"
            )
        return f"W{r.randint(0, 99):02d}-{r.choice('ABCDEFGH')}{r.randint(0, 999):03d}"

    def _border_point(self, spread_km: float = 30.0) -> tuple[float, float]:
        r = self.rng
        i = r.randrange(len(self.border) - 1)
        (a, b), (c, d) = self.border[i], self.border[i + 1]
        t = r.random()
        lat = a + t * (c - a) + r.uniform(-spread_km, spread_km) / 111.0
        lon = b + t * (d - b) + r.uniform(-spread_km, spread_km) / 95.0
        return round(lat, 5), round(lon, 5)

    def _source(self, country: str | None = None) -> dict[str, str]:
        c = country or self.rng.choice(("US", "MX"))
        return {"agency": self.rng.choice(US_AGENCIES if c == "US" else MX_AGENCIES), "country": c}

    def _common(
        self, etype: str, ts: float, lat: float, lon: float, country: str | None = None
    ) -> dict[str, Any]:
        return {
            "event_id": self._id(etype[:3]),
            "event_type": etype,
            "occurred_at": _iso(ts),
            "source": self._source(country),
            "location": {"lat": lat, "lon": lon, "accuracy_m": round(self.rng.uniform(3, 50), 1)},
        }

    def background(self, now: float) -> tuple[str, dict[str, Any]]:
        """One noise event of a random type."""
        r = self.rng
        ts = now - r.uniform(0.0, 2.0)
        lat, lon = self._border_point()
        kind = r.random()
        if kind < 0.55:
            ev = self._common("detection", ts, lat, lon)
            sensor = r.choice(
                ("lpr", "camera", "radar", "seismic", "thermal", "inspection", "other")
            )
            ev.update(
                sensor_id=f"S-{r.randint(1, 4000)}",
                sensor_kind=sensor,
                subject_kind=r.choices(
                    ("person", "vehicle", "unknown", "drone", "vessel", "aircraft"),
                    (15, 20, 50, 7, 5, 3),
                )[0],
                count=r.choice((1, 1, 1, 2, 3)),
                confidence=round(r.uniform(0.5, 1.0), 2),
            )
            if sensor in ("lpr", "inspection") or ev["subject_kind"] == "vehicle":
                ev["subject_kind"] = "vehicle"
                ev["plate"] = self._plate()
            return "detection", ev
        if kind < 0.80:
            ev = self._common("track", ts, lat, lon)
            ev.update(
                track_id=f"T-{r.randint(1, 50000)}",
                subject_kind=r.choice(("vehicle", "vessel", "aircraft", "person")),
                speed_mps=round(r.uniform(0, 40), 1),
                heading_deg=round(r.uniform(0, 359), 1),
            )
            if ev["subject_kind"] == "vehicle" and r.random() < 0.5:
                ev["plate"] = self._plate()
            return "track", ev
        if kind < 0.92:
            ev = self._common("suspect", ts - r.uniform(0, 3 * 86400), lat, lon)
            ev.update(
                person_ref=f"P-{r.randint(1, 10**6)}",
                watchlist=r.choice(("smuggling", "trafficking", "weapons", "fugitive")),
                risk=r.choices(("low", "medium", "high"), (80, 15, 5))[0],
                confidence=round(r.uniform(0.6, 1.0), 2),
            )
            if r.random() < 0.3:
                ev["plate"] = self._plate("watch")
            return "suspect", ev
        ev = self._common("weapon", ts - r.uniform(0, 86400), lat, lon)
        ev.update(
            weapon_event=r.choice(("seizure", "trace", "theft", "sighting")),
            serial=f"SN{r.randint(10**6, 10**7)}",
            make=r.choice(("Colt", "Glock", "Ruger")),
            model=r.choice(("AR-15", "19", "Mini-14")),
            caliber=r.choice(("5.56", "9mm", ".223")),
            quantity=r.randint(1, 20),
        )
        return "weapon", ev

    def watchlist_scenario(self, now: float) -> list[tuple[str, dict[str, Any]]]:
        """A suspect with a plate, listed by one country; the plate then seen by the other."""
        r = self.rng
        name, lat, lon = r.choice(CROSSINGS)
        plate = f"Z{r.randint(100, 999)}-{r.choice('KLMN')}{r.randint(10, 99)}"
        lister = r.choice(("US", "MX"))
        seer = "MX" if lister == "US" else "US"
        s = self._common(
            "suspect", now - r.uniform(3600, 5 * 86400), lat - 0.2, lon, country=lister
        )
        s.update(
            person_ref=f"P-{r.randint(10**6, 10**7)}",
            watchlist="trafficking",
            risk=r.choice(("medium", "high")),
            plate=plate,
        )
        d = self._common("detection", now - r.uniform(0, 1), lat, lon, country=seer)
        d.update(
            sensor_id=f"LPR-{name[:3].upper()}-{r.randint(1, 9)}",
            sensor_kind="lpr",
            subject_kind="vehicle",
            plate=plate.lower().replace("-", " "),
            confidence=0.97,
        )
        return [("suspect", s), ("detection", d)]

    def crossing_scenario(self, now: float) -> list[tuple[str, dict[str, Any]]]:
        """Six people or vehicles detected within a kilometre and a few minutes."""
        r = self.rng
        lat, lon = self._border_point(spread_km=2.0)
        country = default_border().country_at(lat, lon)
        out = []
        for i in range(6):
            ev = self._common(
                "detection",
                now - (5 - i) * r.uniform(20, 40),
                round(lat + r.uniform(-0.004, 0.004), 5),
                round(lon + r.uniform(-0.004, 0.004), 5),
                country=country,
            )
            ev.update(
                sensor_id=f"SEIS-{r.randint(1, 500)}",
                sensor_kind=r.choice(("seismic", "thermal", "camera")),
                subject_kind=r.choice(("person", "person", "vehicle")),
                count=r.randint(1, 4),
                confidence=round(r.uniform(0.7, 1.0), 2),
            )
            out.append(("detection", ev))
        return out

    def stream(self, now_fn: Any = time.time) -> Iterator[tuple[str, dict[str, Any]]]:
        """Endless events: mostly noise, a scenario now and then."""
        while True:
            now = now_fn()
            if self.rng.random() < self.scenario_share:
                scen = (
                    self.watchlist_scenario if self.rng.random() < 0.5 else self.crossing_scenario
                )
                yield from scen(now)
            else:
                yield self.background(now)
