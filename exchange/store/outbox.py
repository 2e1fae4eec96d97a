"""The sending side: outgoing notices and the transactional outbox.

A submission writes the notice, its envelope and one outbox row per recipient
in the caller's transaction. Delivery workers claim due rows with a lease
(FOR UPDATE SKIP LOCKED on PostgreSQL, so several processes never take the same
row); a worker that dies leaves its rows to be claimed again when the lease
ends. Only a verified receipt, an authentic rejection or expiry ends a row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, bindparam, case, func, insert, select, update

from exchange.clock import to_millis
from exchange.envelope import Envelope, Header
from exchange.receipt import SignedReceipt
from exchange.store import coordination
from exchange.store.notices import OUTGOING, insert_notice
from exchange.store.tables import ENVELOPES, NOTICES, OUTBOX, RECEIPTS, SUPERSEDED_ENVELOPES

__all__ = [
    "DeliveryRecord",
    "Landing",
    "OutboxItem",
    "Submission",
    "batch_bytes",
    "cancel_pending",
    "claim_due",
    "claim_probe",
    "delivery_status",
    "fail",
    "find_submission",
    "insert_outgoing",
    "next_due_at",
    "postpone",
    "postpone_peer",
    "record_receipts",
    "release",
    "release_and_resume",
    "replace_envelope",
    "resume_peer",
    "retry_later",
    "superseded_envelopes",
]

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
# At most this many bytes of envelopes in one claimed batch (64 rows of bulk
# referrals near the 24 MiB limit would otherwise be held at once, 1.5 GiB).
CLAIM_BYTES = 32 * 2**20


@dataclasses.dataclass(frozen=True)
class Submission:
    """An accepted submission, as its authority client is told about it."""

    message_id: str
    recipient_node_ids: tuple[str, ...]
    created_at: int
    expires_at: int
    request_digest: bytes | None = None


# Statements are built once (see store/notices.py).
def batch_bytes(envelope: Envelope) -> int:
    """What an envelope weighs in a delivery batch (against CLAIM_BYTES), as `_DUE`
    measures a stored one."""
    return len(envelope.header) + len(envelope.sealed_payload)


_INSERT_OUTBOX = insert(OUTBOX).returning(OUTBOX.c.id, OUTBOX.c.recipient_node_id)
_INSERT_RECEIPT = insert(RECEIPTS)
_FIND_SUBMISSION = select(
    NOTICES.c.message_id,
    NOTICES.c.recipient_node_ids,
    NOTICES.c.created_at,
    NOTICES.c.expires_at,
    NOTICES.c.request_digest,
).where(
    NOTICES.c.client_id == bindparam("client_id"),
    NOTICES.c.client_request_id == bindparam("client_request_id"),
)
_CLAIMABLE = (
    select(
        OUTBOX.c.id,
        OUTBOX.c.message_id,
        OUTBOX.c.recipient_node_id,
        OUTBOX.c.attempts,
        NOTICES.c.expires_at,
        # What a batch holds in memory (batch_bytes): the signature and digest add 96 bytes.
        (func.length(ENVELOPES.c.header) + func.length(ENVELOPES.c.sealed_payload)).label("size"),
    )
    .join(NOTICES, NOTICES.c.message_id == OUTBOX.c.message_id)
    .join(ENVELOPES, ENVELOPES.c.message_id == OUTBOX.c.message_id)
    .where(OUTBOX.c.state == PENDING, OUTBOX.c.lease_until <= bindparam("now"))
    .order_by(OUTBOX.c.next_attempt_at, OUTBOX.c.id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True, of=OUTBOX)
)
_DUE = _CLAIMABLE.where(OUTBOX.c.next_attempt_at <= bindparam("now"))
# A peer's waiting rows, due or not: the oldest due first (see `claim_probe`).
_PROBE = _CLAIMABLE.where(OUTBOX.c.recipient_node_id == bindparam("recipient_node_id"))
_CLAIMED_ENVELOPES = select(
    ENVELOPES.c.message_id,
    ENVELOPES.c.header,
    ENVELOPES.c.sealed_payload,
    ENVELOPES.c.signature,
    ENVELOPES.c.digest,
).where(ENVELOPES.c.message_id.in_(bindparam("message_ids", expanding=True)))
_LEASE = (
    update(OUTBOX)
    .where(OUTBOX.c.id.in_(bindparam("ids", expanding=True)))
    .values(lease_until=bindparam("lease_until"))
)
_READY_AT = case(
    (OUTBOX.c.lease_until > OUTBOX.c.next_attempt_at, OUTBOX.c.lease_until),
    else_=OUTBOX.c.next_attempt_at,
)
_NEXT_DUE = select(func.min(_READY_AT)).where(OUTBOX.c.state == PENDING)
_STILL_PENDING = (OUTBOX.c.id == bindparam("outbox_id"), OUTBOX.c.state == PENDING)
# Each attempt's outcome: the row ends (delivered or failed), or waits for the next attempt.
_OUTCOME = {
    "attempts": OUTBOX.c.attempts + 1,
    "lease_until": 0,
    "state": bindparam("new_state"),
    "last_error": bindparam("error"),
    "updated_at": bindparam("now"),
}
_END = update(OUTBOX).where(*_STILL_PENDING).values(**_OUTCOME)
# A receipt also lands on a row its withdrawal cancelled while the envelope was in
# flight: the recipient has the notice, and that disclosure must be on record.
WITHDRAWN_BEFORE_DELIVERY = "withdrawn before delivery"
_LAND = (
    update(OUTBOX)
    .where(
        OUTBOX.c.id.in_(bindparam("ids", expanding=True)),
        (OUTBOX.c.state == PENDING) | (OUTBOX.c.last_error == WITHDRAWN_BEFORE_DELIVERY),
    )
    .values(**_OUTCOME)
    .returning(OUTBOX.c.id)
)
# Due again at a new time, unattempted (a peer known down); and after a failed attempt.
_POSTPONE = (
    update(OUTBOX)
    .where(*_STILL_PENDING)
    .values(
        lease_until=0,
        next_attempt_at=bindparam("next_attempt_at"),
        last_error=bindparam("error"),
        updated_at=bindparam("now"),
    )
)
_RESCHEDULE = _POSTPONE.values(attempts=OUTBOX.c.attempts + 1)
_STATUS = (
    select(
        OUTBOX.c.recipient_node_id,
        OUTBOX.c.state,
        OUTBOX.c.attempts,
        OUTBOX.c.next_attempt_at,
        OUTBOX.c.last_error,
        RECEIPTS.c.body,
        RECEIPTS.c.signature,
    )
    .outerjoin(
        RECEIPTS,
        (RECEIPTS.c.message_id == OUTBOX.c.message_id)
        & (RECEIPTS.c.recipient_node_id == OUTBOX.c.recipient_node_id),
    )
    .where(OUTBOX.c.message_id == bindparam("message_id"))
    .order_by(OUTBOX.c.id)
)


def insert_outgoing(
    connection: Connection,
    *,
    header: Header,
    envelope: Envelope,
    client_id: str | None,
    client_request_id: str | None,
    request_digest: bytes | None,
    now: int,
    origin_message_id: str | None = None,
    lease_until: int = 0,
) -> list[OutboxItem]:
    """Insert the notice, its envelope and its outbox rows; returns the rows.

    Args:
        origin_message_id: for a forwarded copy, the received notice it copies.
        lease_until: the rows are born claimed, until then, by the worker that
            will be handed them once they are committed (0: due for any worker).
    """
    insert_notice(
        connection,
        header,
        envelope,
        direction=OUTGOING,
        state="sent",
        client_id=client_id,
        client_request_id=client_request_id,
        request_digest=request_digest,
        origin_message_id=origin_message_id,
    )
    rows = connection.execute(
        _INSERT_OUTBOX,
        [
            {
                "message_id": header.message_id,
                "recipient_node_id": recipient,
                "state": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "lease_until": lease_until,
                "last_error": "",
                "updated_at": now,
            }
            for recipient in header.recipient_node_ids
        ],
    )
    expires_at = to_millis(header.expires_at)
    return [
        OutboxItem(
            outbox_id=row.id,
            message_id=header.message_id,
            recipient_node_id=row.recipient_node_id,
            attempts=0,
            expires_at=expires_at,
            envelope=envelope,
            envelope_digest=envelope.digest(),
            lease_until=lease_until,
        )
        for row in rows
    ]


def find_submission(
    connection: Connection, client_id: str, client_request_id: str
) -> Submission | None:
    """The earlier submission with this idempotency key, if any."""
    row = connection.execute(
        _FIND_SUBMISSION, {"client_id": client_id, "client_request_id": client_request_id}
    ).one_or_none()
    if row is None:
        return None
    return Submission(
        message_id=row.message_id,
        recipient_node_ids=tuple(row.recipient_node_ids.split(",")),
        created_at=row.created_at,
        expires_at=row.expires_at,
        request_digest=row.request_digest,
    )


@dataclasses.dataclass(frozen=True)
class OutboxItem:
    """One claimed delivery: which envelope goes to which recipient."""

    outbox_id: int
    message_id: str
    recipient_node_id: str
    attempts: int
    expires_at: int
    envelope: Envelope
    envelope_digest: bytes
    lease_until: int


def claim_due(
    connection: Connection, *, now: int, lease_ms: int, limit: int, max_bytes: int = CLAIM_BYTES
) -> list[OutboxItem]:
    """Claim up to `limit` pending rows that are due and not leased, oldest first.

    A claimed batch's envelopes are held in memory together, so the claim stops
    before their bytes pass `max_bytes` (an envelope counted once however many of
    its recipients are claimed; the first row is taken whatever its size). The
    rows left are claimed by the next batch.
    """
    rows = connection.execute(_DUE, {"now": now, "limit": limit}).all()
    return _lease(connection, rows, now=now, lease_ms=lease_ms, max_bytes=max_bytes)


def claim_probe(
    connection: Connection, recipient_node_id: str, *, now: int, lease_ms: int
) -> list[OutboxItem]:
    """Claim the one row to `recipient_node_id` due first, due yet or not (none if
    every row to it is ended or leased).

    For a peer known down, whose rows are parked (see `postpone_peer`): when its
    next try comes, one envelope tries it, and an answer makes the rest due.
    """
    rows = connection.execute(
        _PROBE, {"now": now, "limit": 1, "recipient_node_id": recipient_node_id}
    ).all()
    return _lease(connection, rows, now=now, lease_ms=lease_ms, max_bytes=CLAIM_BYTES)


def _lease(
    connection: Connection, rows: Sequence[Any], *, now: int, lease_ms: int, max_bytes: int
) -> list[OutboxItem]:
    """Lease the claimed `rows` (up to `max_bytes` of envelopes); the items to send."""
    counted: set[str] = set()
    total = 0
    for index, row in enumerate(rows):
        size = 0 if row.message_id in counted else int(row.size)
        if index and total + size > max_bytes:
            rows = rows[:index]
            break
        counted.add(row.message_id)
        total += size
    if not rows:
        return []
    lease_until = now + lease_ms
    connection.execute(_LEASE, {"ids": [row.id for row in rows], "lease_until": lease_until})
    envelopes = {
        row.message_id: (
            Envelope(bytes(row.header), bytes(row.sealed_payload), bytes(row.signature)),
            bytes(row.digest),
        )
        for row in connection.execute(_CLAIMED_ENVELOPES, {"message_ids": sorted(counted)})
    }
    return [
        OutboxItem(
            outbox_id=row.id,
            message_id=row.message_id,
            recipient_node_id=row.recipient_node_id,
            attempts=row.attempts,
            expires_at=row.expires_at,
            envelope=envelopes[row.message_id][0],
            envelope_digest=envelopes[row.message_id][1],
            lease_until=lease_until,
        )
        for row in rows
    ]


def next_due_at(connection: Connection) -> int | None:
    """When the earliest pending row becomes due (ignoring leases), if any."""
    value = connection.execute(_NEXT_DUE).scalar()
    return None if value is None else int(value)


def _end(connection: Connection, outbox_id: int, state: str, error: str, now: int) -> bool:
    result = connection.execute(
        _END, {"outbox_id": outbox_id, "new_state": state, "error": error[:500], "now": now}
    )
    return result.rowcount == 1


@dataclasses.dataclass(frozen=True)
class Landing:
    """A verified receipt for one outbox row, about to end it."""

    outbox_id: int
    message_id: str
    recipient_node_id: str
    receipt: SignedReceipt
    accepted: bool
    received_at: int
    # The row's last error: empty, or why the recipient rejected the envelope.
    error: str
    now: int


def record_receipts(connection: Connection, landings: Sequence[Landing]) -> set[int]:
    """Store verified receipts and end their rows: delivered, or failed if they reject.

    A few statements for the whole batch, not two per row: on PostgreSQL each
    statement is a round trip of the store's one writer.

    Returns:
        The outbox ids that were ended. Not those no longer pending (another
        worker finished them), unless a withdrawal cancelled them meanwhile.
    """
    alike: dict[tuple[str, str, int], list[int]] = {}
    for landing in landings:
        state = DELIVERED if landing.accepted else FAILED
        alike.setdefault((state, landing.error[:500], landing.now), []).append(landing.outbox_id)
    ended: set[int] = set()
    for (state, error, now), ids in alike.items():
        rows = connection.execute(
            _LAND, {"ids": ids, "new_state": state, "error": error, "now": now}
        )
        ended.update(row.id for row in rows)
    stored = [landing for landing in landings if landing.outbox_id in ended]
    if stored:
        connection.execute(
            _INSERT_RECEIPT,
            [
                {
                    "message_id": landing.message_id,
                    "recipient_node_id": landing.recipient_node_id,
                    "body": landing.receipt.body,
                    "signature": landing.receipt.signature,
                    "accepted": landing.accepted,
                    "received_at": landing.received_at,
                }
                for landing in stored
            ],
        )
    return ended


_REPLACE_ENVELOPE = (
    update(ENVELOPES)
    .where(
        ENVELOPES.c.message_id == bindparam("of_message"),
        ENVELOPES.c.digest == bindparam("previous_digest"),
    )
    .values(
        header=bindparam("new_header"),
        signature=bindparam("new_signature"),
        digest=bindparam("new_digest"),
    )
)


def replace_envelope(
    connection: Connection, message_id: str, *, previous: Envelope, envelope: Envelope, now: int
) -> bool:
    """Store a re-signed envelope of an outgoing notice in place of `previous`.

    The sealed payload is the same and stays; `previous`'s header and signature
    are kept as superseded (recipients served before hold them). Compare-and-swap:
    False, and nothing changed, if the stored envelope is no longer `previous`.
    """
    previous_digest = previous.digest()
    result = connection.execute(
        _REPLACE_ENVELOPE,
        {
            "of_message": message_id,
            "previous_digest": previous_digest,
            "new_header": envelope.header,
            "new_signature": envelope.signature,
            "new_digest": envelope.digest(),
        },
    )
    if result.rowcount != 1:
        return False
    connection.execute(
        insert(SUPERSEDED_ENVELOPES).values(
            digest=previous_digest,
            message_id=message_id,
            header=previous.header,
            signature=previous.signature,
            superseded_at=now,
        )
    )
    return True


def superseded_envelopes(connection: Connection, message_id: str) -> list[Envelope]:
    """Earlier signings of an outgoing envelope, oldest first, with its current payload."""
    payload = connection.execute(
        select(ENVELOPES.c.sealed_payload).where(ENVELOPES.c.message_id == message_id)
    ).scalar_one_or_none()
    rows = connection.execute(
        select(SUPERSEDED_ENVELOPES)
        .where(SUPERSEDED_ENVELOPES.c.message_id == message_id)
        .order_by(SUPERSEDED_ENVELOPES.c.superseded_at)
    )
    return [Envelope(row.header, payload or b"", row.signature) for row in rows]


def retry_later(
    connection: Connection, *, outbox_id: int, error: str, next_attempt_at: int, now: int
) -> None:
    connection.execute(
        _RESCHEDULE,
        {
            "outbox_id": outbox_id,
            "next_attempt_at": next_attempt_at,
            "error": error[:500],
            "now": now,
        },
    )


def postpone(connection: Connection, due: Mapping[int, int], *, error: str, now: int) -> None:
    """Put rows back unattempted: outbox id -> when it is due again (epoch ms).

    For rows whose peer is known to be down: no attempt is counted, and `error`
    says why they wait. Only pending rows are touched.
    """
    connection.execute(
        _POSTPONE,
        [
            {"outbox_id": outbox_id, "next_attempt_at": at, "error": error[:500], "now": now}
            for outbox_id, at in due.items()
        ],
    )


def _waiting_for(recipient_node_id: str | None, now: int) -> tuple[ColumnElement[bool], ...]:
    """The pending rows to a peer (None: to any) that no worker holds (a holder records
    their outcome)."""
    waiting = (OUTBOX.c.state == PENDING, OUTBOX.c.lease_until <= now)
    if recipient_node_id is None:
        return waiting
    return (OUTBOX.c.recipient_node_id == recipient_node_id, *waiting)


def postpone_peer(
    connection: Connection, recipient_node_id: str, *, until: int, error: str, now: int
) -> int:
    """Put off to `until` every pending row to `recipient_node_id` due before it; how many.

    For a peer found down: its backlog is parked in one statement, rather than
    claimed and put back batch by batch, until an answer to a probe of the peer
    (`claim_probe`) resumes it (`resume_peer`) or the park ends. Leased rows are
    left to their holders, and rows that expire before `until` keep their time
    (the failure is reported when it happens).
    """
    result = connection.execute(
        update(OUTBOX)
        .where(
            *_waiting_for(recipient_node_id, now),
            OUTBOX.c.next_attempt_at < until,
            OUTBOX.c.message_id.in_(
                select(NOTICES.c.message_id).where(NOTICES.c.expires_at > until)
            ),
        )
        .values(next_attempt_at=until, last_error=error[:500], updated_at=now)
    )
    return result.rowcount


def resume_peer(connection: Connection, recipient_node_id: str | None, *, now: int) -> int:
    """Make every pending row to `recipient_node_id` that waits past `now` due now; how many.

    For a peer that has just answered after an outage: its backlog, parked
    (`postpone_peer`, `postpone`) or waiting for each row's own backoff, goes now
    rather than at each row's time. Leased rows are left to their holders.

    Args:
        recipient_node_id: None for every peer's rows: for a store where no process
            can know a peer down (a SQLite node starting; a restored backup), whose
            parked rows would otherwise wait for their park to end.
    """
    result = connection.execute(
        update(OUTBOX)
        .where(*_waiting_for(recipient_node_id, now), OUTBOX.c.next_attempt_at > now)
        .values(next_attempt_at=now, updated_at=now)
    )
    # The node's other processes (PostgreSQL) hear of it too: only INSERTs are marked.
    coordination.mark_changed(connection, coordination.OUTBOX)
    return result.rowcount


def fail(connection: Connection, *, outbox_id: int, error: str, now: int) -> bool:
    """End the row as failed (expired undelivered). False if it was no longer pending."""
    return _end(connection, outbox_id, FAILED, error, now)


def cancel_pending(connection: Connection, message_id: str, now: int) -> int:
    """End the pending deliveries of a withdrawn notice: what was not sent stays unsent.

    A delivery already in flight may still land; its recipient gets the withdrawal too.
    """
    result = connection.execute(
        update(OUTBOX)
        .where(OUTBOX.c.message_id == message_id, OUTBOX.c.state == PENDING)
        .values(state=FAILED, lease_until=0, last_error=WITHDRAWN_BEFORE_DELIVERY, updated_at=now)
    )
    return result.rowcount


@dataclasses.dataclass(frozen=True)
class DeliveryRecord:
    recipient_node_id: str
    state: str
    attempts: int
    next_attempt_at: int
    last_error: str
    receipt: SignedReceipt | None


def delivery_status(connection: Connection, message_id: str) -> list[DeliveryRecord]:
    """Per-recipient delivery of an outgoing notice (empty if there is none)."""
    rows = connection.execute(_STATUS, {"message_id": message_id})
    return [_delivery(row) for row in rows]


def _delivery(row: Any) -> DeliveryRecord:
    return DeliveryRecord(
        recipient_node_id=row.recipient_node_id,
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
        receipt=None if row.body is None else SignedReceipt(bytes(row.body), bytes(row.signature)),
    )


def release(connection: Connection, now: int, outbox_ids: list[int] | None = None) -> int:
    """Put claimed rows back at once; how many.

    Args:
        outbox_ids: a stopping worker's unfinished rows; None for every leased row,
            which only a store no process serves from may ask (after a restore, the
            leases belong to processes now gone).

    Only pending rows are released: one whose outcome was recorded meanwhile stays
    ended. While a lease lasts no other worker can have claimed the row.
    """
    leased = [OUTBOX.c.state == PENDING, OUTBOX.c.lease_until > 0]
    if outbox_ids is not None:
        leased.append(OUTBOX.c.id.in_(outbox_ids))
    result = connection.execute(update(OUTBOX).where(*leased).values(lease_until=0, updated_at=now))
    return result.rowcount


def release_and_resume(connection: Connection, now: int) -> int:
    """Release every lease and make every waiting row due now (`release` and
    `resume_peer` of every peer); how many rows were leased.

    Only for a store no process serves from: its leases and parked rows belong to
    processes now gone, and its peers are found down again, or not, at once.
    """
    released = release(connection, now)
    resume_peer(connection, None, now=now)
    return released
