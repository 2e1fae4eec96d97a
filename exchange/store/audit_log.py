"""Appending to the Merkle audit log, reading it, and answering proofs from it.

Appends are serialized through the single `audit_head` row: on PostgreSQL the
row is locked FOR UPDATE, on SQLite the write transaction already holds the
database lock. The sequence is therefore gapless and commits in order. The
row also holds the tree's right edge, so an append computes the new subtrees
without reading any other row; each leaf adds one row to `audit_entries` and,
on average, one to `audit_nodes`.

Any hash a proof needs is the fold of O(log n) stored complete subtrees
(`exchange.merkle.aligned_blocks`), fetched in two queries.

Inside a transaction begun by `Store`, appends are written once, last before
the commit (`exchange.store.pending`): a group commit of many writes reads the
head row once (under its lock) and writes the entries, nodes and head once.
Every read of the log in the same transaction writes what is pending first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Row, bindparam, insert, select, tuple_, update

from exchange import merkle
from exchange.audit import AuditRecord, LoggedEntry
from exchange.store import pending
from exchange.store.engine import AsyncStore
from exchange.store.tables import AUDIT_ENTRIES as _entries
from exchange.store.tables import AUDIT_HEAD as _head
from exchange.store.tables import AUDIT_NODES as _nodes

__all__ = [
    "append",
    "consistency_path",
    "entries_after",
    "entries_for_message",
    "entry",
    "inclusion_path",
    "iter_entries",
    "lock",
    "root",
    "size",
]

_HEAD_ID = 1

# Statements are built once: building one per call costs several times what
# executing it does.
_READ_EDGE = select(_head.c.sequence, _head.c.frontier).where(_head.c.id == _HEAD_ID)
_READ_HEAD = _READ_EDGE.with_for_update()
_INSERT_ENTRY = insert(_entries)
_INSERT_NODE = insert(_nodes)
_UPDATE_HEAD = (
    update(_head)
    .where(_head.c.id == _HEAD_ID)
    .values(sequence=bindparam("new_sequence"), frontier=bindparam("new_frontier"))
)


# The name of this transaction's appends in `pending`.
_PENDING = "audit_log"


@dataclasses.dataclass(frozen=True)
class _Appended:
    """The log as this transaction left it: its right edge, and what is not yet written."""

    frontier: merkle.Frontier
    entries: tuple[LoggedEntry, ...] = ()
    nodes: tuple[tuple[int, int, bytes], ...] = ()


def _locked(connection: Connection) -> _Appended:
    """The log's state in this transaction; the first call reads (and locks) the head."""
    held: _Appended | None = pending.get(connection, _PENDING)
    if held is not None:
        return held
    row = connection.execute(_READ_HEAD).one_or_none()
    if row is None:
        raise RuntimeError("audit_head row missing: the store is not migrated")
    held = _Appended(merkle.Frontier.from_bytes(row.sequence, row.frontier))
    if pending.defers(connection):
        # The lock is held until the transaction ends: no one else moves the head.
        pending.put(connection, _PENDING, held, _write)
    return held


def _write(connection: Connection, appended: _Appended) -> _Appended:
    """Write the pending entries, their new subtrees and the head; returns the state after."""
    if not appended.entries:
        return appended
    connection.execute(
        _INSERT_ENTRY,
        [
            {
                "sequence": e.sequence,
                "occurred_at": e.occurred_at_ms,
                "actor": e.actor,
                "action": e.action,
                "message_id": e.message_id,
                "peer_node_id": e.peer_node_id,
                "details": e.details_json,
                "leaf_hash": e.leaf_hash,
            }
            for e in appended.entries
        ],
    )
    if appended.nodes:
        connection.execute(
            _INSERT_NODE,
            [{"level": lv, "node_index": ix, "hash": h} for lv, ix, h in appended.nodes],
        )
    frontier = appended.frontier
    connection.execute(
        _UPDATE_HEAD, {"new_sequence": frontier.size, "new_frontier": frontier.to_bytes()}
    )
    return _Appended(frontier)


def _written(connection: Connection) -> None:
    """Write this transaction's pending appends, before reading the log."""
    pending.flush(connection, _PENDING)


def lock(connection: Connection) -> None:
    """Take the audit lock now, for a transaction that must not interleave with another."""
    _locked(connection)


async def record(store: AsyncStore, *records: AuditRecord) -> None:
    """Append `records` in a transaction of their own: an event with nothing else to write."""
    await store.write(lambda connection: append(connection, records))


