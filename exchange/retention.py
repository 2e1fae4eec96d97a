"""Retention: at the end of a notice's retention, its content goes; a tombstone stays.

The handling code of every notice sets its retention in days (OPSC art. 8:
keep no more than the purpose needs), counted from receipt for what a node
received and from creation for what it sent. The purge deletes the sealed
content and any restricted sections held back, and keeps the tombstone: the
notice row (ids, kind, dates), the signed header, the signature and the
digests, so the audit record stays verifiable: a receipt or audit entry that
names an envelope digest can still be checked against the stored digest
column and the signed header, though the content is gone. A disclosure grant
that carried sections of a purged notice is purged with it. Each purge is
audited.

It runs inside `serve` (every `retention.purge_interval_seconds`) and as
`exchange node purge`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection

from exchange.audit import AuditRecord
from exchange.clock import to_millis
from exchange.store import audit_log, lifecycle
from exchange.store.notices import INCOMING, stored_digest

__all__ = ["PURGE_BATCH", "purge_batch"]

PURGE_BATCH = 500


def purge_batch(connection: Connection, *, now: dt.datetime, actor: str) -> int:
    """Purge up to PURGE_BATCH notices whose retention has ended; returns how many."""
    millis = to_millis(now)
    records: list[AuditRecord] = []

    def purged(message_id: str, direction: str, digest: bytes, **details: str) -> None:
        records.append(
            AuditRecord(
                occurred_at=now,
                actor=actor,
                action="notice.purged",
                message_id=message_id,
                details={"direction": direction, "envelope_digest": digest.hex(), **details},
            )
        )

    for notice in lifecycle.due_for_purge(connection, now=millis, limit=PURGE_BATCH):
        if not lifecycle.purge(connection, notice.message_id, millis):
            continue
        purged(notice.message_id, notice.direction, notice.digest)
        # Grants carry sections of the notice: they go with it.
        for grant_id in lifecycle.disclosures_about(connection, notice.message_id):
            if lifecycle.purge(connection, grant_id, millis):
                digest = stored_digest(connection, grant_id) or b""
                purged(grant_id, INCOMING, digest, discloses=notice.message_id)
    audit_log.append(connection, records)
    return len(records)
