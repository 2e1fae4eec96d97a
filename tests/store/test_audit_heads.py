"""Peer heads held: the newest is kept, and never replaced by an older one.

Several processes of one node may fetch a peer's head at about the same time;
the one that commits last must not put back a smaller head than the one held,
which would weaken the next "the log shrank" check.
"""

from __future__ import annotations

from exchange.checkpoint import SignedTreeHead
from exchange.store import audit_heads
from exchange.store.engine import Store


def _head(size: int) -> SignedTreeHead:
    # Stored as given (heads are verified before they get here).
    return SignedTreeHead(f"xb-prosecution\n{size}\n".encode(), "k1", bytes([size]) * 64)


# (size offered, size held afterwards)
OFFERS = [(5, 5), (3, 5), (5, 5), (8, 8), (7, 8)]


def test_a_held_peer_head_is_replaced_only_by_a_larger_one(store: Store) -> None:
    for offered, kept in OFFERS:
        store.write(lambda c, s=offered: audit_heads.put_peer_head(c, "xb", _head(s), s, 0))
        held = store.read(lambda c: audit_heads.peer_head(c, "xb"))
        assert held == _head(kept), f"after a head of {offered} was offered"
