"""The receiving side: incoming notices, our own receipts, and inbox events."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, bindparam, insert, select, tuple_, update

from exchange.envelope import Envelope, Header
from exchange.receipt import SignedReceipt
from exchange.store.notices import INCOMING, NoticeRecord, insert_notices, load_envelope
from exchange.store.tables import INBOX_EVENTS, NOTICES, RECEIPTS

__all__ = [
    "InboxEvent",
    "Incoming",
    "events_after",
    "get_incoming",
    "insert_event",
    "insert_events",
    "insert_incoming",
    "insert_incoming_many",
    "list_inbox",
    "own_receipt",
    "set_state",
]

RECEIVED = "received"
READ = "read"
ACKNOWLEDGED = "acknowledged"
REJECTED = "rejected"

NOTICE_RECEIVED = "notice_received"
DELIVERY_FAILED = "delivery_failed"
AUDIT_INCONSISTENT = "audit_inconsistent"


# Statements are built once (see store/notices.py).
_OWN_RECEIPT = select(RECEIPTS.c.body, RECEIPTS.c.signature).where(
    RECEIPTS.c.message_id == bindparam("message_id"),
    RECEIPTS.c.recipient_node_id == bindparam("node_id"),
)
_INSERT_RECEIPT = insert(RECEIPTS)
_VISIBLE = (NOTICES.c.direction == INCOMING, NOTICES.c.state != REJECTED)
# The order of ix_notices_inbox, read backwards: a page is a range of that index.
_NEWEST_FIRST = (NOTICES.c.received_at.desc(), NOTICES.c.message_id.desc())
_FIRST_PAGE = select(NOTICES).where(*_VISIBLE).order_by(*_NEWEST_FIRST).limit(bindparam("limit"))
# A row value comparison, not (a < x OR a = x AND b < y): both engines seek the
# index to the cursor with it, where the OR made them walk every newer notice.
_NEXT_PAGE = (
    select(NOTICES)
    .where(
        *_VISIBLE,
        tuple_(NOTICES.c.received_at, NOTICES.c.message_id)
        < tuple_(bindparam("received_at"), bindparam("message_id")),
    )
    .order_by(*_NEWEST_FIRST)
    .limit(bindparam("limit"))
)
_GET_INCOMING = select(NOTICES).where(NOTICES.c.message_id == bindparam("message_id"), *_VISIBLE)
_SET_STATE = (
    update(NOTICES)
    .where(
        NOTICES.c.message_id == bindparam("target_id"),
        NOTICES.c.state.in_(bindparam("from_states", expanding=True)),
    )
    .values(state=bindparam("new_state"))
)
_INSERT_EVENT = insert(INBOX_EVENTS)
_EVENTS_AFTER = (
    select(INBOX_EVENTS)
    .where(INBOX_EVENTS.c.sequence > bindparam("after"))
    .order_by(INBOX_EVENTS.c.sequence)
    .limit(bindparam("limit"))
)


def own_receipt(connection: Connection, message_id: str, node_id: str) -> SignedReceipt | None:
    """The receipt this node signed for `message_id`, if it has seen it."""
    row = connection.execute(
        _OWN_RECEIPT, {"message_id": message_id, "node_id": node_id}
    ).one_or_none()
    return None if row is None else SignedReceipt(bytes(row.body), bytes(row.signature))


@dataclasses.dataclass(frozen=True)
class Incoming:
    """An authentic envelope to store as received, with the receipt this node signed."""

    header: Header
    envelope: Envelope
    receipt: SignedReceipt
    accepted: bool


def insert_incoming(
    connection: Connection,
    *,
    header: Header,
    envelope: Envelope,
    receipt: SignedReceipt,
    node_id: str,
    accepted: bool,
    received_at: int,
) -> None:
    """Store an authentic envelope as received, with the receipt this node signed.

    Rejected envelopes are kept too (state "rejected"), as evidence of what was
    refused and so that a retry gets the same signed answer, but without their
    sealed content: what this node refused it does not hold (a member could
    otherwise fill its store with content it will never read).

    Raises:
        sqlalchemy.exc.IntegrityError: the message id is already stored.
    """
    insert_incoming_many(
        connection,
        [Incoming(header, envelope, receipt, accepted)],
        node_id=node_id,
        received_at=received_at,
    )


def insert_incoming_many(
    connection: Connection, incoming: Sequence[Incoming], *, node_id: str, received_at: int
) -> None:
    """`insert_incoming` for many envelopes, one statement per table for the lot.

    Raises:
        sqlalchemy.exc.IntegrityError: a message id is already stored.
    """
    if not incoming:
        return
    insert_notices(
        connection,
        [
            (
                item.header,
                item.envelope,
                item.accepted,
                {
                    "direction": INCOMING,
                    "state": RECEIVED if item.accepted else REJECTED,
                    "received_at": received_at,
                },
            )
            for item in incoming
        ],
    )
    connection.execute(
        _INSERT_RECEIPT,
        [
            {
                "message_id": item.header.message_id,
                "recipient_node_id": node_id,
                "body": item.receipt.body,
                "signature": item.receipt.signature,
                "accepted": item.accepted,
                "received_at": received_at,
            }
            for item in incoming
        ],
    )


def list_inbox(
    connection: Connection, *, limit: int, before: tuple[int, str] | None
) -> list[NoticeRecord]:
    """Received notices, newest first, after the cursor (received_at, message_id)."""
    if before is None:
        rows = connection.execute(_FIRST_PAGE, {"limit": limit})
    else:
        received_at, message_id = before
        rows = connection.execute(
            _NEXT_PAGE, {"limit": limit, "received_at": received_at, "message_id": message_id}
        )
    return [NoticeRecord.from_row(row) for row in rows]


def get_incoming(connection: Connection, message_id: str) -> tuple[NoticeRecord, Envelope] | None:
    """A received (not rejected) notice and its envelope."""
    row = connection.execute(_GET_INCOMING, {"message_id": message_id}).one_or_none()
    if row is None:
        return None
    envelope = load_envelope(connection, message_id)
    assert envelope is not None, "every notice row has its envelope (foreign key)"
    return NoticeRecord.from_row(row), envelope


def set_state(
    connection: Connection, message_id: str, state: str, *, from_states: set[str]
) -> bool:
    result = connection.execute(
        _SET_STATE,
        {"target_id": message_id, "new_state": state, "from_states": sorted(from_states)},
    )
    return result.rowcount == 1


@dataclasses.dataclass(frozen=True)
class InboxEvent:
    sequence: int
    event_type: str
    message_id: str
    peer_node_id: str
    reason: str
    occurred_at: int

    @staticmethod
    def from_row(row: Row[Any]) -> InboxEvent:
        return InboxEvent(**row._mapping)


def insert_event(connection: Connection, event: InboxEvent) -> None:
    insert_events(connection, [event])


def insert_events(connection: Connection, events: Sequence[InboxEvent]) -> None:
    if events:
        connection.execute(_INSERT_EVENT, [dataclasses.asdict(event) for event in events])


def events_after(connection: Connection, after: int, limit: int) -> list[InboxEvent]:
    rows = connection.execute(_EVENTS_AFTER, {"after": after, "limit": limit})
    return [InboxEvent.from_row(row) for row in rows]
