"""After delivery: restricted sections, onward consents, decisions, withdrawals, overdue
requests, purges."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    exists,
    insert,
    select,
    update,
)
from sqlalchemy.orm import aliased

from exchange._proto.exchange.v1 import envelope_pb2 as _K
from exchange.store.notices import INCOMING, OUTGOING
from exchange.store.tables import (
    DISCLOSURE_DECISIONS,
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
    "decided",
    "delete_sections",
    "disclosures_about",
    "due_for_purge",
    "forwarded_copies",
    "insert_sections",
    "load_sections",
    "overdue_requests",
    "purge",
    "record_consents",
    "record_decision",
    "replies",
    "set_deadline",
    "set_states",
    "waiting_withdrawal",
    "waiting_withdrawals",
]

WITHDRAWN = "withdrawn"
PURGED = "purged"
_GONE = (WITHDRAWN, PURGED, "rejected")
_WITHDRAWAL = _K.NOTICE_KIND_WITHDRAWAL
_DISCLOSURE_REQUEST = _K.NOTICE_KIND_DISCLOSURE_REQUEST
_DISCLOSURE_GRANT = _K.NOTICE_KIND_DISCLOSURE_GRANT


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


def delete_sections(connection: Connection, message_id: str) -> None:
    connection.execute(
        delete(RESTRICTED_SECTIONS).where(RESTRICTED_SECTIONS.c.message_id == message_id)
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


def record_decision(
    connection: Connection, request_message_id: str, grant_message_id: str, now: int
) -> None:
    """Record the answer to a disclosure request.

    Raises:
        IntegrityError: the request was already answered (the primary key).
    """
    connection.execute(
        insert(DISCLOSURE_DECISIONS).values(
            request_message_id=request_message_id,
            grant_message_id=grant_message_id,
            decided_at=now,
        )
    )


def decided(connection: Connection, request_message_id: str) -> bool:
    found = connection.execute(
        select(DISCLOSURE_DECISIONS.c.grant_message_id).where(
            DISCLOSURE_DECISIONS.c.request_message_id == request_message_id
        )
    ).first()
    return found is not None


def disclosures_about(connection: Connection, message_id: str) -> list[str]:
    """Received grants answering this node's disclosure requests about `message_id`.

    They carry sections of that notice, so they share its fate (withdrawal, purge).
    """
    request = aliased(NOTICES)
    rows = connection.execute(
        select(NOTICES.c.message_id)
        .join(request, request.c.message_id == NOTICES.c.in_reply_to)
        .where(
            request.c.in_reply_to == message_id,
            request.c.direction == OUTGOING,
            request.c.kind == _DISCLOSURE_REQUEST,
            NOTICES.c.direction == INCOMING,
            NOTICES.c.kind == _DISCLOSURE_GRANT,
        )
    )
    return [row.message_id for row in rows]


def set_states(
    connection: Connection, message_ids: Sequence[str], state: str, *, unless: Iterable[str]
) -> int:
    """Move notices to `state`, leaving those already in one of `unless`."""
    if not message_ids:
        return 0
    result = connection.execute(
        update(NOTICES)
        .where(NOTICES.c.message_id.in_(message_ids), NOTICES.c.state.not_in(list(unless)))
        .values(state=state)
    )
    return result.rowcount


def waiting_withdrawal(connection: Connection, message_id: str, sender_node_id: str) -> str | None:
    """A withdrawal of `message_id` that arrived before the notice itself, if any."""
    row = connection.execute(
        select(NOTICES.c.message_id).where(
            NOTICES.c.in_reply_to == message_id,
            NOTICES.c.kind == _WITHDRAWAL,
            NOTICES.c.direction == INCOMING,
            NOTICES.c.sender_node_id == sender_node_id,
            NOTICES.c.state != "rejected",
        )
    ).first()
    return None if row is None else str(row.message_id)


# Built once: asked for every batch of notices received.
_WAITING_WITHDRAWALS = select(NOTICES.c.in_reply_to).where(
    NOTICES.c.in_reply_to.in_(bindparam("message_ids", expanding=True)),
    NOTICES.c.kind == _WITHDRAWAL,
    NOTICES.c.direction == INCOMING,
    NOTICES.c.sender_node_id == bindparam("sender_node_id"),
    NOTICES.c.state != "rejected",
)


def waiting_withdrawals(
    connection: Connection, message_ids: list[str], sender_node_id: str
) -> set[str]:
    """Those of `message_ids` whose withdrawal by `sender_node_id` arrived before them."""
    if not message_ids:
        return set()
    rows = connection.execute(
        _WAITING_WITHDRAWALS, {"message_ids": message_ids, "sender_node_id": sender_node_id}
    )
    return {str(row.in_reply_to) for row in rows}


def forwarded_copies(connection: Connection, message_id: str) -> list[tuple[str, tuple[str, ...]]]:
    """(message id, recipients) of the copies of `message_id` this node forwarded, still live."""
    rows = connection.execute(
        select(NOTICES.c.message_id, NOTICES.c.recipient_node_ids).where(
            NOTICES.c.origin_message_id == message_id,
            NOTICES.c.direction == OUTGOING,
            NOTICES.c.state == "sent",
        )
    )
    return [(row.message_id, tuple(row.recipient_node_ids.split(","))) for row in rows]


# Built once: set for every notice that asks for a response by a date (sent or received).
_SET_DEADLINE = (
    update(NOTICES)
    .where(NOTICES.c.message_id == bindparam("of_message"))
    .values(response_deadline=bindparam("deadline"))
)


def set_deadline(connection: Connection, message_id: str, deadline: int) -> None:
    connection.execute(_SET_DEADLINE, {"of_message": message_id, "deadline": deadline})


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

    A request this node received is owed by it to the sender; a request it
    sent is owed to it by each recipient that received it (a delivered
    outbox row) and has not answered. A rejected answer is no answer.

    Args:
        answers: request kind -> the kind that answers it.
    """
    found: list[Overdue] = []
    reply = aliased(NOTICES)
    for request_kind, answer_kind in answers.items():
        late = (
            NOTICES.c.kind == request_kind,
            NOTICES.c.state.not_in(_GONE),
            NOTICES.c.response_deadline.is_not(None),
            NOTICES.c.response_deadline < now,
        )
        answer = (
            reply.c.in_reply_to == NOTICES.c.message_id,
            reply.c.kind == answer_kind,
            reply.c.state != "rejected",
        )
        owed_by_us = connection.execute(
            select(NOTICES).where(
                *late,
                NOTICES.c.direction == INCOMING,
                ~exists().where(*answer, reply.c.direction == OUTGOING),
            )
        )
        found.extend(_overdue(row, True, row.sender_node_id) for row in owed_by_us)
        owed_to_us = connection.execute(
            select(NOTICES, OUTBOX.c.recipient_node_id.label("owing_node_id"))
            .join(OUTBOX, OUTBOX.c.message_id == NOTICES.c.message_id)
            .where(
                *late,
                NOTICES.c.direction == OUTGOING,
                OUTBOX.c.state == "delivered",
                ~exists().where(
                    *answer,
                    reply.c.direction == INCOMING,
                    reply.c.sender_node_id == OUTBOX.c.recipient_node_id,
                ),
            )
        )
        found.extend(_overdue(row, False, row.owing_node_id) for row in owed_to_us)
    return sorted(found, key=lambda o: (o.response_deadline, o.message_id, o.counterpart_node_id))


