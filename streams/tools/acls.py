"""Per-country access on a secured broker (SASL_SSL, StandardAuthorizer).

Principals (SCRAM users, created by `deploy/kafka/broker.sh start --secure`):

- `fusion`, the pipeline: a super user in the broker's configuration, so no ACLs here;
- `ops-<cc>`, each partner's operations center: reads its own alert topic `alerts.<cc>`
  (and its `stix.<cc>` when the STIX topics are on), its two triage topics,
  `triage.<cc>` and `triage.<cc>.inbound`, and the audit log's public topics (leaf hashes,
  checkpoints, cosignatures, archived policy and rule files), and writes only `triage.<cc>`
  (its console's actions), with consumer groups named `ops-<cc>...`;
- `producer-<cc>`, each partner's agencies and sensors: writes the input topics only
  (detections, suspects, weapons, tracking, tips) and its own authorizations topic
  (`events.authorizations.<cc>`: only the host country issues its authorizations).
- `witness-<cc>`, each partner's witness of the audit log: reads the log's leaves and
  checkpoints, writes cosignatures (`fusion witness CC`).

Everything else is refused (no `allow.everyone.if.no.acl.found`). `apply_acls` creates the
bindings with kafka-python's admin client; creating an existing binding is a no-op, so it can
run on every start.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kafka import KafkaAdminClient
from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourceType,
)

from streams.clients import kafka_python_config
from streams.settings import Settings

log = logging.getLogger(__name__)

PIPELINE_PRINCIPAL = "fusion"


def ops_principal(country: str) -> str:
    """The operations center of a partner: `ops-us`."""
    return f"ops-{country.lower()}"


def witness_principal(country: str) -> str:
    """The audit-log witness of a partner: `witness-mx`."""
    return f"witness-{country.lower()}"


def producer_principal(country: str) -> str:
    """The producers of a partner: `producer-mx`."""
    return f"producer-{country.lower()}"


@dataclass(frozen=True, slots=True)
class Grant:
    """One allowed operation of one principal on one resource."""

    principal: str
    operation: Literal["READ", "WRITE", "DESCRIBE"]
    resource: Literal["TOPIC", "GROUP"]
    name: str
    pattern: Literal["LITERAL", "PREFIXED"] = "LITERAL"

    def __str__(self) -> str:
        star = "*" if self.pattern == "PREFIXED" else ""
        return f"User:{self.principal} {self.operation} {self.resource.lower()} {self.name}{star}"

    def to_acl(self) -> ACL:
        return ACL(
            principal=f"User:{self.principal}",
            host="*",
            operation=ACLOperation[self.operation],
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(
                ResourceType[self.resource], self.name, ACLResourcePatternType[self.pattern]
            ),
        )


def acl_plan(settings: Settings) -> list[Grant]:
    """Every grant for the configured partners and topic names (READ and WRITE imply
    DESCRIBE)."""
    grants: list[Grant] = []
    for cc in settings.partners:
        ops = ops_principal(cc)
        grants.append(Grant(ops, "READ", "TOPIC", settings.alert_topic(cc)))
        if settings.stix_topics:
            grants.append(Grant(ops, "READ", "TOPIC", settings.stix_topic(cc)))
        grants.append(Grant(ops, "READ", "TOPIC", settings.triage_topic(cc)))
        grants.append(Grant(ops, "WRITE", "TOPIC", settings.triage_topic(cc)))
        grants.append(Grant(ops, "READ", "TOPIC", settings.inbound_topic(cc)))
        grants.append(Grant(ops, "READ", "GROUP", ops, "PREFIXED"))
        grants.extend(
            Grant(ops, "READ", "TOPIC", topic)
            for topic in (
                settings.topic_log_leaves,
                settings.topic_log_checkpoints,
                settings.topic_log_cosignatures,
                settings.topic_archive,
            )
        )
        grants.extend(  # authorizations: only the partner's own topic
            Grant(producer_principal(cc), "WRITE", "TOPIC", topic)
            for topic, (_, owner) in settings.topic_event_types.items()
            if owner in (None, cc)
        )
        witness = witness_principal(cc)
        grants.append(Grant(witness, "READ", "TOPIC", settings.topic_log_leaves))
        grants.append(Grant(witness, "READ", "TOPIC", settings.topic_log_checkpoints))
        grants.append(Grant(witness, "WRITE", "TOPIC", settings.topic_log_cosignatures))
    return grants


class AclError(RuntimeError):
    """The broker refused some ACL bindings."""


def apply_acls(settings: Settings, grants: Sequence[Grant] | None = None) -> list[Grant]:
    """Create the bindings on the broker as the settings' (super) user; return them."""
    plan = list(acl_plan(settings) if grants is None else grants)
    admin = KafkaAdminClient(client_id=f"{settings.app_id}-acls", **kafka_python_config(settings))
    try:
        result = admin.create_acls([g.to_acl() for g in plan])
    finally:
        admin.close()
    failed = result.get("failed") or []
    if failed:
        raise AclError(
            f"the broker refused {len(failed)} of {len(plan)} ACL bindings: "
            + "; ".join(repr(f) for f in failed)
        )
    return plan


def main(argv: Sequence[str] | None = None) -> int:
    """`fusion acls [--env-file credentials.env] [--dry-run]`."""
    ap = argparse.ArgumentParser(prog="fusion acls", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="read FUSION_* settings (bootstrap, SASL user and password, CA) from this file, "
        "e.g. .broker/credentials.env written by broker.sh start --secure",
    )
    ap.add_argument("--dry-run", action="store_true", help="print the bindings, create nothing")
    args = ap.parse_args(argv)
    try:
        settings = Settings(_env_file=args.env_file) if args.env_file else Settings()
    except Exception as e:
        print(f"fusion acls: invalid settings: {e}", file=sys.stderr)
        return 2
    plan = acl_plan(settings)
    if not args.dry_run:
        if settings.security_protocol != "SASL_SSL":
            print(
                "fusion acls: the broker is not secured (FUSION_SECURITY_PROTOCOL=PLAINTEXT); "
                "ACLs need a SASL_SSL broker: deploy/kafka/broker.sh start --secure",
                file=sys.stderr,
            )
            return 2
        try:
            apply_acls(settings, plan)
        except Exception as e:
            print(f"fusion acls: {e}", file=sys.stderr)
            return 1
    for g in plan:
        print(("would allow " if args.dry_run else "allowed ") + str(g))
    return 0


if __name__ == "__main__":
    sys.exit(main())
