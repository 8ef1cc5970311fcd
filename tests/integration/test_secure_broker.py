"""The secure broker (`broker.sh start --secure`): SASL_SSL with SCRAM users, TLS from the
project's own CA, and per-country ACLs. Starts its own broker (on free ports, or
FUSION_TEST_SECURE_PORT and the next; folder `.broker-secure`) for this module and stops it at
the end."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import ssl
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.conn import AIOKafkaConnection
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
)
from kafka import KafkaAdminClient
from kafka.admin import (
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePatternFilter,
    ResourceType,
)
from pydantic import SecretStr

from schemas.alerts import PolicyRef
from schemas.audit import AuditRecord, FieldAction
from streams.clients import create_topics, kafka_python_config
from streams.settings import Settings
from streams.tools import acls
from streams.tools.audit_show import find_audit, format_audit
from tests.integration.conftest import free_port_pair

REPO = Path(__file__).resolve().parents[2]
BROKER_SH = REPO / "deploy" / "kafka" / "broker.sh"


@dataclass
class SecureBroker:
    port: int
    folder: Path
    creds: dict[str, str]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def cafile(self) -> str:
        return self.creds["FUSION_SSL_CAFILE"]

    def password(self, user: str) -> str:
        return self.creds["FUSION_BROKER_PASSWORD_" + user.upper().replace("-", "_")]

    def settings(self, user: str = "fusion", **kw: Any) -> Settings:
        """Settings for a client authenticating as `user` (init values beat the environment)."""
        return Settings(
            bootstrap_servers=self.bootstrap,
            security_protocol="SASL_SSL",
            sasl_username=user,
            sasl_password=SecretStr(self.password(user)),
            ssl_cafile=Path(self.cafile),
            **kw,
        )

    def client(self, user: str, *, password: str | None = None, trust: bool = True) -> dict:
        """aiokafka options for `user`; trust=False: a TLS client with only the system CAs."""
        ctx = ssl.create_default_context(cafile=self.cafile if trust else None)
        return {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": user,
            "sasl_plain_password": password or self.password(user),
            "ssl_context": ctx,
            "request_timeout_ms": 10_000,
        }


def read_env(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


@pytest.fixture(scope="module")
def secure() -> Iterator[SecureBroker]:
    folder = REPO / ".broker-secure"
    requested = os.environ.get("FUSION_TEST_SECURE_PORT")
    port = int(requested) if requested else free_port_pair()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FUSION_BOOTSTRAP_SERVERS", "FUSION_SASL_PASSWORD", "FUSION_SASL_USERNAME")
    }
    env.update(
        FUSION_BROKER_PORT=str(port),
        FUSION_CONTROLLER_PORT=str(port + 1),
        FUSION_BROKER_DIR=str(folder),
        FUSION_BROKER_HEAP="512m",
        FUSION_PARTNERS="US,MX",
        FUSION_PYTHON=sys.executable,
    )
    subprocess.run([str(BROKER_SH), "reset"], env=env, check=False, capture_output=True)
    subprocess.run([str(BROKER_SH), "start", "--secure"], env=env, check=True, timeout=120)
    try:
        b = SecureBroker(port, folder, read_env(folder / "credentials.env"))
        create_topics(b.settings())
        yield b
    finally:
        subprocess.run([str(BROKER_SH), "stop"], env=env, check=False)


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Unclosed clients show up in the test that leaked them, not in a later one."""
    yield
    gc.collect()


async def produce(opts: dict, topic: str, value: bytes, key: bytes | None = None) -> None:
    p = AIOKafkaProducer(**opts)
    try:
        await p.start()
        await p.send_and_wait(topic, value, key=key)
    finally:
        await p.stop()


async def consume_one(opts: dict, topic: str, group: str | None) -> bytes:
    c = AIOKafkaConsumer(topic, group_id=group, auto_offset_reset="earliest", **opts)
    try:
        await c.start()
        msg = await asyncio.wait_for(c.getone(), 20)
        return bytes(msg.value)
    finally:
        await c.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def connect(port: int, **kw: Any) -> None:
    """One raw connection (version handshake, and SASL if asked), closed whatever happens."""
    conn = AIOKafkaConnection("127.0.0.1", port, request_timeout_ms=5000, **kw)
    try:
        await conn.connect()
    finally:
        conn.close()
        await asyncio.sleep(0.1)  # let the transport finish closing before the loop ends


# -- who may read and write what ---------------------------------------------------------------


def test_each_operations_center_reads_its_own_alerts_only(secure: SecureBroker):
    marker = uuid.uuid4().hex.encode()
    for cc in ("us", "mx"):
        run(
            produce(
                secure.client("fusion"),
                f"alerts.{cc}",
                b'{"for": "%s", "m": "%s"}' % (cc.encode(), marker),
            )
        )
    for own, other in (("mx", "us"), ("us", "mx")):
        ops = secure.client(f"ops-{own}")
        got = orjson.loads(
            run(consume_one(ops, f"alerts.{own}", f"ops-{own}-{uuid.uuid4().hex[:6]}"))
        )
        assert got["for"] == own
        with pytest.raises(TopicAuthorizationFailedError, match=f"alerts.{other}"):
            run(consume_one(ops, f"alerts.{other}", f"ops-{own}-{uuid.uuid4().hex[:6]}"))
        # Nor may it join the other center's consumer groups.
        with pytest.raises(GroupAuthorizationFailedError):
            run(consume_one(ops, f"alerts.{own}", f"ops-{other}-{uuid.uuid4().hex[:6]}"))