def append(connection: Connection, records: Sequence[AuditRecord]) -> list[int]:
    """Append `records` in order; returns their sequence numbers."""
    held = _locked(connection)
    frontier = held.frontier
    entries, nodes = [], []
    for record in records:
        logged = LoggedEntry.of(frontier.size + 1, record)
        frontier, created = frontier.append(logged.leaf_hash)
        entries.append(logged)
        nodes.extend(created)
    if not entries:
        return []
    appended = _Appended(frontier, (*held.entries, *entries), (*held.nodes, *nodes))
    if pending.defers(connection):
        pending.put(connection, _PENDING, appended, _write)
    else:
        _write(connection, appended)
    return [e.sequence for e in entries]


def _entry(row: Row[Any]) -> LoggedEntry:
    return LoggedEntry(
        sequence=row.sequence,
        occurred_at_ms=row.occurred_at,
        actor=row.actor,
        action=row.action,
        message_id=row.message_id,
        peer_node_id=row.peer_node_id,
        details_json=row.details,
        leaf_hash=row.leaf_hash,
    )


def entries_after(connection: Connection, after: int, limit: int) -> list[LoggedEntry]:
    _written(connection)
    rows = connection.execute(
        select(_entries)
        .where(_entries.c.sequence > after)
        .order_by(_entries.c.sequence)
        .limit(limit)
    )
    return [_entry(row) for row in rows]


def entry(connection: Connection, sequence: int) -> LoggedEntry | None:
    _written(connection)
    row = connection.execute(select(_entries).where(_entries.c.sequence == sequence)).one_or_none()
    return None if row is None else _entry(row)


def entries_for_message(connection: Connection, message_id: str) -> list[LoggedEntry]:
    _written(connection)
    rows = connection.execute(
        select(_entries).where(_entries.c.message_id == message_id).order_by(_entries.c.sequence)
    )
    return [_entry(row) for row in rows]


def iter_entries(connection: Connection, batch: int = 5000) -> Iterator[LoggedEntry]:
    """Every entry in sequence order, fetched in batches."""
    after = 0
    while True:
        page = entries_after(connection, after, batch)
        yield from page
        if len(page) < batch:
            return
        after = page[-1].sequence


def size(connection: Connection) -> int:
    _written(connection)
    row = connection.execute(select(_head.c.sequence).where(_head.c.id == _HEAD_ID)).one_or_none()
    return 0 if row is None else int(row.sequence)


def _range_hashes(connection: Connection, ranges: Sequence[merkle.Range]) -> list[bytes]:
    """The MTH of each leaf range, from the stored leaves and subtrees."""
    _written(connection)
    blocks = {r: merkle.aligned_blocks(*r) for r in ranges}
    wanted = {block for run in blocks.values() for block in run}
    leaves = [index + 1 for level, index in wanted if level == 0]
    inner = [(level, index) for level, index in wanted if level > 0]
    found: dict[tuple[int, int], bytes] = {}
    if leaves:
        rows = connection.execute(
            select(_entries.c.sequence, _entries.c.leaf_hash).where(_entries.c.sequence.in_(leaves))
        )
        found.update({(0, row.sequence - 1): row.leaf_hash for row in rows})
    if inner:
        rows = connection.execute(
            select(_nodes).where(tuple_(_nodes.c.level, _nodes.c.node_index).in_(inner))
        )
        found.update({(row.level, row.node_index): row.hash for row in rows})
    missing = wanted - found.keys()
    if missing:
        raise RuntimeError(f"audit tree is missing stored subtrees {sorted(missing)[:3]}")
    return [merkle.fold([found[block] for block in blocks[r]]) for r in ranges]


def root(connection: Connection, tree_size: int) -> bytes:
    """The root hash of the log's first `tree_size` entries."""
    if tree_size == 0:
        return merkle.EMPTY_ROOT
    _written(connection)
    head = connection.execute(_READ_EDGE).one_or_none()
    if head is not None and head.sequence == tree_size:
        # The whole log (a new head's case): its right edge folds to the root.
        return merkle.Frontier.from_bytes(head.sequence, head.frontier).root()
    (value,) = _range_hashes(connection, [(0, tree_size)])
    return value


def inclusion_path(connection: Connection, sequence: int, tree_size: int) -> list[bytes]:
    """The inclusion proof of entry `sequence` in the tree of `tree_size` (sizes checked)."""
    return _range_hashes(connection, merkle.inclusion_ranges(sequence - 1, tree_size))


def consistency_path(connection: Connection, first: int, second: int) -> list[bytes]:
    """The proof that the tree of `first` entries is a prefix of the one of `second`."""
    return _range_hashes(connection, merkle.consistency_ranges(first, second))
