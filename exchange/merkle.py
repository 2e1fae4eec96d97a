"""Merkle trees as RFC 9162 (Certificate Transparency v2) section 2.1 defines them.

Pure functions over hashes: no storage, no I/O. The tree over leaves
d(0) ... d(n-1) is the RFC's Merkle Tree Hash (MTH):

    leaf hash   SHA-256(0x00 || d(i))
    node hash   SHA-256(0x01 || left || right)
    MTH of n>1  node hash of MTH(first k leaves) and MTH(the rest), k the
                largest power of two below n

A store keeps only *complete* subtrees: the node at (level, index) covers the
leaves [index * 2**level, (index + 1) * 2**level). Any range a proof needs is a
short run of such aligned blocks (`aligned_blocks`), so proofs are answered from
O(log n) stored hashes; `Frontier` is the right edge of a growing tree, enough
to append a leaf and to compute the root.

Proofs are produced as lists of leaf ranges (`inclusion_ranges`,
`consistency_ranges`, the RFC's PATH and PROOF of 2.1.3.1 and 2.1.4.1), so the
caller can fetch exactly the hashes it needs, and verified with the RFC's
algorithms of 2.1.3.2 and 2.1.4.2.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "ProofError",
    "Range",
    "aligned_blocks",
    "consistency_ranges",
    "fold",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
# MTH({}) = SHA-256() (RFC 9162 2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()

# A half-open range of leaf indices [start, end).
Range = tuple[int, int]


class ProofError(ValueError):
    """A proof does not verify, or its inputs are not a proof at all."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below `n` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def aligned_blocks(start: int, end: int) -> list[tuple[int, int]]:
    """The complete subtrees, as (level, index), whose concatenation is [start, end).

    Every range a proof names starts on a boundary at least as large as the
    range, so it is the run of blocks given by the binary digits of its
    length, largest first; `fold` combines their hashes into the range's MTH.
    """
    if not 0 <= start < end:
        raise ValueError(f"empty or negative range [{start}, {end})")
    blocks = []
    offset, length = start, end - start
    for level in range(length.bit_length() - 1, -1, -1):
        if length >> level & 1:
            if offset % (1 << level):
                raise ValueError(f"range [{start}, {end}) is not aligned at level {level}")
            blocks.append((level, offset >> level))
            offset += 1 << level
    return blocks


def fold(hashes: Sequence[bytes]) -> bytes:
    """The MTH of a run of complete subtrees given largest first (see `aligned_blocks`)."""
    result = hashes[-1]
    for block in reversed(hashes[:-1]):
        result = node_hash(block, result)
    return result


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The ranges whose MTHs form the inclusion proof of leaf `index` (RFC 9162 2.1.3.1).

    Ordered from the leaf's sibling up to the root's other child.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    path: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append((start + k, end))
            end = start + k
        else:
            path.append((start, start + k))
            start += k
    return path[::-1]


