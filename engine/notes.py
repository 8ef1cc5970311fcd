"""Signed checkpoints of a transparency log, in the C2SP formats: the checkpoint body
(c2sp.org/tlog-checkpoint), the signed note around it (c2sp.org/signed-note, Ed25519), and a
witness's cosignature line (c2sp.org/tlog-cosignature, `cosignature/v1`).

Keys are text, as the Go note package writes them:
`PRIVATE+KEY+<name>+<key hash hex>+<base64(0x01 || seed)>` for a signer and
`<name>+<key hash hex>+<base64(0x01 || public key)>` for a verifier; a cosigner's key hash is
taken with type byte 0x04 instead of 0x01.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
DASH = "\u2014 "


class NoteError(ValueError):
    """A note, key or signature that is malformed or does not verify."""


def key_hash(name: str, kind: int, public: bytes) -> bytes:
    """The 4-byte key id: SHA-256(name || 0x0A || type || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + public).digest()[:4]


def _check_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() for c in name):
        raise NoteError(f"key name {name!r}: must be non-empty, without spaces or '+'")


@dataclass(frozen=True)
class Verifier:
    """A public key: a log's signer or a witness."""

    name: str
    kind: int
    public: bytes

    @property
    def id(self) -> bytes:
        return key_hash(self.name, self.kind, self.public)

    def text(self) -> str:
        body = base64.b64encode(bytes([self.kind]) + self.public).decode()
        return f"{self.name}+{self.id.hex()}+{body}"

    @classmethod
    def parse(cls, text: str) -> Verifier:
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError(f"verifier key {text.strip()!r}: want name+hash+key")
        name, hash_hex, body = parts
        try:
            raw = base64.b64decode(body, validate=True)
            want = bytes.fromhex(hash_hex)
        except (binascii.Error, ValueError) as e:
            raise NoteError(f"verifier key {name!r}: not hex and base64") from e
        if len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE_V1):
            raise NoteError(f"verifier key {name!r}: not an Ed25519 key")
        key = cls(name, raw[0], raw[1:])
        if key.id != want:
            raise NoteError(f"verifier key {name!r}: key hash {hash_hex} does not match the key")
        return key

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """A private key: the log's (kind 0x01) or a witness's (kind 0x04)."""

    name: str
    kind: int
    seed: bytes

    @classmethod
    def generate(cls, name: str, kind: int = ED25519) -> Signer:
        _check_name(name)
        return cls(name, kind, Ed25519PrivateKey.generate().private_bytes_raw())

    @property
    def verifier(self) -> Verifier:
        public = (
            Ed25519PrivateKey.from_private_bytes(self.seed)
            .public_key()
            .public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        return Verifier(self.name, self.kind, public)

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)

    def text(self) -> str:
        body = base64.b64encode(bytes([self.kind]) + self.seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier.id.hex()}+{body}"

    @classmethod
    def parse(cls, text: str) -> Signer:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("signing key: want PRIVATE+KEY+name+hash+key")
        name, hash_hex, body = parts[2:]
        try:
            raw = base64.b64decode(body, validate=True)
        except binascii.Error as e:
            raise NoteError(f"signing key {name!r}: not base64") from e
        if len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE_V1):
            raise NoteError(f"signing key {name!r}: not an Ed25519 key")
        key = cls(name, raw[0], raw[1:])
        if key.verifier.id.hex() != hash_hex:
            raise NoteError(f"signing key {name!r}: key hash {hash_hex} does not match the key")
        return key


@dataclass(frozen=True)
class Checkpoint:
    """A log's origin, size and tree hash (the body of a signed note)."""

    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse_body(cls, body: str) -> Checkpoint:
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("checkpoint: want origin, size and hash lines")
        origin, size, root = lines[:3]
        if not origin or not size.isdigit() or (size != "0" and size.startswith("0")):
            raise NoteError(f"checkpoint of {origin!r}: bad origin or size {size!r}")
        try:
            raw = base64.b64decode(root, validate=True)
        except binascii.Error as e:
            raise NoteError(f"checkpoint of {origin!r}: root hash is not base64") from e
        if len(raw) != 32:
            raise NoteError(f"checkpoint of {origin!r}: root hash is {len(raw)} bytes")
        return cls(origin, int(size), raw)