def _overdue(row: Any, owed_by_us: bool, counterpart: str) -> Overdue:
    return Overdue(
        message_id=row.message_id,
        kind=row.kind,
        owed_by_us=owed_by_us,
        counterpart_node_id=counterpart,
        case_reference=row.case_reference,
        response_deadline=row.response_deadline,
    )


@dataclasses.dataclass(frozen=True)
class Purgeable:
    message_id: str
    direction: str
    digest: bytes


def due_for_purge(connection: Connection, *, now: int, limit: int) -> list[Purgeable]:
    """Notices whose retention has ended (counted from receipt, or creation when sent).

    An outgoing notice still being delivered is left alone: its bytes are needed.
    """
    # retain_until was set when the notice was stored (store.notices.retained_until)
    # and is cleared by the purge: a range of its index, however large the store.
    delivering = exists().where(
        OUTBOX.c.message_id == NOTICES.c.message_id, OUTBOX.c.state == "pending"
    )
    rows = connection.execute(
        select(NOTICES.c.message_id, NOTICES.c.direction, ENVELOPES.c.digest)
        .join(ENVELOPES, ENVELOPES.c.message_id == NOTICES.c.message_id)
        .where(NOTICES.c.retain_until <= now, NOTICES.c.state != PURGED, ~delivering)
        .order_by(NOTICES.c.retain_until)
        .limit(limit)
    )
    return [Purgeable(row.message_id, row.direction, bytes(row.digest)) for row in rows]


def purge(connection: Connection, message_id: str, now: int) -> bool:
    """Delete the content of a notice, keeping its tombstone: row, signed header, digests."""
    result = connection.execute(
        update(NOTICES)
        .where(NOTICES.c.message_id == message_id, NOTICES.c.state != PURGED)
        .values(state=PURGED, purged_at=now, retain_until=None)
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
