"""One settings object, read once from the environment (prefix `FUSION_`) with sane defaults."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from interop.cot import cot_types
from schemas.alerts import ALERT_TOPIC_PREFIX, alert_topic
from schemas.events import EVENT_MODELS, EventType
from schemas.triage import TRIAGE_TOPIC_PREFIX, inbound_topic, triage_topic

REPO_ROOT = Path(__file__).resolve().parent.parent
CAUGHT_UP_LAG_S: dict[EventType, float] = {
    "detection": 600.0,
    "track": 600.0,
    "suspect": 2.0,
    "weapon": 2.0,
    "tip": 2.0,
    "authorization": 2.0,
}


def _default_lags() -> dict[str, float]:
    return {event_type: lag for event_type, lag in CAUGHT_UP_LAG_S.items()}


class Settings(BaseSettings):
    """Everything the worker, the CLI and the simulator can be told; printed with secrets masked."""

    model_config = SettingsConfigDict(env_prefix="FUSION_", frozen=True, extra="ignore")

    bootstrap_servers: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers.")
    app_id: str = Field(default="border-fusion", description="Consumer group and app id.")
    partners: Annotated[list[str], NoDecode] = Field(
        default=["US", "MX"], description="Partner countries, ISO alpha-2; comma separated."
    )
    rules_path: Path = Field(default=REPO_ROOT / "rules", description="Rule files (dir or file).")
    rules_reload_s: float = Field(
        default=5.0,
        ge=0,
        description="How often the worker looks for changed rule files (0: never).",
    )
    policy_path: Path = Field(
        default=REPO_ROOT / "rules" / "policy.yaml", description="The sharing policy file."
    )
    pseudonym_keys_file: Path | None = Field(
        default=None,
        description="Pseudonymisation keys file (JSON; streams/keys.py), kept out of the repo.",
    )
    pseudonym_keys: SecretStr | None = Field(
        default=None, description="The pseudonymisation keys' JSON text, instead of a file."
    )
    policy_reload_s: float = Field(
        default=5.0,
        ge=0,
        description="How often the worker looks for a changed policy or keys file (0: never).",
    )
    areas_path: Path = Field(
        default=REPO_ROOT / "engine" / "data" / "areas.geojson",
        description="The areas of responsibility (GeoJSON; docs/jurisdiction.md).",
    )
    areas_reload_s: float = Field(
        default=5.0,
        ge=0,
        description="How often the worker looks for a changed areas file (0: never).",
    )

    topic_detections: str = "events.detections"
    topic_suspects: str = "events.suspects"
    topic_weapons: str = "events.weapons"
    topic_tracking: str = "events.tracking"
    topic_tips: str = "events.tips"
    topic_authorizations: str = Field(
        default="events.authorizations",
        description="Base of the per-country authorization topics `<base>.<cc>`: each written "
        "only by that country (its authorizations).",
    )
    topic_deadletter: str = "events.deadletter"
    topic_audit: str = "audit.sharing"
    alert_topic_prefix: str = ALERT_TOPIC_PREFIX
    stix_topics: bool = Field(
        default=False,
        description="Also write each alert a partner receives, as a STIX 2.1 bundle, to its "
        "`stix.<cc>` topic (about 1.5 ms of CPU per alert and partner).",
    )
    stix_topic_prefix: str = "stix."
    triage_topic_prefix: str = Field(
        default=TRIAGE_TOPIC_PREFIX,
        description="Each partner's own triage actions go to `<prefix><cc>`, what its partners "
        "share with it to `<prefix><cc>.inbound`.",
    )
    topic_triage_audit: str = Field(
        default="audit.triage",
        description="One record per triage action released to a partner.",
    )
    topic_log_leaves: str = "audit.log.leaves"
    topic_log_checkpoints: str = "audit.log.checkpoints"
    topic_log_cosignatures: str = "audit.log.cosignatures"
    topic_archive: str = "audit.archive"
    log_signing_key_file: Path | None = Field(
        default=None,
        description="The transparency log's Ed25519 signing key (a note signer key, written by "
        "`fusion log keygen`), kept out of the repository. Unset: no transparency log.",
    )
    log_origin: str = Field(
        default="border-fusion/audit",
        description="Origin of the transparency logs; the log of correlate partition p is "
        "`<origin>/<p>`.",
    )
    log_checkpoint_s: float = Field(
        default=5.0, gt=0, description="Sign a checkpoint of a log at least this often."
    )
    log_checkpoint_records: int = Field(
        default=1000, ge=1, description="... or once this many leaves are published unsigned."
    )
    log_topics_check_s: float = Field(
        default=60.0, gt=0, description="How often the worker checks the log topics' retention."
    )
    topic_routed: str = "fusion.routed"
    topic_changelog: str = Field(
        default="fusion.correlate.changelog",
        description="The correlate stage's state: a per-key changelog per partition, compacted.",
    )
    topic_state_legacy: str = Field(
        default="fusion.state.engine",
        description="Read once per partition whose changelog is empty, if it exists: the "
        "whole-state snapshots of the releases before the changelog (an upgrade keeps them).",
    )

    input_partitions: int = Field(default=4, ge=1, le=1024)
    internal_partitions: int = Field(default=4, ge=1, le=1024)
    input_retention_hours: int = Field(default=14 * 24, ge=1, description="Input topic retention.")

    max_message_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest event accepted."
    )
    dedup_window_s: float = Field(
        default=600.0,
        gt=0,
        description="Event time behind the watermark within which a repeated event_id is "
        "counted as a duplicate (older repeats are recognised by the rules' own state).",
    )
    dedup_max_ids: int = Field(
        default=200_000, ge=1000, description="Event ids remembered per partition for that."
    )
    out_of_orderness_s: float = Field(
        default=0.0,
        ge=0,
        description="How far out of event-time order events may arrive within one input "
        "partition and still be correlated in order (alerts wait this long for them).",
    )
    idle_after_s: float = Field(
        default=1.0,
        gt=0,
        description="An input partition caught up and with nothing new for this long stops "
        "holding the watermark back, until its next event.",
    )
    caught_up_lag_s: dict[str, float] = Field(
        default_factory=_default_lags,
        description="Per event type's topic: how far behind the wall clock an input partition "
        "with nothing left to read on the broker may hold the watermark (a partition with a "
        "backlog holds it back as far as its records go). Long for sensor feeds, so that a "
        "slow one is waited for and correlated in order; short for feeds of records about the "
        "past (watchlist entries, weapon traces, tips), whose records are then taken out of "
        "order within each rule's allowed lateness. JSON; types not named keep their default.",
    )

    @field_validator("caught_up_lag_s")
    @classmethod
    def _lags(cls, v: dict[str, float]) -> dict[str, float]:
        known = set(EVENT_MODELS)
        unknown = sorted(set(v) - known)
        if unknown or any(x <= 0 for x in v.values()):
            raise ValueError(
                f"caught_up_lag_s takes positive seconds per event type ({sorted(known)}); got {v}"
            )
        return {**_default_lags(), **v}

    idle_clock_lag_s: float | None = Field(
        default=None,
        ge=0,
        description="When every input partition is idle, event time follows the wall clock "
        "this far behind, so absence rules still decide (unset: event time waits for data).",
    )
    snapshot_interval_s: float = Field(
        default=2.0, gt=0, description="Shortest time between two snapshots of a partition."
    )
    snapshot_max_interval_s: float = Field(
        default=60.0, gt=0, description="Longest time between two snapshots of a busy partition."
    )
    snapshot_cpu_share: float = Field(
        default=0.1, gt=0, le=1, description="At most this share of time goes to snapshots."
    )
    fetch_min_bytes: int = Field(
        default=32 * 1024,
        ge=1,
        description="A fetch waits for this much data (or fetch_max_wait_ms): fewer, fuller "
        "fetches at low rates.",
    )
    fetch_max_wait_ms: int = Field(
        default=10, ge=0, le=1500, description="The longest a fetch waits for fetch_min_bytes."
    )
    batch_max: int = Field(
        default=5000, ge=1, description="Most messages handed to the stages per fetch."
    )

    session_timeout_s: float = Field(
        default=10.0,
        ge=6,
        le=300,
        description="How soon the group hands a dead worker's partitions to the others.",
    )

    console_host: str = Field(
        default="127.0.0.1", description="Address the per-country consoles listen on."
    )
    console_port: int = Field(
        default=8800,
        ge=1,
        le=65535,
        description="The first partner's console port; each next partner's is one higher.",
    )
    console_public_url: str | None = Field(
        default=None,
        description="How others (TAK clients, reports) reach the consoles, with `{cc}` for the "
        "country in lower case, e.g. https://ops-{cc}.example.org/ (unset: http://host:port/).",
    )

    users_file: Path | None = Field(
        default=None,
        description="The consoles' users (JSON, argon2id hashes; `fusion users`), kept out of the "
        "repository. Unset: the console has no login and shows alerts read-only.",
    )
    task_forces_file: Path | None = Field(
        default=None,
        description="The binational task forces (YAML: name, members of both countries, the "
        "rules each covers). Unset: none.",
    )
    console_session_key: SecretStr | None = Field(
        default=None,
        description="Key that signs console session cookies and CSRF tokens (>= 32 chars); "
        "unset: a random key per console process, so sessions end when it stops.",
    )

    @field_validator("console_session_key")
    @classmethod
    def _session_key(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 32:
            raise ValueError("console_session_key must be at least 32 characters")
        return v

    tak_servers: dict[str, str] = Field(
        default_factory=dict,
        description="Per partner, the TAK server its alerts go to as Cursor on Target events: "
        'JSON like {"MX": "tcp://127.0.0.1:8087", "US": "tls://tak.example.org:8089"}.',
    )
    tak_ca_file: Path | None = Field(
        default=None, description="CA that TAK servers' TLS certificates are checked against."
    )
    tak_cert_file: Path | None = Field(
        default=None, description="Client certificate (PEM or .p12) for TLS TAK servers."
    )
    tak_key_file: Path | None = Field(default=None, description="The client certificate's key.")
    tak_cert_password: SecretStr | None = Field(
        default=None, description="Password of the client key or .p12 file, if any."
    )
    tak_buffer: int = Field(
        default=1000,
        ge=1,
        description="CoT events held per TAK server while it is slow or down; beyond that the "
        "oldest is dropped and counted.",
    )
    tak_reconnect_max_s: float = Field(
        default=30.0, gt=0, description="Longest wait between two tries to reach a TAK server."
    )
    cot_stale_s: float = Field(
        default=3600.0, gt=0, description="A CoT event goes stale this long after its alert."
    )
    cot_types: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description='CoT type per rule id (or "*") and severity, over the defaults in '
        'interop/cot.py: JSON like {"*": {"critical": "a-h-G"}}.',
    )

    @field_validator("tak_servers")
    @classmethod
    def _tak_urls(cls, v: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for country, url in v.items():
            parsed = urlsplit(url)
            try:
                port = parsed.port
            except ValueError:
                port = None
            if parsed.scheme not in ("tcp", "tls", "ssl") or not parsed.hostname or not port:
                raise ValueError(
                    f"tak_servers[{country!r}]: {url!r} is not tcp://host:port or tls://host:port"
                )
            out[country.upper()] = url
        return out

    @field_validator("cot_types")
    @classmethod
    def _cot_types(cls, v: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        return cot_types(v)

    web_port: int = Field(default=6066, ge=0, le=65535, description="Health endpoints port.")
    metrics_port: int = Field(default=9108, ge=0, le=65535, description="Prometheus /metrics port.")
    relay_metrics_port: int = Field(
        default=9109, ge=0, le=65535, description="The triage relay's /metrics port (0: none)."
    )
    log_level: str = "info"
    data_dir: Path = Field(
        default=Path(tempfile.gettempdir()) / "border-fusion",
        description="Faust's working folder (no tables live there: state is in Kafka).",
    )

    security_protocol: str = Field(default="PLAINTEXT", pattern="^(PLAINTEXT|SASL_SSL)$")
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None

    @field_validator(
        "pseudonym_keys_file",
        "pseudonym_keys",
        "idle_clock_lag_s",
        "tak_ca_file",
        "tak_cert_file",
        "tak_key_file",
        "tak_cert_password",
        "users_file",
        "task_forces_file",
        "console_session_key",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("partners", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            return [p.strip().upper() for p in v.split(",") if p.strip()]
        return v

    @field_validator("partners")
    @classmethod
    def _iso2(cls, v: list[str]) -> list[str]:
        for p in v:
            if len(p) != 2 or not p.isalpha() or not p.isupper():
                raise ValueError(f"partner {p!r} is not an ISO 3166-1 alpha-2 code like US or MX")
        if len(set(v)) != len(v) or not v:
            raise ValueError(f"partners must be a non-empty list without repeats, got {v}")
        return v

    @model_validator(mode="after")
    def _secure_needs_credentials(self) -> Settings:
        if self.security_protocol == "SASL_SSL" and not (
            self.sasl_username and self.sasl_password and self.ssl_cafile
        ):
            raise ValueError(
                "security_protocol=SASL_SSL needs FUSION_SASL_USERNAME, FUSION_SASL_PASSWORD "
                "and FUSION_SSL_CAFILE"
            )
        return self

    @model_validator(mode="after")
    def _tak_partners(self) -> Settings:
        unknown = sorted(set(self.tak_servers) - set(self.partners))
        if unknown:
            raise ValueError(f"tak_servers names {unknown}, not partners {self.partners}")
        tls = [c for c, url in self.tak_servers.items() if not url.startswith("tcp:")]
        if tls and not (self.tak_cert_file and self.tak_ca_file):
            raise ValueError(
                f"TAK servers over TLS ({', '.join(tls)}) need FUSION_TAK_CERT_FILE (a client "
                "certificate) and FUSION_TAK_CA_FILE (the CA that signed the servers' "
                "certificates: without it no server can be verified)"
            )
        return self

    @property
    def input_topics(self) -> dict[EventType, str]:
        """Event type -> input topic (every type of `schemas.events.EVENT_MODELS`)."""
        return {
            "detection": self.topic_detections,
            "suspect": self.topic_suspects,
            "weapon": self.topic_weapons,
            "track": self.topic_tracking,
            "tip": self.topic_tips,
            "authorization": f"{self.topic_authorizations}.<cc>",
        }

    def authorization_topic(self, country: str) -> str:
        """The topic of a partner's own authorizations: `events.authorizations.<cc>`."""
        return f"{self.topic_authorizations}.{country.lower()}"

    @property
    def input_topic_names(self) -> list[str]:
        """Every input topic the worker reads: one per event type, and one per partner for
        authorizations."""
        return list(self.topic_event_types)

    @property
    def topic_event_types(self) -> dict[str, tuple[EventType, str | None]]:
        """Input topic -> (its event type, the partner whose topic it is, for authorizations)."""
        out: dict[str, tuple[EventType, str | None]] = {}
        for etype, topic in self.input_topics.items():
            if etype == "authorization":
                for cc in self.partners:
                    out[self.authorization_topic(cc)] = (etype, cc)
            else:
                out[topic] = (etype, None)
        return out

    def input_topic_for(self, event_type: EventType, country: str) -> str:
        """Where a partner publishes an event of this type."""
        if event_type == "authorization":
            return self.authorization_topic(country)
        return self.input_topics[event_type]

    def alert_topic(self, country: str) -> str:
        """The alert topic of a partner: `alerts.<iso2 lower>`."""
        return alert_topic(country, self.alert_topic_prefix)

    def stix_topic(self, country: str) -> str:
        """The STIX topic of a partner: `stix.<iso2 lower>` (written when `stix_topics`)."""
        return f"{self.stix_topic_prefix}{country.lower()}"

    def triage_topic(self, country: str) -> str:
        """A partner's own triage actions: `triage.<iso2 lower>`."""
        return triage_topic(country, self.triage_topic_prefix)

    def inbound_topic(self, country: str) -> str:
        """What partners' triage reaches a partner: `triage.<iso2 lower>.inbound`."""
        return inbound_topic(country, self.triage_topic_prefix)

    def console_port_of(self, country: str) -> int:
        """The port of a partner's console."""
        return self.console_port + self.partners.index(country.upper())

    def console_url(self, country: str) -> str:
        """Where a partner's console is reached (ends with `/`)."""
        if self.console_public_url:
            url = self.console_public_url.replace("{cc}", country.lower())
            return url if url.endswith("/") else url + "/"
        return f"http://{self.console_host}:{self.console_port_of(country)}/"

    def alert_url(self, country: str, alert_id: str) -> str:
        """A link to one alert in a partner's console."""
        return f"{self.console_url(country)}#alert={alert_id}"

    @property
    def partner_set(self) -> frozenset[str]:
        return frozenset(self.partners)
