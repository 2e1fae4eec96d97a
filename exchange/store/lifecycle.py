"""After delivery: restricted sections, onward consents, replies, overdue requests, purges."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import aliased

from exchange.store.notices import INCOMING, OUTGOING
from exchange.store.tables import (
    ENVELOPES,
    NOTICES,
    ONWARD_CONSENTS,
    OUTBOX,
    RESTRICTED_SECTIONS,
)

__all__ = [
    "HeldSection",
    "Overdue",
    "Purgeable",
    "consented_nodes",
    "due_for_purge",
    "insert_sections",
    "load_sections",
    "overdue_requests",
    "purge",
    "record_consents",
    "replies",
    "set_deadline",
]

WITHDRAWN = "withdrawn"
PURGED = "purged"
_GONE = (WITHDRAWN, PURGED, "rejected")


@dataclasses.dataclass(frozen=True)
class HeldSection:
    """A restricted section as the originator holds it: sealed to its own key."""

    section_id: str
    section_type: int
    salt: bytes
    sealed: bytes


def insert_sections(
    connection: Connection, message_id: str, sections: Sequence[HeldSection]
) -> None:
    if sections:
        connection.execute(
            insert(RESTRICTED_SECTIONS),
            [
                {
                    "message_id": message_id,
                    "section_id": s.section_id,
                    "section_type": s.section_type,
                    "salt": s.salt,
                    "sealed": s.sealed,
                }
                for s in sections
            ],
        )


_LOAD_SECTIONS = select(RESTRICTED_SECTIONS).where(
    RESTRICTED_SECTIONS.c.message_id == bindparam("message_id"),
    RESTRICTED_SECTIONS.c.section_id.in_(bindparam("ids", expanding=True)),
)


def load_sections(
    connection: Connection, message_id: str, section_ids: Iterable[str]
) -> list[HeldSection]:
    rows = connection.execute(_LOAD_SECTIONS, {"message_id": message_id, "ids": list(section_ids)})
    return [
        HeldSection(row.section_id, row.section_type, bytes(row.salt), bytes(row.sealed))
        for row in rows
    ]


def record_consents(
    connection: Connection,
    message_id: str,
    node_ids: Iterable[str],
    grant_message_id: str,
    now: int,
) -> None:
    known = consented_nodes(connection, message_id)
    fresh = [n for n in dict.fromkeys(node_ids) if n not in known]
    if fresh:
        connection.execute(
            insert(ONWARD_CONSENTS),
            [
                {
                    "message_id": message_id,
                    "node_id": node_id,
                    "grant_message_id": grant_message_id,
                    "recorded_at": now,
                }
                for node_id in fresh
            ],
        )


def consented_nodes(connection: Connection, message_id: str) -> set[str]:
    rows = connection.execute(
        select(ONWARD_CONSENTS.c.node_id).where(ONWARD_CONSENTS.c.message_id == message_id)
    )
    return {row.node_id for row in rows}


def replies(
    connection: Connection, message_id: str, *, kind: int, direction: str
) -> list[tuple[str, str]]:
    """(message id, sender) of stored notices of `kind` in `direction` answering `message_id`."""
    rows = connection.execute(
        select(NOTICES.c.message_id, NOTICES.c.sender_node_id).where(
            NOTICES.c.in_reply_to == message_id,
            NOTICES.c.kind == kind,
            NOTICES.c.direction == direction,
            NOTICES.c.state != "rejected",
        )
    )
    return [(row.message_id, row.sender_node_id) for row in rows]


def set_deadline(connection: Connection, message_id: str, deadline: int) -> None:
    connection.execute(
        update(NOTICES).where(NOTICES.c.message_id == message_id).values(response_deadline=deadline)
    )


@dataclasses.dataclass(frozen=True)
class Overdue:
    message_id: str
    kind: int
    owed_by_us: bool
    counterpart_node_id: str
    case_reference: str
    response_deadline: int


def overdue_requests(connection: Connection, *, now: int, answers: dict[int, int]) -> list[Overdue]:
    """Requests past their deadline with no answer of the answering kind.

    Args:
        answers: request kind -> the kind that answers it.
    """
    found: list[Overdue] = []
    reply = aliased(NOTICES)
    for request_kind, answer_kind in answers.items():
        for direction, answer_direction in ((INCOMING, OUTGOING), (OUTGOING, INCOMING)):
            answered = exists().where(
                reply.c.in_reply_to == NOTICES.c.message_id,
                reply.c.kind == answer_kind,
                reply.c.direction == answer_direction,
            )
            rows = connection.execute(
                select(NOTICES)
                .where(
                    NOTICES.c.kind == request_kind,
                    NOTICES.c.direction == direction,
                    NOTICES.c.state.not_in(_GONE),
                    NOTICES.c.response_deadline.is_not(None),
                    NOTICES.c.response_deadline < now,
                    ~answered,
                )
                .order_by(NOTICES.c.response_deadline)
            )
            found.extend(_overdue(row, direction == INCOMING) for row in rows)
    return sorted(found, key=lambda o: o.response_deadline)


def _overdue(row: Any, owed_by_us: bool) -> Overdue:
    return Overdue(
        message_id=row.message_id,
        kind=row.kind,
        owed_by_us=owed_by_us,
        counterpart_node_id=row.sender_node_id if owed_by_us else row.recipient_node_ids,
        case_reference=row.case_reference,
        response_deadline=row.response_deadline,
    )


@dataclasses.dataclass(frozen=True)
class Purgeable:
    message_id: str
    direction: str
    digest: bytes


_DAY_MS = 86_400_000


def due_for_purge(connection: Connection, *, now: int, limit: int) -> list[Purgeable]:
    """Notices whose retention has ended (counted from receipt, or creation when sent).

    An outgoing notice still being delivered is left alone: its bytes are needed.
    """
    # From receipt for what came in, from creation for what went out.
    kept_since = func.coalesce(NOTICES.c.received_at, NOTICES.c.created_at)
    # BIGINT arithmetic: days * 86,400,000 overflows PostgreSQL's 32-bit integer.
    retained_until = kept_since + cast(NOTICES.c.retention_days, BigInteger) * _DAY_MS
    delivering = exists().where(
        OUTBOX.c.message_id == NOTICES.c.message_id, OUTBOX.c.state == "pending"
    )
    rows = connection.execute(
        select(NOTICES.c.message_id, NOTICES.c.direction, ENVELOPES.c.digest)
        .join(ENVELOPES, ENVELOPES.c.message_id == NOTICES.c.message_id)
        .where(NOTICES.c.state != PURGED, retained_until <= now, ~delivering)
        .order_by(NOTICES.c.created_at)
        .limit(limit)
    )
    return [Purgeable(row.message_id, row.direction, bytes(row.digest)) for row in rows]


def purge(connection: Connection, message_id: str, now: int) -> bool:
    """Delete the content of a notice, keeping its tombstone: row, signed header, digests."""
    result = connection.execute(
        update(NOTICES)
        .where(NOTICES.c.message_id == message_id, NOTICES.c.state != PURGED)
        .values(state=PURGED, purged_at=now)
    )
    if result.rowcount != 1:
        return False
    connection.execute(
        update(ENVELOPES).where(ENVELOPES.c.message_id == message_id).values(sealed_payload=b"")
    )
    connection.execute(
        delete(RESTRICTED_SECTIONS).where(RESTRICTED_SECTIONS.c.message_id == message_id)
    )
    return True