def test_each_operations_center_triages_on_its_own_topics_only(secure: SecureBroker):
    """`ops-<cc>` writes its triage topic and reads its own two; it can neither read the
    partner's triage nor write anything that crosses (that is the relay's, as `fusion`)."""
    marker = uuid.uuid4().hex.encode()
    ops = secure.client("ops-us")
    run(produce(ops, "triage.us", b'{"m": "%s"}' % marker))
    got = run(consume_one(ops, "triage.us", f"ops-us-{uuid.uuid4().hex[:6]}"))
    assert marker in got
    run(produce(secure.client("fusion"), "triage.us.inbound", b'{"m": "%s"}' % marker))
    assert marker in run(consume_one(ops, "triage.us.inbound", f"ops-us-{uuid.uuid4().hex[:6]}"))
    for topic in ("triage.mx", "triage.mx.inbound"):
        with pytest.raises(TopicAuthorizationFailedError, match=topic.replace(".", r"\.")):
            run(consume_one(ops, topic, f"ops-us-{uuid.uuid4().hex[:6]}"))
    for topic in ("triage.mx", "triage.mx.inbound", "triage.us.inbound", "audit.triage"):
        with pytest.raises(TopicAuthorizationFailedError, match=topic.replace(".", r"\.")):
            run(produce(ops, topic, b'{"forged": true}'))


def test_producers_write_the_input_topics_only(secure: SecureBroker):
    prod = secure.client("producer-mx")
    run(produce(prod, "events.detections", b'{"event_id": "x"}'))
    # Authorizations: Mexico writes its own topic, and cannot publish on the US one.
    run(produce(prod, "events.authorizations.mx", b'{"event_id": "a"}'))
    with pytest.raises(TopicAuthorizationFailedError, match=r"events\.authorizations\.us"):
        run(produce(prod, "events.authorizations.us", b'{"event_id": "a"}'))
    with pytest.raises(TopicAuthorizationFailedError, match=r"alerts\.mx"):
        run(produce(prod, "alerts.mx", b'{"forged": true}'))
    with pytest.raises(TopicAuthorizationFailedError, match=r"audit\.sharing"):
        run(produce(prod, "audit.sharing", b"{}"))
    with pytest.raises(TopicAuthorizationFailedError, match=r"events\.detections"):
        run(consume_one(prod, "events.detections", None))
    with pytest.raises(GroupAuthorizationFailedError):
        run(consume_one(prod, "events.detections", "producer-mx-reads"))


def test_a_witness_reads_the_log_and_writes_cosignatures_only(secure: SecureBroker):
    run(produce(secure.client("fusion"), "audit.log.checkpoints", b"a checkpoint"))
    witness = secure.client("witness-mx")
    assert run(consume_one(witness, "audit.log.checkpoints", None)) == b"a checkpoint"
    run(produce(witness, "audit.log.cosignatures", b"a cosigned checkpoint"))
    with pytest.raises(TopicAuthorizationFailedError, match=r"audit\.log\.checkpoints"):
        run(produce(witness, "audit.log.checkpoints", b"forged"))
    with pytest.raises(TopicAuthorizationFailedError, match=r"audit\.sharing"):
        run(consume_one(witness, "audit.sharing", None))
    ops = secure.client("ops-us")
    assert run(consume_one(ops, "audit.log.cosignatures", None)) == b"a cosigned checkpoint"


# -- who may connect at all ----------------------------------------------------------------------


def test_plaintext_client_is_refused_on_the_secure_listener(
    secure: SecureBroker, caplog: pytest.LogCaptureFixture
):
    with pytest.raises(KafkaConnectionError, match=f"Connection at 127.0.0.1:{secure.port} closed"):
        run(connect(secure.port))

    async def as_a_consumer() -> None:
        c = AIOKafkaConsumer("alerts.mx", bootstrap_servers=secure.bootstrap, group_id=None)
        try:
            await c.start()
        finally:
            await c.stop()
            await asyncio.sleep(0.1)

    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
            run(as_a_consumer())
    assert any("closed" in r.getMessage() for r in caplog.records)


def test_tls_client_not_trusting_the_project_ca_is_refused(
    secure: SecureBroker, caplog: pytest.LogCaptureFixture
):
    def tls(trust: bool) -> dict[str, Any]:
        ctx = ssl.create_default_context(cafile=secure.cafile if trust else None)
        return {"ssl_context": ctx, "security_protocol": "SSL"}

    with pytest.raises(ssl.SSLCertVerificationError, match="CERTIFICATE_VERIFY_FAILED"):
        run(connect(secure.port, **tls(trust=False)))
    # The same handshake with the project's CA succeeds (and the broker answers the version
    # request, which it allows before SASL authentication).
    run(connect(secure.port, **tls(trust=True)))

    async def as_a_consumer() -> None:
        c = AIOKafkaConsumer("alerts.mx", group_id=None, **secure.client("ops-mx", trust=False))
        try:
            await c.start()
        finally:
            await c.stop()
            await asyncio.sleep(0.1)

    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
            run(as_a_consumer())
    assert any("CERTIFICATE_VERIFY_FAILED" in r.getMessage() for r in caplog.records)


