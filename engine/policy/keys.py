"""Pseudonymisation keys and the pseudonyms made with them.

Pseudonyms read `pn:<kind>:<key id>:<32 hex digits>`: HMAC-SHA256 under the key of that kind
over `pn-v1 NUL <destination> NUL <kind> NUL <normalised value>`, cut to 128 bits. Plates are
normalised to upper-case letters and digits, other identifiers stripped and upper-cased, so
the same identifier reported by any country gives the same pseudonym for one destination
(and different ones for different destinations). The kind is the field name (`plate`,
`person_ref`, `serial`, ...). A released identifier is a list of pseudonyms, one per active
key of its kind, primary first: at most two keys are active, so during a rotation window
alerts carry the pseudonym under the new and under the old key, and two released identifiers
denote the same value exactly when their lists share an element (`same_subject`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import yaml
from pydantic import BeforeValidator, Field, SecretBytes, ValidationError, field_validator

from engine.errors import PolicyError
from engine.policy.model import Frozen, clean_message
from schemas.events import normalize_plate

PSEUDONYM_PREFIX = "pn"
PSEUDONYM_HEX = 32
MIN_KEY_BYTES = 32
MAX_ACTIVE_KEYS = 2


def _base64_bytes(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                "must be base64 text, e.g. the output of `openssl rand -base64 32`"
            ) from None
    return value


class PseudonymKey(Frozen):
    """One HMAC key of one identifier kind; the secret never prints."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")] = Field(
        description="Key id, written into every pseudonym made with the key."
    )
    secret: Annotated[SecretBytes, BeforeValidator(_base64_bytes)] = Field(
        description=f"Key material, base64 in files; at least {MIN_KEY_BYTES} bytes."
    )

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, v: SecretBytes) -> SecretBytes:
        n = len(v.get_secret_value())
        if n < MIN_KEY_BYTES:
            raise ValueError(f"must hold at least {MIN_KEY_BYTES} bytes of key material, got {n}")
        return v


KindName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
ActiveKeys = Annotated[list[PseudonymKey], Field(min_length=1, max_length=MAX_ACTIVE_KEYS)]


def normalize_identifier(kind: str, value: Any) -> str:
    """The form an identifier is pseudonymised in: plates as matched, others stripped and
    upper-cased."""
    text = value if isinstance(value, str) else str(value)
    if kind == "plate":
        return normalize_plate(text)
    return text.strip().upper()


def pseudonym(key: PseudonymKey, kind: str, value: Any, destination: str) -> str:
    """`pn:<kind>:<key id>:<hex>`, the pseudonym of `value` for `destination` under `key`."""
    msg = b"\x00".join(
        (b"pn-v1", destination.encode(), kind.encode(), normalize_identifier(kind, value).encode())
    )
    digest = hmac.new(key.secret.get_secret_value(), msg, hashlib.sha256).hexdigest()
    return f"{PSEUDONYM_PREFIX}:{kind}:{key.id}:{digest[:PSEUDONYM_HEX]}"


def same_subject(a: Sequence[str] | str, b: Sequence[str] | str) -> bool:
    """Whether two released identifiers (pseudonym lists, or single pseudonyms) denote the
    same value: they share a pseudonym."""
    sa = {a} if isinstance(a, str) else set(a)
    sb = {b} if isinstance(b, str) else set(b)
    return bool(sa & sb)


class Keyring(Frozen):
    """Pseudonymisation keys per identifier kind. The first key of a kind is the primary; a
    second one is the previous key, still active during a rotation window."""

    keys: dict[KindName, ActiveKeys] = Field(default_factory=dict)
    source: str = Field(default="<keyring>", description="Where the keys came from, for errors.")

    @field_validator("keys")
    @classmethod
    def _distinct_ids(cls, v: dict[str, list[PseudonymKey]]) -> dict[str, list[PseudonymKey]]:
        for kind, keys in v.items():
            ids = [k.id for k in keys]
            if len(set(ids)) != len(ids):
                raise ValueError(f"kind {kind!r} lists key id {ids[0]!r} twice")
        return v

    @classmethod
    def parse(cls, doc: Any, *, source: str) -> Keyring:
        """A keyring from `{kind: [{id, secret}, ...]}` (primary first); errors name the
        source and the field but never echo key material."""
        if not isinstance(doc, Mapping):
            raise PolicyError(
                "a keys file must map identifier kinds to lists of {id, secret}, e.g. "
                '{"plate": [{"id": "k2026a", "secret": "<base64>"}]}',
                file=source,
            )
        try:
            return cls.model_validate({"keys": doc, "source": source})
        except ValidationError as e:
            first = e.errors()[0]
            loc = [str(p) for p in first["loc"][1:]]
            more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
            # `from None`: the validation error holds the input, which is key material.
            raise PolicyError(
                f"{clean_message(first['msg'])}{more}", file=source, field=".".join(loc) or None
            ) from None

    @classmethod
    def from_text(cls, text: str, *, source: str) -> Keyring:
        """A keyring from JSON or YAML text."""
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            raise PolicyError("the keys are not valid JSON or YAML", file=source) from None
        return cls.parse(doc if doc is not None else {}, source=source)

    def kinds(self) -> frozenset[str]:
        """The identifier kinds that have keys."""
        return frozenset(self.keys)

    def active(self, kind: str) -> tuple[PseudonymKey, ...]:
        """The active keys of a kind, primary first."""
        return tuple(self.keys.get(kind, ()))

    def pseudonyms(self, kind: str, value: Any, destination: str) -> list[str]:
        """The value's pseudonyms for `destination` under every active key, primary first."""
        keys = self.keys.get(kind)
        if not keys:
            raise PolicyError(f"no pseudonymisation key of kind {kind!r}", file=self.source)
        return [pseudonym(k, kind, value, destination) for k in keys]

    def matches(self, pn: str, value: Any, destination: str) -> bool:
        """Whether `pn` is the pseudonym of `value` for `destination` under a key still active:
        a pseudonym made under the previous key matches until that key is retired."""
        parts = pn.split(":")
        if len(parts) != 4 or parts[0] != PSEUDONYM_PREFIX:
            return False
        kind, key_id = parts[1], parts[2]
        for k in self.keys.get(kind, ()):
            if k.id == key_id:
                return hmac.compare_digest(pseudonym(k, kind, value, destination), pn)
        return False
