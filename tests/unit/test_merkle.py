"""The Merkle tree of RFC 9162: proofs for random trees verify and altered ones fail; the
transparency-dev/merkle test vectors pass (tests/unit/vectors/NOTICE.md)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "transparency_dev_merkle.json").read_text()
)["vectors"]


def leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def b64s(values: list[str] | None) -> list[bytes]:
    return [b64(v) for v in values or []]


def test_rfc_definitions() -> None:
    assert EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    a, b, c = leaves(3)
    assert root([a, b, c]) == node_hash(node_hash(a, b), c)


@pytest.mark.parametrize("name", sorted(n for n in VECTORS if "/inclusion/" in n))
def test_inclusion_vectors(name: str) -> None:
    v: dict[str, Any] = VECTORS[name]
    check = lambda: verify_inclusion(  # noqa: E731
        v["leafIdx"], v["treeSize"], b64(v["leafHash"]), b64s(v["proof"]), b64(v["root"])
    )
    if v["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()


@pytest.mark.parametrize("name", sorted(n for n in VECTORS if "/consistency/" in n))
def test_consistency_vectors(name: str) -> None:
    v: dict[str, Any] = VECTORS[name]
    check = lambda: verify_consistency(  # noqa: E731
        v["size1"], v["size2"], b64(v["root1"]), b64(v["root2"]), b64s(v["proof"])
    )
    if v["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()


def test_vectors_are_all_there() -> None:
    assert sum("/inclusion/" in n for n in VECTORS) >= 90
    assert sum("/consistency/" in n for n in VECTORS) >= 90


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 300), st.data())
def test_inclusion_proofs_verify_and_altered_fail(n: int, data: st.DataObject) -> None:
    hashes = leaves(n)
    tree = root(hashes)
    index = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(index, hashes)
    verify_inclusion(index, n, hashes[index], proof, tree)
    with pytest.raises(ProofError):
        verify_inclusion(index, n, leaf_hash(b"other"), proof, tree)
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = [bytearray(p) for p in proof]
        bad[at][bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ProofError):
            verify_inclusion(index, n, hashes[index], [bytes(p) for p in bad], tree)
        with pytest.raises(ProofError):
            verify_inclusion(index, n, hashes[index], proof[:-1], tree)
    with pytest.raises(ProofError):
        verify_inclusion(index, n, hashes[index], [*proof, tree], tree)
    other = data.draw(st.integers(0, n - 1))
    if other != index and hashes[other] != hashes[index]:
        with pytest.raises(ProofError):
            verify_inclusion(other, n, hashes[index], proof, tree)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 300), st.data())
def test_consistency_proofs_verify_and_altered_fail(n: int, data: st.DataObject) -> None:
    hashes = leaves(n)
    m = data.draw(st.integers(1, n))
    proof = consistency_proof(m, hashes)
    first, second = root(hashes[:m]), root(hashes)
    verify_consistency(m, n, first, second, proof)
    if m == n:
        return
    with pytest.raises(ProofError):
        verify_consistency(m, n, leaf_hash(b"x"), second, proof)
    with pytest.raises(ProofError):
        verify_consistency(m, n, first, leaf_hash(b"x"), proof)
    at = data.draw(st.integers(0, len(proof) - 1))
    bad = list(proof)
    bad[at] = bytes([bad[at][0] ^ 1]) + bad[at][1:]
    with pytest.raises(ProofError):
        verify_consistency(m, n, first, second, bad)
    with pytest.raises(ProofError):
        verify_consistency(m, n, first, second, proof[:-1])
    # a forked tree of the same size: same prefix, one later leaf changed
    forked = list(hashes)
    forked[data.draw(st.integers(m, n - 1))] = leaf_hash(b"forked")
    with pytest.raises(ProofError):
        verify_consistency(m, n, first, root(forked), proof)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 200))
def test_compact_range_matches_the_tree(n: int) -> None:
    hashes = leaves(n)
    compact = CompactRange()
    for i, h in enumerate(hashes):
        assert compact.root() == root(hashes[:i])
        compact = compact.append(h)
    assert compact.size == n
    assert compact.root() == root(hashes)
    assert CompactRange.from_doc(compact.to_doc()) == compact


def test_compact_range_refuses_a_frontier_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="2 hashes for size 4"):
        CompactRange.from_doc({"size": 4, "frontier": ["00" * 32, "11" * 32]})
