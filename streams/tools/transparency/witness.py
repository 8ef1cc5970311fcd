"""`fusion witness CC --key FILE --keys TRUSTED --state FILE`: a country's witness of the
transparency logs. Each round it reads the new checkpoints and every published leaf hash,
and cosigns (c2sp.org/tlog-cosignature) each checkpoint that is signed by a log key, is the
tree hash of the published leaves, and is consistent with the last checkpoint it cosigned of
that log; the cosigned note goes to `audit.log.cosignatures`. The last checkpoint cosigned of
each log is kept in a local file (`--state`), never on the broker. A bad signature, a fork,
a rollback or leaves changed under a cosigned checkpoint is refused, logged, and counted in
`fusion_witness_refusals_total`.

`fusion witness keygen CC --out FILE` writes the witness's key (its public key to FILE.pub).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from engine.auditlog import (
    LogError,
    LogLeaves,
    Read,
    Witnessed,
    assemble,
    witness_check,
)
from engine.notes import COSIGNATURE_V1, NoteError, Signer, Verifier, cosign
from streams.clients import kafka_python_config
from streams.settings import Settings
from streams.tools.transparency.keys import keygen, read_signer, read_trusted, witness_name
from streams.tools.transparency.read import read_topic

log = logging.getLogger("fusion.witness")


class WitnessMetrics:
    """The witness's metrics (its own registry, served on `--metrics-port`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.refusals = Counter(
            "fusion_witness_refusals_total",
            "Checkpoints (or published leaves) a witness refused: signature, fork, rollback, "
            "gap, invalid.",
            ["country", "log", "reason"],
            registry=self.registry,
        )
        self.cosigned = Gauge(
            "fusion_witness_cosigned_leaves",
            "Size of the last checkpoint a witness cosigned, per log.",
            ["country", "log"],
            registry=self.registry,
        )


