"""Appending to and reading the hash-chained audit log.

Appends are serialized through the single `audit_head` row: on PostgreSQL the
row is locked FOR UPDATE, on SQLite the write transaction already holds the
database lock. The sequence is therefore gapless and commits in order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Row, bindparam, insert, select, update

from exchange.audit import AuditRecord, ChainedEntry
from exchange.store.tables import AUDIT_ENTRIES as _entries
from exchange.store.tables import AUDIT_HEAD as _head

__all__ = ["append", "entries_after", "iter_entries", "lock", "size"]

_HEAD_ID = 1

# Statements are built once: building one per call costs several times what
# executing it does.
_READ_HEAD = (
    select(_head.c.sequence, _head.c.entry_hash).where(_head.c.id == _HEAD_ID).with_for_update()
)
_INSERT_ENTRY = insert(_entries)
_UPDATE_HEAD = (
    update(_head)
    .where(_head.c.id == _HEAD_ID)
    .values(sequence=bindparam("new_sequence"), entry_hash=bindparam("new_hash"))
)


def lock(connection: Connection) -> None:
    """Take the audit lock now, for a transaction that must not interleave with another."""
    if connection.execute(_READ_HEAD).one_or_none() is None:
        raise RuntimeError("audit_head row missing: the store is not migrated")


def append(connection: Connection, records: Sequence[AuditRecord]) -> list[int]:
    """Append `records` in order; returns their sequence numbers."""
    row = connection.execute(_READ_HEAD).one_or_none()
    if row is None:
        raise RuntimeError("audit_head row missing: the store is not migrated")
    sequence, previous = row.sequence, row.entry_hash
    chained = []
    for record in records:
        sequence += 1
        entry = ChainedEntry.chain(previous, sequence, record)
        chained.append(entry)
        previous = entry.entry_hash
    if chained:
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
                    "previous_hash": e.previous_hash,
                    "entry_hash": e.entry_hash,
                }
                for e in chained
            ],
        )
        connection.execute(_UPDATE_HEAD, {"new_sequence": sequence, "new_hash": previous})
    return [e.sequence for e in chained]


def _entry(row: Row[Any]) -> ChainedEntry:
    return ChainedEntry(
        sequence=row.sequence,
        occurred_at_ms=row.occurred_at,
        actor=row.actor,
        action=row.action,
        message_id=row.message_id,
        peer_node_id=row.peer_node_id,
        details_json=row.details,
        previous_hash=row.previous_hash,
        entry_hash=row.entry_hash,
    )


def entries_after(connection: Connection, after: int, limit: int) -> list[ChainedEntry]:
    rows = connection.execute(
        select(_entries)
        .where(_entries.c.sequence > after)
        .order_by(_entries.c.sequence)
        .limit(limit)
    )
    return [_entry(row) for row in rows]


def iter_entries(connection: Connection, batch: int = 5000) -> Iterator[ChainedEntry]:
    """Every entry in sequence order, fetched in batches."""
    after = 0
    while True:
        page = entries_after(connection, after, batch)
        yield from page
        if len(page) < batch:
            return
        after = page[-1].sequence


def size(connection: Connection) -> int:
    row = connection.execute(select(_head.c.sequence).where(_head.c.id == _HEAD_ID)).one_or_none()
    return 0 if row is None else int(row.sequence)
