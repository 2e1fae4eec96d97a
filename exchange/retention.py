"""Retention: at the end of a notice's retention, its content goes; a tombstone stays.

The handling code of every notice sets its retention in days (OPSC art. 8:
keep no more than the purpose needs), counted from receipt for what a node
received and from creation for what it sent. The purge deletes the sealed
content and any restricted sections held back, and keeps the tombstone: the
notice row (ids, kind, dates), the signed header, the signature and the
digests, so the audit record stays verifiable. Each purge is audited.

It runs inside `serve` (every `retention.purge_interval_seconds`) and as
`exchange node purge`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection

from exchange.audit import AuditRecord
from exchange.clock import to_millis
from exchange.store import audit_log, lifecycle

__all__ = ["PURGE_BATCH", "purge_batch"]

PURGE_BATCH = 500


def purge_batch(connection: Connection, *, now: dt.datetime, actor: str) -> int:
    """Purge up to PURGE_BATCH notices whose retention has ended; returns how many."""
    millis = to_millis(now)
    due = lifecycle.due_for_purge(connection, now=millis, limit=PURGE_BATCH)
    records = [
        AuditRecord(
            occurred_at=now,
            actor=actor,
            action="notice.purged",
            message_id=notice.message_id,
            details={"direction": notice.direction, "envelope_digest": notice.digest.hex()},
        )
        for notice in due
        if lifecycle.purge(connection, notice.message_id, millis)
    ]
    audit_log.append(connection, records)
    return len(records)