@dataclass
class WitnessState:
    """What the witness keeps locally: the last checkpoint cosigned of each log, and where
    it is in the checkpoint topic."""

    next_offset: int = 0
    logs: dict[str, Witnessed] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> WitnessState:
        if not path.exists():
            return cls()
        doc = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            int(doc["next_offset"]),
            {o: Witnessed.from_doc(v) for o, v in doc["logs"].items()},
        )

    def save(self, path: Path) -> None:
        doc = {
            "next_offset": self.next_offset,
            "logs": {o: w.to_doc() for o, w in sorted(self.logs.items())},
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
        os.replace(tmp, path)


class Witness:
    """One country's witness: one round reads, checks, cosigns and saves."""

    def __init__(
        self,
        settings: Settings,
        country: str,
        signer: Signer,
        log_keys: Sequence[Verifier],
        state_path: Path,
        metrics: WitnessMetrics,
    ) -> None:
        self.settings = settings
        self.country = country
        self.signer = signer
        self.log_keys = list(log_keys)
        self.state_path = state_path
        self.state = WitnessState.load(state_path)
        self.metrics = metrics
        self._refused: set[str] = set()
        self._producer: KafkaProducer | None = None
        for origin, seen in self.state.logs.items():
            metrics.cosigned.labels(country, origin).set(seen.size)

    def refuse(self, error: LogError, origin: str) -> None:
        """Log and count a refusal, once per distinct problem."""
        text = str(error)
        if text in self._refused:
            return
        self._refused.add(text)
        log.error("witness %s refuses: %s", self.country, text)
        self.metrics.refusals.labels(self.country, origin, error.kind).inc()

    def round(self) -> int:
        """Read, check and cosign what is new; the number of checkpoints cosigned."""
        settings = self.settings
        checkpoints = read_topic(settings, settings.topic_log_checkpoints)
        # leaves are read after the checkpoints: a checkpoint's leaves are published first
        leaves = read_topic(settings, settings.topic_log_leaves)
        end = checkpoints[-1].where.offset + 1 if checkpoints else 0
        if end < self.state.next_offset:
            log.error(
                "witness %s: the checkpoint topic ends at %d, before offset %d already read: "
                "it was recreated; reading it again from the start",
                self.country,
                end,
                self.state.next_offset,
            )
            self.state.next_offset = 0
        logs = self._logs(leaves)
        if logs is None:
            return 0
        if not self._cosigned_still_hold(logs):
            return 0
        cosigned = 0
        for read in checkpoints:
            if read.where.offset < self.state.next_offset:
                continue
            self.state.next_offset = read.where.offset + 1
            cosigned += self._consider(read, logs)
        producer = self._client()
        producer.flush(timeout=30)
        self.state.save(self.state_path)
        return cosigned

    def _logs(self, leaves: list[Read]) -> dict[str, LogLeaves] | None:
        try:
            return assemble((r.where, orjson.loads(r.value)) for r in leaves)
        except LogError as e:
            self.refuse(e, e.leaves[0] if e.leaves else "")
            return None
        except orjson.JSONDecodeError as e:
            self.refuse(LogError(settings_topic(self.settings), f"unreadable leaf: {e}"), "")
            return None

    def _cosigned_still_hold(self, logs: dict[str, LogLeaves]) -> bool:
        """Whether the published leaves still give every checkpoint cosigned (leaves deleted,
        swapped or rewritten under it are refused)."""
        ok = True
        for origin, seen in self.state.logs.items():
            leaves = logs.get(origin)
            have = 0 if leaves is None else len(leaves.hashes)
            if have < seen.size:
                self.refuse(
                    LogError(
                        f"log {origin}",
                        f"the leaves topic holds {have} leaves, {seen.size} were cosigned",
                        "gap",
                    ),
                    origin,
                )
                ok = False
            elif leaves is not None and leaves.root(seen.size) != seen.root:
                self.refuse(
                    LogError(
                        f"log {origin}",
                        f"the first {seen.size} leaves on the broker are not those cosigned",
                        "fork",
                    ),
                    origin,
                )
                ok = False
        return ok

    def _consider(self, read: Read, logs: dict[str, LogLeaves]) -> int:
        try:
            found = witness_check(read, logs, self.log_keys, self.state.logs)
        except LogError as e:
            origin = read.value.decode(errors="replace").split("\n", 1)[0]
            self.refuse(e, origin)
            return 0
        if found is None:
            return 0
        note, checkpoint = found
        signature = cosign(note, self.signer, int(time.time()))
        self._client().send(
            self.settings.topic_log_cosignatures,
            key=checkpoint.origin.encode(),
            value=note.with_signature(signature).render().encode(),
        )
        self.state.logs[checkpoint.origin] = Witnessed(checkpoint.size, checkpoint.root)
        self.metrics.cosigned.labels(self.country, checkpoint.origin).set(checkpoint.size)
        log.info("witness %s cosigned %s size %d", self.country, checkpoint.origin, checkpoint.size)
        return 1

    def _client(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(
                acks="all",
                client_id=f"witness-{self.country.lower()}",
                **kafka_python_config(self.settings),
            )
        return self._producer

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None


def settings_topic(settings: Settings) -> str:
    return f"topic {settings.topic_log_leaves}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["keygen"]:
        kg = argparse.ArgumentParser(prog="fusion witness keygen")
        kg.add_argument("country")
        kg.add_argument("--out", type=Path, required=True, help="the private key file to write")
        a = kg.parse_args(args[1:])
        try:
            key = keygen(witness_name(a.country), a.out, witness=True)
        except FileExistsError:
            print(f"fusion witness keygen: {a.out} exists; not overwritten", file=sys.stderr)
            return 2
        print(key.text())
        return 0
    ap = argparse.ArgumentParser(
        prog="fusion witness", description=(__doc__ or "").split("\n\n")[0]
    )
    ap.add_argument("country", help="the country whose witness this is, e.g. mx")
    ap.add_argument("--key", type=Path, required=True, help="the witness's private key file")
    ap.add_argument("--keys", type=Path, required=True, help="trusted public keys (the log's)")
    ap.add_argument("--state", type=Path, required=True, help="local file: last cosigned")
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between rounds")
    ap.add_argument("--metrics-port", type=int, default=0, help="serve metrics here (0: off)")
    ap.add_argument("--once", action="store_true", help="one round, then exit")
    a = ap.parse_args(args)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    country = a.country.upper()
    try:
        signer = read_signer(a.key)
        log_keys, _ = read_trusted(a.keys)
    except NoteError as e:
        print(f"fusion witness: {e}", file=sys.stderr)
        return 2
    if signer.kind != COSIGNATURE_V1:
        print(f"fusion witness: {a.key} is not a witness key", file=sys.stderr)
        return 2
    metrics = WitnessMetrics()
    if a.metrics_port:
        start_http_server(a.metrics_port, addr="127.0.0.1", registry=metrics.registry)
    witness = Witness(Settings(), country, signer, log_keys, a.state, metrics)
    try:
        while True:
            try:
                witness.round()
            except Exception:
                log.exception("witness %s: round failed; trying again", country)
            if a.once:
                return 0
            time.sleep(a.interval)
    finally:
        witness.close()


if __name__ == "__main__":
    sys.exit(main())
