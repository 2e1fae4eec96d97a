"""Signed tree heads: this node's own, the newest of each peer, and contradictions seen.

Heads are stored as the exact checkpoint text and signature that were signed
or received, so they remain evidence; they are verified before they get here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select

from exchange.checkpoint import SignedTreeHead
from exchange.merkle import HASH_SIZE
from exchange.store.tables import AUDIT_CONFLICTS as _conflicts
from exchange.store.tables import AUDIT_TREE_HEADS as _own
from exchange.store.tables import PEER_TREE_HEADS as _peers

__all__ = [
    "Conflict",
    "conflict_recorded",
    "conflicts",
    "insert_conflict",
    "insert_own",
    "latest_own",
    "own_heads",
    "peer_head",
    "peer_heads",
    "put_peer_head",
]


def _signed(row: Row[Any]) -> SignedTreeHead:
    return SignedTreeHead(bytes(row.checkpoint), row.key_id, bytes(row.signature))


def insert_own(
    connection: Connection, signed: SignedTreeHead, tree_size: int, issued_at: int
) -> None:
    connection.execute(
        insert(_own).values(
            tree_size=tree_size,
            issued_at=issued_at,
            checkpoint=signed.text,
            key_id=signed.key_id,
            signature=signed.signature,
        )
    )


def latest_own(connection: Connection) -> SignedTreeHead | None:
    row = connection.execute(select(_own).order_by(_own.c.tree_size.desc()).limit(1)).one_or_none()
    return None if row is None else _signed(row)


def own_heads(connection: Connection) -> list[SignedTreeHead]:
    return [_signed(row) for row in connection.execute(select(_own).order_by(_own.c.tree_size))]


def peer_head(connection: Connection, node_id: str) -> SignedTreeHead | None:
    row = connection.execute(select(_peers).where(_peers.c.node_id == node_id)).one_or_none()
    return None if row is None else _signed(row)


def peer_heads(connection: Connection) -> list[tuple[str, SignedTreeHead]]:
    """Every peer head held, by node id."""
    rows = connection.execute(select(_peers).order_by(_peers.c.node_id))
    return [(row.node_id, _signed(row)) for row in rows]


def put_peer_head(
    connection: Connection, node_id: str, signed: SignedTreeHead, tree_size: int, fetched_at: int
) -> None:
    """Keep `signed` as the newest head of `node_id` (replacing a smaller one held).

    A head no larger than the one held is not kept: another process of the node
    may have kept a newer head of the same peer meanwhile, and the held head
    never goes back.
    """
    held = connection.execute(
        select(_peers.c.tree_size).where(_peers.c.node_id == node_id)
    ).scalar_one_or_none()
    if held is not None and held >= tree_size:
        return
    connection.execute(delete(_peers).where(_peers.c.node_id == node_id))
    connection.execute(
        insert(_peers).values(
            node_id=node_id,
            tree_size=tree_size,
            checkpoint=signed.text,
            key_id=signed.key_id,
            signature=signed.signature,
            fetched_at=fetched_at,
        )
    )


@dataclasses.dataclass(frozen=True)
class Conflict:
    """Two heads of one peer's log that cannot both be true."""

    node_id: str
    seen_at: int
    reason: str
    held: SignedTreeHead
    offered: SignedTreeHead
    # The consistency proof the node gave that does not verify (empty when the
    # two heads contradict each other by themselves: same size, another root).
    proof: tuple[bytes, ...] = ()


def insert_conflict(connection: Connection, conflict: Conflict) -> None:
    connection.execute(
        insert(_conflicts).values(
            node_id=conflict.node_id,
            seen_at=conflict.seen_at,
            reason=conflict.reason[:500],
            held_checkpoint=conflict.held.text,
            held_key_id=conflict.held.key_id,
            held_signature=conflict.held.signature,
            offered_checkpoint=conflict.offered.text,
            offered_key_id=conflict.offered.key_id,
            offered_signature=conflict.offered.signature,
            proof=b"".join(conflict.proof) or None,
        )
    )


def _hashes(packed: bytes) -> tuple[bytes, ...]:
    return tuple(packed[i : i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE))


def conflict_recorded(
    connection: Connection, node_id: str, held: SignedTreeHead, offered: SignedTreeHead
) -> bool:
    """Whether this very pair of heads is already on record as a conflict."""
    row = connection.execute(
        select(_conflicts.c.id)
        .where(
            _conflicts.c.node_id == node_id,
            _conflicts.c.held_checkpoint == held.text,
            _conflicts.c.offered_checkpoint == offered.text,
        )
        .limit(1)
    ).first()
    return row is not None


def conflicts(connection: Connection) -> list[Conflict]:
    rows = connection.execute(select(_conflicts).order_by(_conflicts.c.id))
    return [
        Conflict(
            node_id=row.node_id,
            seen_at=row.seen_at,
            reason=row.reason,
            held=SignedTreeHead(
                bytes(row.held_checkpoint), row.held_key_id, bytes(row.held_signature)
            ),
            offered=SignedTreeHead(
                bytes(row.offered_checkpoint), row.offered_key_id, bytes(row.offered_signature)
            ),
            proof=_hashes(bytes(row.proof or b"")),
        )
        for row in rows
    ]
