"""Merkle trees of RFC 9162 (Certificate Transparency 2.0), section 2.1: the tree hash, the
append-only compact range a writer keeps, inclusion and consistency proofs and their
verification.

Hashes are SHA-256 of `0x00 || leaf` for a leaf and `0x01 || left || right` for a node; the
empty tree's hash is SHA-256 of nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof that does not verify, with what is wrong with it."""


def leaf_hash(leaf: bytes) -> bytes:
    """The hash of one leaf: SHA-256(0x00 || leaf)."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH: the hash of the tree of these leaf hashes."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(root(leaf_hashes[:k]), root(leaf_hashes[k:]))


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(index, D[n]) of RFC 9162 2.1.3.1: the inclusion proof of leaf `index`."""
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise ProofError(f"leaf {index} is not in a tree of size {n}")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [*inclusion_proof(index, leaf_hashes[:k]), root(leaf_hashes[k:])]
    return [*inclusion_proof(index - k, leaf_hashes[k:]), root(leaf_hashes[:k])]


def consistency_proof(size1: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(size1, D[n]) of RFC 9162 2.1.4.1: that the tree of the first size1 leaves is a
    prefix of the tree of all of them."""
    n = len(leaf_hashes)
    if not 0 < size1 <= n:
        raise ProofError(f"no consistency proof from size {size1} to size {n}")
    return _subproof(size1, leaf_hashes, True)


def _subproof(m: int, leaves: Sequence[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], whole), root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), root(leaves[:k])]


def _check_hash(what: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to from the hash `leaf` (RFC 9162 2.1.3.2)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of size {size}")
    _check_hash("leaf hash", leaf)
    fn, sn, r = index, size - 1, leaf
    for i, p in enumerate(proof):
        _check_hash(f"proof node {i}", p)
        if sn == 0:
            raise ProofError(f"proof longer than a tree of size {size} needs")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"proof shorter than a tree of size {size} needs")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """Raise ProofError unless `proof` shows leaf hash `leaf` at `index` in the tree of
    `size` leaves whose hash is `expected_root`."""
    if root_from_inclusion(index, size, leaf, proof) != expected_root:
        raise ProofError(f"inclusion proof of leaf {index} does not lead to the tree hash")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless `proof` shows the tree of size1 with hash root1 is a prefix of
    the tree of size2 with hash root2 (RFC 9162 2.1.4.2)."""
    if size2 < size1:
        raise ProofError(f"tree shrank from size {size1} to {size2}")
    if size1 == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if size1 == size2:
        if proof:
            raise ProofError("a proof between equal sizes must be empty")
        if root1 != root2:
            raise ProofError(f"two different tree hashes for size {size1}")
        return
    _check_hash("first tree hash", root1)
    _check_hash("second tree hash", root2)
    if not proof:
        raise ProofError("empty consistency proof")
    for i, p in enumerate(proof):
        _check_hash(f"proof node {i}", p)
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"proof longer than sizes {size1} and {size2} need")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"proof shorter than sizes {size1} and {size2} need")
    if fr != root1:
        raise ProofError(f"proof does not lead to the tree hash of size {size1}")
    if sr != root2:
        raise ProofError(f"proof does not lead to the tree hash of size {size2}")


@dataclass(frozen=True)
class CompactRange:
    """What an append-only writer keeps of its tree: its size and the hashes of the perfect
    subtrees that make it up, largest first (one per set bit of the size)."""

    size: int = 0
    frontier: tuple[bytes, ...] = ()

    def append(self, leaf: bytes) -> CompactRange:
        """The range with one more leaf hash."""
        frontier = list(self.frontier)
        h, n = leaf, self.size
        while n & 1:
            h = node_hash(frontier.pop(), h)
            n >>= 1
        frontier.append(h)
        return CompactRange(self.size + 1, tuple(frontier))

    def root(self) -> bytes:
        """The tree hash."""
        if not self.frontier:
            return EMPTY_ROOT
        r = self.frontier[-1]
        for h in reversed(self.frontier[:-1]):
            r = node_hash(h, r)
        return r

    def to_doc(self) -> dict[str, object]:
        return {"size": self.size, "frontier": [h.hex() for h in self.frontier]}

    @classmethod
    def from_doc(cls, doc: dict[str, object]) -> CompactRange:
        size = doc["size"]
        hashes = doc["frontier"]
        if not isinstance(size, int) or not isinstance(hashes, list):
            raise ValueError("compact range: size must be an integer, frontier a list")
        frontier = tuple(bytes.fromhex(str(h)) for h in hashes)
        if size < 0 or len(frontier) != size.bit_count():
            raise ValueError(f"compact range: {len(frontier)} hashes for size {size}")
        return cls(size, frontier)
