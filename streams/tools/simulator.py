"""Realistic border events, with a scenario for every default-pack rule mixed into background
noise: live (event time follows the clock) or as a backlog (a stretch of the past, at once);
and publishing them (`python -m streams.tools.simulator`, as `fusion simulate`, with tips)."""

from __future__ import annotations

import argparse
import random
import string
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from engine.border import default_border
from schemas.events import EventType
from streams.settings import Settings

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
TIP_LINES = {"US": ("CBP-TIPS", "hotline"), "MX": ("FGR-DENUNCIA", "app")}
TIP_OFFICERS = {"US": "USBP", "MX": "GN"}
TIP_TEXTS = {
    "US": (
        "Caller says rifles are being loaded into a pickup behind the tire shop by the levee "
        "road, to go south tonight.",
        "Anonymous caller reports a garage full of boxed handguns and ammunition near the "
        "river crossing.",
        "Neighbour reports men moving long guns from a trailer into a van at night.",
    ),
    "MX": (
        "Denunciante anónimo reporta armas largas ocultas en una bodega cerca de la garita.",
        "Vecinos reportan que descargan cajas con armas de una camioneta en la colonia.",
        "Reportan un domicilio donde guardan fusiles y cargadores traídos del norte.",
    ),
}
FIREARMS = (("Colt", "AR-15", "5.56"), ("Glock", "19", "9mm"), ("Ruger", "Mini-14", ".223"))

Event = tuple[EventType, dict[str, Any]]
"""(event type, event as it goes on the wire)."""
Scenario = Callable[[float], list[Event]]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")


def _other(country: str) -> str:
    return "MX" if country == "US" else "US"