@dataclass(frozen=True)
class NoteSignature:
    name: str
    id: bytes
    blob: bytes

    def line(self) -> str:
        return f"{DASH}{self.name} {base64.b64encode(self.id + self.blob).decode()}\n"


@dataclass(frozen=True)
class SignedNote:
    """A note's text and its signature lines."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def render(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)

    @classmethod
    def parse(cls, note: str) -> SignedNote:
        split = note.rfind("\n\n")
        if split < 0:
            raise NoteError("note: no blank line before the signatures")
        text, sigs = note[: split + 1], note[split + 2 :]
        if not sigs.endswith("\n"):
            raise NoteError("note: signatures must end with a newline")
        out: list[NoteSignature] = []
        for line in sigs[:-1].split("\n"):
            if not line.startswith(DASH):
                raise NoteError(f"note: bad signature line {line!r}")
            name, _, b64 = line[len(DASH) :].rpartition(" ")
            try:
                raw = base64.b64decode(b64, validate=True)
            except binascii.Error as e:
                raise NoteError(f"note: signature of {name!r} is not base64") from e
            if len(raw) < 5:
                raise NoteError(f"note: signature of {name!r} too short")
            out.append(NoteSignature(name, raw[:4], raw[4:]))
        if not out:
            raise NoteError("note: no signatures")
        return cls(text, tuple(out))

    def checkpoint(self) -> Checkpoint:
        return Checkpoint.parse_body(self.text)

    def by(self, key: Verifier) -> NoteSignature | None:
        """The signature line of this key, if the note has one."""
        for s in self.signatures:
            if s.name == key.name and s.id == key.id:
                return s
        return None

    def with_signature(self, signature: NoteSignature) -> SignedNote:
        kept = tuple(s for s in self.signatures if (s.name, s.id) != (signature.name, signature.id))
        return SignedNote(self.text, (*kept, signature))


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> SignedNote:
    """The checkpoint as a note signed by the log's key."""
    text = checkpoint.body()
    return SignedNote(
        text, (NoteSignature(signer.name, signer.verifier.id, signer.sign(text.encode())),)
    )


def verify_log_signature(note: SignedNote, keys: Iterable[Verifier]) -> Verifier:
    """The log key that signed the note (any of `keys`, so that old checkpoints verify after
    a rotation); NoteError if none did."""
    known = [k for k in keys if k.kind == ED25519]
    for key in known:
        sig = note.by(key)
        if sig is not None:
            if key.verify(sig.blob, note.text.encode()):
                return key
            raise NoteError(f"signature of {key.name} does not verify")
    raise NoteError("not signed by any known log key")


def _cosigned_message(text: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def cosign(note: SignedNote, witness: Signer, timestamp: int) -> NoteSignature:
    """A witness's cosignature of the checkpoint, at `timestamp` (seconds since the epoch)."""
    if witness.kind != COSIGNATURE_V1:
        raise NoteError(f"key {witness.name!r} is not a witness key")
    stamp = timestamp.to_bytes(8, "big")
    blob = stamp + witness.sign(_cosigned_message(note.text, timestamp))
    return NoteSignature(witness.name, witness.verifier.id, blob)


def verify_cosignature(note: SignedNote, witness: Verifier) -> int:
    """The time the witness cosigned the checkpoint; NoteError if it did not, or the
    cosignature does not verify."""
    sig = note.by(witness)
    if sig is None:
        raise NoteError(f"not cosigned by witness {witness.name}")
    if len(sig.blob) != 72:
        raise NoteError(f"cosignature of {witness.name} is {len(sig.blob)} bytes, not 72")
    timestamp = int.from_bytes(sig.blob[:8], "big")
    if not witness.verify(sig.blob[8:], _cosigned_message(note.text, timestamp)):
        raise NoteError(f"cosignature of {witness.name} does not verify")
    return timestamp
