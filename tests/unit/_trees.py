"""An in-memory Merkle tree built with `exchange.merkle`, for tests that need proofs."""

from __future__ import annotations

from exchange.merkle import (
    Frontier,
    aligned_blocks,
    consistency_ranges,
    fold,
    inclusion_ranges,
    leaf_hash,
)


class Tree:
    """The module's tree over some leaf data: nodes by (level, index), as a store keeps them."""

    def __init__(self, data: list[bytes]) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.frontier = Frontier.empty()
        for i, item in enumerate(data):
            leaf = leaf_hash(item)
            self.nodes[(0, i)] = leaf
            self.frontier, created = self.frontier.append(leaf)
            self.nodes.update({(level, index): h for level, index, h in created})

    def mth(self, start: int, end: int) -> bytes:
        return fold([self.nodes[block] for block in aligned_blocks(start, end)])

    def path(self, index: int, size: int) -> list[bytes]:
        return [self.mth(a, b) for a, b in inclusion_ranges(index, size)]

    def proof(self, first: int, second: int) -> list[bytes]:
        return [self.mth(a, b) for a, b in consistency_ranges(first, second)]