def consistency_ranges(first: int, second: int) -> list[Range]:
    """The ranges whose MTHs prove tree `first` a prefix of tree `second` (RFC 9162 2.1.4.1)."""
    if not 0 < first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    path: list[Range] = []
    start, end, m, whole = 0, second, first, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            path.append((start + k, end))
            end = start + k
        else:
            path.append((start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        path.append((start, end))
    return path[::-1]


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """The MTH of a whole tree given its leaf hashes."""
    frontier = Frontier.empty()
    for leaf in leaf_hashes:
        frontier, _ = frontier.append(leaf)
    return frontier.root()


@dataclasses.dataclass(frozen=True)
class Frontier:
    """The right edge of a tree: the hash of each complete subtree, largest first.

    Its levels are the set bits of `size`, so the hashes alone say which nodes they are.
    """

    size: int
    hashes: tuple[bytes, ...]

    @staticmethod
    def empty() -> Frontier:
        return Frontier(0, ())

    @staticmethod
    def from_bytes(size: int, packed: bytes) -> Frontier:
        hashes = tuple(packed[i : i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE))
        if len(hashes) != size.bit_count() or any(len(h) != HASH_SIZE for h in hashes):
            raise ValueError(f"frontier of {len(hashes)} hashes does not fit size {size}")
        return Frontier(size, hashes)

    def to_bytes(self) -> bytes:
        return b"".join(self.hashes)

    def append(self, leaf: bytes) -> tuple[Frontier, list[tuple[int, int, bytes]]]:
        """This tree with one more leaf, and the complete subtrees the leaf completed.

        Returns:
            The new frontier and the new nodes above the leaf as (level, index, hash).
        """
        hashes = list(self.hashes)
        created = []
        current, level, index = leaf, 0, self.size
        # Each trailing 1-bit of the old size is a subtree the new leaf now pairs with.
        while index & 1:
            current = node_hash(hashes.pop(), current)
            level, index = level + 1, index >> 1
            created.append((level, index, current))
        hashes.append(current)
        return Frontier(self.size + 1, tuple(hashes)), created

    def root(self) -> bytes:
        return fold(self.hashes) if self.hashes else EMPTY_ROOT


def _check_hashes(path: Sequence[bytes], **named: bytes) -> None:
    for what, value in [*named.items(), *(("path hash", p) for p in path)]:
        if len(value) != HASH_SIZE:
            raise ProofError(f"{what.replace('_', ' ')} is {len(value)} bytes, not {HASH_SIZE}")


def _check_same_tree(first_root: bytes, second_root: bytes, path: Sequence[bytes]) -> None:
    if path:
        raise ProofError("trees of equal size need an empty proof")
    if first_root != second_root:
        raise ProofError("two different roots for one tree size")


def _shift_while(fn: int, sn: int, keep_going: Callable[[int], bool]) -> tuple[int, int]:
    while keep_going(fn):
        fn, sn = fn >> 1, sn >> 1
    return fn, sn


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> None:
    """Check that `leaf` is at `index` in the tree of `size` whose MTH is `root`.

    The algorithm of RFC 9162 2.1.3.2, step by step.

    Raises:
        ProofError: the proof does not verify, saying where it failed.
    """
    _check_hashes(path, leaf_hash=leaf, root_hash=root)
    if not 0 <= index < size:  # step 1
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    fn, sn, r = index, size - 1, leaf  # steps 2 and 3
    for p in path:  # step 4
        if sn == 0:
            raise ProofError("the proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            fn, sn = _shift_while(fn, sn, lambda f: not f & 1 and f != 0)
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:  # step 5
        raise ProofError("the proof is shorter than the tree is deep")
    if r != root:
        raise ProofError("the proof leads to another root")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> None:
    """Check that the tree of size `first` is a prefix of the tree of size `second`.

    The algorithm of RFC 9162 2.1.4.2, with these rules at its edges: equal sizes
    need an empty proof and equal roots, and a first size of 0 or one above the
    second is refused (nothing can be shown about an empty tree, and a log
    never shrinks).

    Raises:
        ProofError: the proof does not verify, saying where it failed.
    """
    _check_hashes(path, first_root=first_root, second_root=second_root)
    if first == 0 or first > second:
        raise ProofError(f"no consistency proof from size {first} to size {second}")
    if first == second:
        _check_same_tree(first_root, second_root, path)
        return
    if not path:  # step 1
        raise ProofError("the proof is empty")
    nodes = list(path)
    if first & (first - 1) == 0:  # step 2: first is a power of two
        nodes.insert(0, first_root)
    fn, sn = first - 1, second - 1  # step 3
    fn, sn = _shift_while(fn, sn, lambda f: bool(f & 1))  # step 4
    fr = sr = nodes[0]  # step 5
    for c in nodes[1:]:  # step 6
        if sn == 0:
            raise ProofError("the proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            fn, sn = _shift_while(fn, sn, lambda f: not f & 1 and f != 0)
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:  # step 7
        raise ProofError("the proof is shorter than the tree is deep")
    if fr != first_root:
        raise ProofError("the proof does not lead to the first root")
    if sr != second_root:
        raise ProofError("the proof does not lead to the second root")
