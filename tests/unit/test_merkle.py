"""RFC 9162 Merkle trees: published vectors, and agreement with a second, naive tree.

Three sources of truth, kept apart from `exchange.merkle`:
- tests/vectors/rfc6962_merkle_reference.json: the 8-leaf reference tree with
  the root of every prefix, node hashes, proofs, and RFC 6962 2.1.3's 7-leaf
  example stated with the RFC's own labels;
- tests/vectors/transparency_dev_merkle_probes.json: inclusion and consistency
  probes a verifier must accept or reject;
- `Naive` below: MTH, PATH and PROOF written as the RFC's recursive definitions
  over the leaf data, compared with the module for every size and index up to
  a bound, and on random trees through hypothesis.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange import merkle
from exchange.merkle import (
    EMPTY_ROOT,
    Frontier,
    ProofError,
    aligned_blocks,
    consistency_ranges,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from tests.unit._trees import Tree

VECTORS = Path(__file__).parents[1] / "vectors"
REFERENCE: dict[str, Any] = json.loads((VECTORS / "rfc6962_merkle_reference.json").read_text())
PROBES: dict[str, Any] = json.loads((VECTORS / "transparency_dev_merkle_probes.json").read_text())
LEAVES = [bytes.fromhex(leaf) for leaf in REFERENCE["leaves"]]


class Naive:
    """RFC 9162 2.1.1, 2.1.3.1 and 2.1.4.1 read literally: recursion over the leaf data."""

    @staticmethod
    def mth(data: list[bytes]) -> bytes:
        n = len(data)
        if n == 0:
            return hashlib.sha256(b"").digest()
        if n == 1:
            return hashlib.sha256(b"\x00" + data[0]).digest()
        k = 1
        while k * 2 < n:
            k *= 2
        return hashlib.sha256(b"\x01" + Naive.mth(data[:k]) + Naive.mth(data[k:])).digest()

    @staticmethod
    def path(m: int, data: list[bytes]) -> list[bytes]:
        n = len(data)
        if n == 1:
            return []
        k = 1
        while k * 2 < n:
            k *= 2
        if m < k:
            return [*Naive.path(m, data[:k]), Naive.mth(data[k:])]
        return [*Naive.path(m - k, data[k:]), Naive.mth(data[:k])]

    @staticmethod
    def proof(m: int, data: list[bytes]) -> list[bytes]:
        return Naive._subproof(m, data, True)

    @staticmethod
    def _subproof(m: int, data: list[bytes], b: bool) -> list[bytes]:
        n = len(data)
        if m == n:
            return [] if b else [Naive.mth(data)]
        k = 1
        while k * 2 < n:
            k *= 2
        if m <= k:
            return [*Naive._subproof(m, data[:k], b), Naive.mth(data[k:])]
        return [*Naive._subproof(m - k, data[k:], False), Naive.mth(data[:k])]


REFERENCE_TREE = Tree(LEAVES)


def hexes(values: list[bytes]) -> list[str]:
    return [v.hex() for v in values]


# --- the reference tree ----------------------------------------------------------------------


def test_hasher_values() -> None:
    hasher = REFERENCE["hasher"]
    assert EMPTY_ROOT.hex() == hasher["empty_tree"] == REFERENCE["empty_root"]
    assert leaf_hash(b"").hex() == hasher["leaf_hash_of_empty_leaf"]
    assert leaf_hash(b"L123456").hex() == hasher["leaf_hash_of_ascii_L123456"]
    assert node_hash(b"N123", b"N456").hex() == hasher["node_hash_of_ascii_N123_and_N456"]


@pytest.mark.parametrize("size", range(0, 9))
def test_root_of_every_prefix_of_the_reference_tree(size: int) -> None:
    expected = REFERENCE["empty_root"] if size == 0 else REFERENCE["roots_by_size"][str(size)]
    assert root_of([leaf_hash(d) for d in LEAVES[:size]]).hex() == expected
    assert Tree(LEAVES[:size]).frontier.root().hex() == expected


def test_stored_nodes_are_the_reference_node_hashes() -> None:
    for level, hashes in enumerate(REFERENCE["node_hashes_by_level"]):
        for index, expected in enumerate(hashes):
            assert REFERENCE_TREE.nodes[(level, index)].hex() == expected, (level, index)


@pytest.mark.parametrize("case", REFERENCE["inclusion_proofs"], ids=lambda c: str(c)[:40])
def test_reference_inclusion_proofs(case: dict[str, Any]) -> None:
    index, size = case["leaf_index"], case["tree_size"]
    assert hexes(REFERENCE_TREE.path(index, size)) == case["path"]
    verify_inclusion(
        leaf_hash(LEAVES[index]),
        index,
        size,
        [bytes.fromhex(p) for p in case["path"]],
        bytes.fromhex(REFERENCE["roots_by_size"][str(size)]),
    )


@pytest.mark.parametrize("case", REFERENCE["consistency_proofs"], ids=lambda c: str(c)[:40])
def test_reference_consistency_proofs(case: dict[str, Any]) -> None:
    first, second = case["first"], case["second"]
    assert hexes(REFERENCE_TREE.proof(first, second)) == case["path"]
    verify_consistency(
        first,
        second,
        bytes.fromhex(REFERENCE["roots_by_size"][str(first)]),
        bytes.fromhex(REFERENCE["roots_by_size"][str(second)]),
        [bytes.fromhex(p) for p in case["path"]],
    )


EXAMPLE = REFERENCE["rfc6962_section_2_1_3_example"]


def _labels(ranges: list[tuple[int, int]]) -> list[str]:
    by_range = {tuple(r): label for label, r in EXAMPLE["labels"].items()}
    return [by_range[r] for r in ranges]


@pytest.mark.parametrize("index", EXAMPLE["audit_paths"])
def test_rfc_example_audit_paths_name_the_rfc_nodes(index: str) -> None:
    ranges = inclusion_ranges(int(index), EXAMPLE["tree_size"])
    assert _labels(ranges) == EXAMPLE["audit_paths"][index]


@pytest.mark.parametrize("first", EXAMPLE["consistency_proofs"])
def test_rfc_example_consistency_proofs_name_the_rfc_nodes(first: str) -> None:
    ranges = consistency_ranges(int(first), EXAMPLE["tree_size"])
    assert _labels(ranges) == EXAMPLE["consistency_proofs"][first]


# --- verification probes ---------------------------------------------------------------------


def _must_reject(probe: dict[str, Any], hashes: list[str]) -> bool:
    # Our one policy beyond the probes: a hash that is not 32 bytes is never accepted
    # (one "additional" probe accepts 12-byte placeholder roots; the file's comment says so).
    return bool(probe["want_error"]) or any(len(h) != 64 for h in hashes)


@pytest.mark.parametrize("probe", PROBES["inclusion"], ids=lambda p: p["file"])
def test_inclusion_probe(probe: dict[str, Any]) -> None:
    hashes = [probe["leaf_hash"], probe["root"], *probe["path"]]

    def verify() -> None:
        verify_inclusion(
            bytes.fromhex(probe["leaf_hash"]),
            probe["leaf_index"],
            probe["tree_size"],
            [bytes.fromhex(p) for p in probe["path"]],
            bytes.fromhex(probe["root"]),
        )

    if _must_reject(probe, hashes):
        with pytest.raises(ProofError):
            verify()
    else:
        verify()


@pytest.mark.parametrize("probe", PROBES["consistency"], ids=lambda p: p["file"])
def test_consistency_probe(probe: dict[str, Any]) -> None:
    hashes = [probe["first_hash"], probe["second_hash"], *probe["path"]]

    def verify() -> None:
        verify_consistency(
            probe["first"],
            probe["second"],
            bytes.fromhex(probe["first_hash"]),
            bytes.fromhex(probe["second_hash"]),
            [bytes.fromhex(p) for p in probe["path"]],
        )

    if _must_reject(probe, hashes):
        with pytest.raises(ProofError):
            verify()
    else:
        verify()


def test_the_probe_files_exercise_both_outcomes() -> None:
    for kind in ("inclusion", "consistency"):
        outcomes = {p["want_error"] for p in PROBES[kind]}
        assert outcomes == {True, False}, kind


# --- agreement with the naive tree ------------------------------------------------------------

BOUND = 33  # every size up to 33 crosses three levels of incomplete right edges
DATA = [bytes([i]) * (i % 5) for i in range(BOUND)]
TREE = Tree(DATA)


@pytest.mark.parametrize("size", range(1, BOUND + 1))
def test_every_inclusion_proof_agrees_with_the_naive_tree(size: int) -> None:
    data = DATA[:size]
    root = Naive.mth(data)
    assert TREE.mth(0, size) == root
    for index in range(size):
        path = TREE.path(index, size)
        assert path == Naive.path(index, data), index
        verify_inclusion(leaf_hash(data[index]), index, size, path, root)


@pytest.mark.parametrize("second", range(1, BOUND + 1))
def test_every_consistency_proof_agrees_with_the_naive_tree(second: int) -> None:
    root = Naive.mth(DATA[:second])
    for first in range(1, second + 1):
        proof = TREE.proof(first, second)
        assert proof == Naive.proof(first, DATA[:second]), first
        verify_consistency(first, second, Naive.mth(DATA[:first]), root, proof)


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=300), st.data())
def test_random_trees_agree_with_the_naive_tree(data: list[bytes], draw: st.DataObject) -> None:
    size = len(data)
    tree = Tree(data)
    root = Naive.mth(data)
    assert tree.frontier.root() == root
    index = draw.draw(st.integers(0, size - 1))
    assert tree.path(index, size) == Naive.path(index, data)
    first = draw.draw(st.integers(1, size))
    assert tree.proof(first, size) == Naive.proof(first, data)


# --- what a verifier must refuse --------------------------------------------------------------


def _flip(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + value[1:]


@pytest.mark.parametrize("size", [2, 5, 8, 13])
def test_any_altered_inclusion_proof_is_refused(size: int) -> None:
    root = TREE.mth(0, size)
    for index in range(size):
        leaf = leaf_hash(DATA[index])
        path = TREE.path(index, size)
        for i in range(len(path)):
            with pytest.raises(ProofError):
                verify_inclusion(
                    leaf, index, size, [*path[:i], _flip(path[i]), *path[i + 1 :]], root
                )
        with pytest.raises(ProofError):
            verify_inclusion(_flip(leaf), index, size, path, root)
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, size, path[:-1], root)
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, size, [*path, root], root)
        if index + 1 < size:
            with pytest.raises(ProofError):
                verify_inclusion(leaf, index + 1, size, path, root)


@pytest.mark.parametrize("second", [3, 7, 8, 12])
def test_any_altered_consistency_proof_is_refused(second: int) -> None:
    for first in range(1, second):
        proof = TREE.proof(first, second)
        first_root, second_root = TREE.mth(0, first), TREE.mth(0, second)
        for i in range(len(proof)):
            altered = [*proof[:i], _flip(proof[i]), *proof[i + 1 :]]
            with pytest.raises(ProofError):
                verify_consistency(first, second, first_root, second_root, altered)
        with pytest.raises(ProofError):
            verify_consistency(first, second, _flip(first_root), second_root, proof)
        with pytest.raises(ProofError):
            verify_consistency(first, second, first_root, _flip(second_root), proof)


def test_a_rewritten_history_is_not_consistent_with_the_old_head() -> None:
    rewritten = Tree([*DATA[:4], b"edited", *DATA[5:12]])
    with pytest.raises(ProofError, match=r"does not lead to the (first|second) root"):
        verify_consistency(8, 12, TREE.mth(0, 8), rewritten.mth(0, 12), rewritten.proof(8, 12))


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [(0, 4, "from size 0"), (5, 4, "from size 5"), (4, 4, "empty proof")],
)
def test_impossible_consistency_questions_are_refused(
    first: int, second: int, message: str
) -> None:
    with pytest.raises(ProofError, match=message):
        verify_consistency(first, second, TREE.mth(0, 4), TREE.mth(0, 4), [TREE.mth(0, 1)])


# --- the building blocks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "blocks"),
    [
        (0, 1, [(0, 0)]),
        (0, 8, [(3, 0)]),
        (0, 7, [(2, 0), (1, 2), (0, 6)]),
        (8, 13, [(2, 2), (0, 12)]),
        (4, 7, [(1, 2), (0, 6)]),
    ],
)
def test_aligned_blocks(start: int, end: int, blocks: list[tuple[int, int]]) -> None:
    assert aligned_blocks(start, end) == blocks


@pytest.mark.parametrize(("start", "end"), [(3, 3), (5, 2), (1, 3), (2, 6)])
def test_aligned_blocks_refuses_what_no_proof_asks_for(start: int, end: int) -> None:
    with pytest.raises(ValueError, match="range"):
        aligned_blocks(start, end)


def test_frontier_round_trips_through_its_bytes() -> None:
    for size in (0, 1, 6, 33):
        frontier = Tree(DATA[:size]).frontier
        assert Frontier.from_bytes(size, frontier.to_bytes()) == frontier


def test_frontier_bytes_of_the_wrong_length_are_refused() -> None:
    with pytest.raises(ValueError, match="does not fit size"):
        Frontier.from_bytes(3, bytes(32))


def test_public_surface() -> None:
    assert set(merkle.__all__) == {
        name for name in vars(merkle) if not name.startswith("_") and name.isidentifier()
    } - {"annotations", "dataclasses", "hashlib", "Callable", "Sequence"}