@dataclass
class Simulator:
    """Generates (event type, event) pairs. `scenario_share` of the draws is a rule scenario
    (dealt from a shuffled round of all of them, so every rule's comes up within one round),
    the rest background noise. `tips`: make tip events too (for a pipeline with a tips topic;
    the weapons-tip scenario is left out without them)."""

    seed: int = 7
    scenario_share: float = 0.02
    run_id: str = ""
    tips: bool = False

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.n = 0
        self.run_id = self.run_id or "".join(self.rng.choices(string.ascii_lowercase, k=6))
        self.border = default_border().line
        self._deck: list[Scenario] = []

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

    def _scenario_plate(self) -> str:
        r = self.rng
        return f"Z{r.randint(100, 999)}-{r.choice('KLMN')}{r.randint(10, 99)}"

    def _border_point(self, spread_km: float = 30.0) -> tuple[float, float]:
        r = self.rng
        i = r.randrange(len(self.border) - 1)
        (a, b), (c, d) = self.border[i], self.border[i + 1]
        t = r.random()
        lat = a + t * (c - a) + r.uniform(-spread_km, spread_km) / 111.0
        lon = b + t * (d - b) + r.uniform(-spread_km, spread_km) / 95.0
        return round(lat, 5), round(lon, 5)

    def _near(self, lat: float, lon: float, km: float) -> tuple[float, float]:
        """A point at most about `km` from (lat, lon)."""
        r = self.rng
        d = km / 1.5
        return round(lat + r.uniform(-d, d) / 111.0, 5), round(lon + r.uniform(-d, d) / 95.0, 5)

    def _source(self, country: str | None = None) -> dict[str, str]:
        c = country or self.rng.choice(("US", "MX"))
        return {"agency": self.rng.choice(US_AGENCIES if c == "US" else MX_AGENCIES), "country": c}

    def _common(
        self, etype: EventType, ts: float, lat: float, lon: float, country: str | None = None
    ) -> dict[str, Any]:
        return {
            "event_id": self._id(etype[:3]),
            "event_type": etype,
            "occurred_at": _iso(ts),
            "source": self._source(country),
            "location": {"lat": lat, "lon": lon, "accuracy_m": round(self.rng.uniform(3, 50), 1)},
        }

    def _read(
        self, ts: float, lat: float, lon: float, country: str, plate: str, sensor: str
    ) -> dict[str, Any]:
        """A detection of a vehicle's plate by one sensor."""
        r = self.rng
        ev = self._common("detection", ts, lat, lon, country=country)
        prefix = {"inspection": "POE", "lpr": "LPR", "camera": "CAM", "radar": "RAD"}[sensor]
        ev.update(
            sensor_id=f"{prefix}-{r.randint(1, 400)}",
            sensor_kind=sensor,
            subject_kind="vehicle",
            plate=plate if r.random() < 0.5 else plate.lower().replace("-", " "),
            confidence=round(r.uniform(0.85, 0.99), 2),
        )
        return ev

    def _weapon(
        self, kind: str, ts: float, lat: float, lon: float, country: str, serial: str | None
    ) -> dict[str, Any]:
        r = self.rng
        ev = self._common("weapon", ts, lat, lon, country=country)
        make, model, caliber = r.choice(FIREARMS)
        ev.update(weapon_event=kind, make=make, model=model, caliber=caliber)
        ev["quantity"] = 1 if serial else r.randint(2, 30)
        if serial:
            ev["serial"] = serial
        return ev

    def background(self, now: float) -> Event:
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

    # Scenarios: each makes one rule of the default pack fire, with evidence from both
    # countries where that is how it happens, and always within the border zone (so the
    # default sharing policy sends the alert to both). Event times stay within a few minutes
    # of `now` for sensor events (the absence rule takes them up to 10 minutes late); records
    # entered after the fact (watchlist entries, weapon traces, tips) are older.

    def watchlist_scenario(self, now: float) -> list[Event]:
        """watchlist-plate: a suspect with a plate, listed by one country; the plate then read
        at a port of entry by the other, and inspected there."""
        r = self.rng
        name, lat, lon = r.choice(CROSSINGS)
        plate = self._scenario_plate()
        lister = r.choice(("US", "MX"))
        seer = _other(lister)
        s = self._common(
            "suspect", now - r.uniform(3600, 5 * 86400), lat - 0.2, lon, country=lister
        )
        s.update(
            person_ref=f"P-{r.randint(10**6, 10**7)}",
            watchlist="trafficking",
            risk=r.choice(("medium", "high")),
            plate=plate,
        )
        d = self._common("detection", now - r.uniform(90, 180), lat, lon, country=seer)
        d.update(
            sensor_id=f"LPR-{name[:3].upper()}-{r.randint(1, 9)}",
            sensor_kind="lpr",
            subject_kind="vehicle",
            plate=plate.lower().replace("-", " "),
            confidence=0.97,
        )
        inspected = self._read(now - r.uniform(0, 60), lat, lon, seer, plate, "inspection")
        return [("suspect", s), ("detection", d), ("detection", inspected)]

    def crossing_scenario(self, now: float) -> list[Event]:
        """coordinated-crossing: six people or vehicles detected within a kilometre and a few
        minutes, first by the other side's sensors, then by those of the side they reach."""
        r = self.rng
        lat, lon = self._border_point(spread_km=2.0)
        country = default_border().country_at(lat, lon)
        out: list[Event] = []
        for i in range(6):
            ev = self._common(
                "detection",
                now - (5 - i) * r.uniform(20, 40),
                round(lat + r.uniform(-0.004, 0.004), 5),
                round(lon + r.uniform(-0.004, 0.004), 5),
                country=country if i >= 2 else _other(country),
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

    def weapon_vehicle_scenario(self, now: float) -> list[Event]:
        """weapon-vehicle-link: a weapon trace, theft or sighting naming a plate, entered by
        one country; the plate read hours later at a port of entry by the other."""
        r = self.rng
        first = r.choice(("US", "MX"))
        second = _other(first)
        _, lat, lon = r.choice(CROSSINGS)
        plate = self._scenario_plate()
        wlat, wlon = self._near(lat, lon, 15.0)
        w = self._weapon(
            r.choice(("trace", "theft", "sighting")),
            now - r.uniform(2 * 3600, 20 * 3600),
            wlat,
            wlon,
            first,
            f"{r.choice('KLMNP')}{r.randint(10**5, 10**6)}",
        )
        w["plate"] = plate
        seen = self._read(now - r.uniform(90, 180), lat, lon, second, plate, "lpr")
        inspected = self._read(now - r.uniform(0, 60), lat, lon, second, plate, "inspection")
        return [("weapon", w), ("detection", seen), ("detection", inspected)]

    def seizure_scenario(self, now: float) -> list[Event]:
        """suspect-near-seizure: a weapon seizure by one country, and a suspect reported a
        couple of kilometres away within the hour by the other."""
        r = self.rng
        seizer = r.choice(("US", "MX"))
        lat, lon = self._border_point(spread_km=8.0)
        w = self._weapon("seizure", now - r.uniform(600, 2400), lat, lon, seizer, None)
        slat, slon = self._near(lat, lon, 2.0)
        s = self._common("suspect", now - r.uniform(0, 300), slat, slon, country=_other(seizer))
        s.update(
            person_ref=f"P-{r.randint(10**6, 10**7)}",
            watchlist="weapons",
            risk=r.choice(("medium", "high")),
            confidence=round(r.uniform(0.7, 1.0), 2),
        )
        return [("weapon", w), ("suspect", s)]

    def uninspected_crossing_scenario(self, now: float) -> list[Event]:
        """crossing-without-inspection: a vehicle read by a camera, LPR or radar a few hundred
        metres from the line and never inspected (fires once event time is 40 minutes on),
        next to one that is inspected minutes later (does not)."""
        r = self.rng
        lat, lon = self._border_point(spread_km=0.3)
        country = default_border().country_at(lat, lon)
        sensor = r.choice(("lpr", "camera", "radar"))
        blat, blon = self._near(lat, lon, 0.2)
        inspected, never = self._scenario_plate(), self._scenario_plate()
        passing = self._read(now - r.uniform(240, 400), blat, blon, country, inspected, sensor)
        crossing = self._read(now - r.uniform(30, 120), lat, lon, country, never, sensor)
        check = self._read(now - r.uniform(0, 20), blat, blon, country, inspected, "inspection")
        return [("detection", passing), ("detection", crossing), ("detection", check)]

    def serial_scenario(self, now: float) -> list[Event]:
        """repeat-trafficking-serial: a theft or trace weeks ago, far from the border, recorded
        by one country, and a weapon of that serial seized at the border by the other."""
        r = self.rng
        seizer = r.choice(("US", "MX"))
        owner = _other(seizer)
        lat, lon = self._border_point(spread_km=10.0)
        serial = f"{r.choice(('LW', 'RB', 'FX'))}{r.randint(10**5, 10**6)}"
        seized = self._weapon("seizure", now - r.uniform(0, 600), lat, lon, seizer, serial)
        inland = r.uniform(40, 150) / 111.0 * (1 if owner == "US" else -1)
        theft = self._weapon(
            r.choice(("theft", "trace")),
            now - r.uniform(5, 25) * 86400,
            round(lat + inland, 5),
            lon,
            owner,
            serial.lower(),
        )
        theft["source"]["agency"] = "ATF" if owner == "US" else "FGR"
        return [("weapon", theft), ("weapon", seized)]

    def tip_scenario(self, now: float) -> list[Event]:
        """weapons-tip-near-seizure: a weapons tip to one country's tip line, placed to within
        a few hundred metres, and hours later a weapon seizure a kilometre or two from the
        reported place by the other country."""
        r = self.rng
        taker = r.choice(("US", "MX"))
        lat, lon = self._border_point(spread_km=10.0)
        tip = self._common("tip", now - r.uniform(1200, 3 * 3600), lat, lon, country=taker)
        agency, channel = TIP_LINES[taker]
        if r.random() < 0.2:
            agency, channel = TIP_OFFICERS[taker], "officer"
        tip["source"]["agency"] = agency
        tip.update(
            uncertainty_m=float(r.choice((200, 500, 1000, 2000))),
            category="weapons",
            text=r.choice(TIP_TEXTS[taker]),
            channel=channel,
            reliability=r.choice("BCD"),
            credibility=r.choice((2, 3, 4)),
        )
        wlat, wlon = self._near(lat, lon, 1.5)
        seized = self._weapon("seizure", now - r.uniform(0, 900), wlat, wlon, _other(taker), None)
        return [("tip", tip), ("weapon", seized)]

    def _inside(self, host: str, depth_km: float = 1.0) -> tuple[float, float]:
        """A point about `depth_km` inside `host`'s territory, near the border."""
        border = default_border()
        step = depth_km * 1.4
        for _ in range(200):
            lat, lon = self._border_point(spread_km=0.0)
            for dlat, dlon in ((-step, 0), (step, 0), (0, -step), (0, step)):
                p = (round(lat + dlat / 111.0, 5), round(lon + dlon / 95.0, 5))
                if border.country_at(*p) == host and 0.6 * depth_km < border.distance_km(*p):
                    return p
        raise RuntimeError(f"no point {depth_km} km inside {host} found")

    def patrol_scenario(self, now: float) -> list[Event]:
        """unauthorized-incursion: two patrol units of one country about 1 km inside the other
        for 6 minutes; the host has authorized one of them (a joint patrol with a permit, no
        alert), not the other (a critical alert to both countries)."""
        r = self.rng
        guest = r.choice(("US", "MX"))
        host = _other(guest)
        lat, lon = self._inside(host)
        prefix = "USBP" if guest == "US" else "GN"
        joint, lone = (f"{prefix}-{r.randint(100, 999)}{c}" for c in "JL")
        permit = self._common("authorization", now - 3600, lat, lon, country=host)
        permit.update(
            action="grant",
            reference=f"OP-{host}-{r.randint(1000, 9999)}",
            guest_country=guest,
            units=[joint],
            area={"radius_m": 5000.0},
            valid_from=_iso(now - 2 * 3600),
            valid_until=_iso(now + 6 * 3600),
        )
        out: list[Event] = [("authorization", permit)]
        for unit in (joint, lone):
            for back in (360.0, 180.0, 0.0):
                plat, plon = self._near(lat, lon, 0.05)
                ev = self._common("track", now - back, plat, plon, country=guest)
                ev.update(track_id=f"TRK-{unit}", subject_kind="vehicle", patrol_unit=unit)
                out.append(("track", ev))
        return out

    def scenarios(self) -> list[Scenario]:
        """One of each scenario, in a fixed order (the tip one only if `tips`)."""
        out: list[Scenario] = [
            self.watchlist_scenario,
            self.crossing_scenario,
            self.weapon_vehicle_scenario,
            self.seizure_scenario,
            self.uninspected_crossing_scenario,
            self.serial_scenario,
            self.patrol_scenario,
        ]
        if self.tips:
            out.append(self.tip_scenario)
        return out

    def _deal(self) -> Scenario:
        if not self._deck:
            self._deck = self.scenarios()
            self.rng.shuffle(self._deck)
        return self._deck.pop()

    def step(self, now: float) -> list[Event]:
        """What happens at `now`: a scenario (`scenario_share` of the time) or one noise event."""
        if self.rng.random() < self.scenario_share:
            return self._deal()(now)
        return [self.background(now)]

    def stream(self, now_fn: Callable[[], float] = time.time) -> Iterator[Event]:
        """Endless events, event time from `now_fn`: mostly noise, a scenario now and then."""
        while True:
            yield from self.step(now_fn())

    def backlog(self, start: float, end: float, events: int) -> Iterator[Event]:
        """A stretch of the past, `events` draws with event times spread from `start` to `end`,
        to publish at once before a worker starts (it reads them as a backlog, in order).
        One round of every scenario comes first, in the first tenth of the stretch, so that
        rules deciding an absence (no inspection for 30 minutes, allowed 10 minutes late)
        have decided it by `end` when the stretch is longer than that; scenarios then come at
        `scenario_share`, as live."""
        first = self.scenarios()
        self.rng.shuffle(first)
        lead = 0.1 * (end - start) / len(first)
        due = [start + lead * (k + 1) for k in range(len(first))]
        step = (end - start) / max(events, 1)
        for i in range(events):
            now = start + step * (i + 1)
            while due and due[0] <= now:
                yield from first.pop(0)(due.pop(0))
            yield from self.step(now)


def publish(
    settings: Settings,
    events: Iterable[Event],
    *,
    rate: float = 0.0,
    count: int = 0,
    report: Callable[[str], None] | None = None,
) -> int:
    """Send events to their input topics, `rate` a second (0: flat out), at most `count` (0:
    all of them); `report` hears the rate every 5 s. Returns how many were sent."""
    from kafka import KafkaProducer

    from streams.clients import kafka_python_config

    producer = KafkaProducer(linger_ms=5, acks=1, **kafka_python_config(settings))
    interval = 1.0 / rate if rate > 0 else 0.0
    start = last_report = time.monotonic()
    sent = 0
    try:
        for etype, ev in events:
            topic = settings.input_topic_for(etype, ev["source"]["country"])
            producer.send(topic, orjson.dumps(ev))
            sent += 1
            if count and sent >= count:
                break
            if interval:
                delay = start + sent * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if report and time.monotonic() - last_report >= 5:
                last_report = time.monotonic()
                report(f"{sent} events sent ({sent / (last_report - start):.0f}/s)")
    except KeyboardInterrupt:
        pass
    finally:
        producer.flush()
        producer.close()
    return sent


def main(argv: list[str] | None = None) -> int:
    """Publish simulated events live, of all five types."""
    ap = argparse.ArgumentParser(prog="fusion simulate", description=__doc__)
    ap.add_argument("--rate", type=float, default=50.0, help="events per second (0: flat out)")
    ap.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--scenario-share", type=float, default=0.03)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    settings = Settings()
    sim = Simulator(seed=args.seed, scenario_share=args.scenario_share, tips=True)

    def say(line: str) -> None:
        print(f"simulator: {line}", flush=True)

    sent = publish(
        settings,
        sim.stream(),
        rate=args.rate,
        count=args.count,
        report=None if args.quiet else say,
    )
    say(f"done, {sent} events sent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