def test_wrong_password_is_refused(secure: SecureBroker):
    def as_ops_mx(password: str) -> dict[str, Any]:
        return {
            "ssl_context": ssl.create_default_context(cafile=secure.cafile),
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "ops-mx",
            "sasl_plain_password": password,
        }

    with pytest.raises(SaslAuthenticationFailed, match="invalid credentials"):
        run(connect(secure.port, **as_ops_mx(secure.password("ops-us"))))
    run(connect(secure.port, **as_ops_mx(secure.password("ops-mx"))))


# -- how the secrets and ACLs were set up --------------------------------------------------------


def test_secrets_stay_in_the_broker_folder_and_off_command_lines(secure: SecureBroker):
    creds = secure.folder / "credentials.env"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert stat.S_IMODE((secure.folder / "tls" / "ca.key").stat().st_mode) == 0o600
    assert not (secure.folder / "format.args").exists()
    pid = (secure.folder / "broker.pid").read_text().strip()
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    passwords = [v for k, v in secure.creds.items() if k.startswith("FUSION_BROKER_PASSWORD_")]
    assert len(passwords) == 8 and not any(p in cmdline for p in passwords)
    tracked = subprocess.run(
        ["git", "ls-files", "--", ".broker-secure"], cwd=REPO, capture_output=True, text=True
    )
    assert tracked.stdout == ""


def test_acls_are_as_planned_and_applying_them_again_is_harmless(secure: SecureBroker):
    s = secure.settings()
    plan = acls.acl_plan(s)
    assert acls.apply_acls(s, plan) == plan
    admin = KafkaAdminClient(**kafka_python_config(s))
    try:
        found, _ = admin.describe_acls(
            ACLFilter(
                principal=None,
                host="*",
                operation=ACLOperation.ANY,
                permission_type=ACLPermissionType.ANY,
                resource_pattern=ResourcePatternFilter(
                    ResourceType.ANY, None, ACLResourcePatternType.ANY
                ),
            )
        )
    finally:
        admin.close()
    got = {
        (
            a.principal,
            a.operation.name,
            a.resource_pattern.resource_type.name,
            a.resource_pattern.resource_name,
        )
        for a in found
    }
    assert got == {(f"User:{g.principal}", g.operation, g.resource, g.name) for g in plan}
    assert ("User:ops-mx", "READ", "TOPIC", "alerts.mx") in got
    assert not any(p == "User:ops-mx" and n == "alerts.us" for p, _, _, n in got)


# -- `fusion audit` reads the audit topic on the secure broker ----------------------------------


def test_audit_show_finds_what_was_released_and_why(secure: SecureBroker):
    alert_id = uuid.uuid4().hex
    ref = PolicyRef(id="us-mx-border-sharing", version="2026.1", sha256="ab" * 32)

    def record(dest: str, act: str) -> AuditRecord:
        return AuditRecord(
            alert_id=alert_id,
            rule_id="watchlist-plate",
            destination=dest,
            topic=f"alerts.{dest.lower()}",
            released_at=datetime(2026, 1, 5, 12, tzinfo=UTC),
            policy=ref,
            actions=[
                FieldAction(
                    path="evidence[0].fields.plate",
                    action=act,  # type: ignore[arg-type]
                    policy_rule="cross-border-identifiers (MLAT art. 7)",
                    origin="US",
                )
            ],
        )

    async def write() -> None:
        p = AIOKafkaProducer(**secure.client("fusion"))
        try:
            await p.start()
            for rec in (record("US", "release"), record("MX", "pseudonymize")):
                body = orjson.dumps(rec.model_dump(mode="json"))
                await p.send_and_wait("audit.sharing", body, key=alert_id.encode())
            await p.send_and_wait("audit.sharing", b"{}", key=b"another-alert")
        finally:
            await p.stop()

    run(write())
    (found,) = find_audit(secure.settings(), alert_id, "mx", timeout=20)
    assert found.destination == "MX" and found.actions[0].action == "pseudonymize"
    text = format_audit(found)
    assert f"alert {alert_id} (rule watchlist-plate) released to MX on alerts.mx" in text
    assert "policy us-mx-border-sharing version 2026.1 sha256 " + "ab" * 32 in text
    assert "evidence[0].fields.plate  pseudonymize  data of US  under cross-border-identifiers" in (
        text
    )
    assert find_audit(secure.settings(), "no-such-alert", "MX", timeout=10) == []
    # An operations center may not read the audit topic.
    with pytest.raises(TopicAuthorizationFailedError):
        run(consume_one(secure.client("ops-mx"), "audit.sharing", "ops-mx-audit"))
