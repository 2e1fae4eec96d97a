"""What an authority reads from its node: inbox, notices, events, delivery, audit.

Opening a notice is a disclosure, so `open_notice` commits the audit entry
*before* it returns the content: a read that cannot be audited does not
happen.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
from collections.abc import AsyncIterator

from sqlalchemy import Connection

from exchange import notices
from exchange._proto.exchange.v1 import envelope_pb2 as _K
from exchange._proto.exchange.v1 import notices_pb2
from exchange.audit import AuditRecord, LoggedEntry
from exchange.clients import Principal
from exchange.clock import to_millis
from exchange.errors import NotFoundError, PreconditionError, ValidationError, VerificationError
from exchange.ids import validate_message_id
from exchange.runtime import NodeContext, Signal
from exchange.store import audit_log, inbox, lifecycle, outbox
from exchange.store.notices import INCOMING, OUTGOING, NoticeRecord, find_notice

__all__ = ["DeliveryStatus", "Reader"]

DEFAULT_PAGE = 50
MAX_PAGE = 500
MAX_AUDIT_PAGE = 1000
# Inbox events a watcher reads at once.
_WATCH_PAGE = 100


def _page_size(value: int, default: int, maximum: int) -> int:
    if value == 0:
        return default
    if not 1 <= value <= maximum:
        raise ValidationError("page_size", f"must be between 1 and {maximum}")
    return value


def _sequence(value: int, field: str) -> int:
    # The contract's uint64 goes beyond the stores' signed 64-bit integers.
    if not 0 <= value < 2**63:
        raise ValidationError(field, "must be below 2^63")
    return value


def _encode_cursor(record: NoticeRecord) -> str:
    raw = f"{record.received_at}:{record.message_id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(token: str) -> tuple[int, str]:
    try:
        received_at, message_id = base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)
        millis = int(received_at)
        if not 0 <= millis < 2**63:
            raise ValueError("out of range")
        return millis, validate_message_id(message_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationError("page_token", "is not a token this node issued") from None


@dataclasses.dataclass(frozen=True)
class DeliveryStatus:
    recipients: list[outbox.DeliveryRecord]
    # Message id of the notice's Withdrawal, if it was withdrawn.
    withdrawn_by: str
    # Recipients whose node confirmed it applied the withdrawal.
    withdrawal_applied: frozenset[str]


_GONE = (lifecycle.WITHDRAWN, lifecycle.PURGED)


class Reader:
    """Read-side operations of the authority API."""

    def __init__(self, context: NodeContext) -> None:
        self._context = context

    async def list_inbox(self, page_size: int, page_token: str) -> tuple[list[NoticeRecord], str]:
        """A page of received notices (newest first) and the token of the next page."""
        limit = _page_size(page_size, DEFAULT_PAGE, MAX_PAGE)
        before = _decode_cursor(page_token) if page_token else None
        records = await self._context.store.read(
            lambda c: inbox.list_inbox(c, limit=limit + 1, before=before)
        )
        more = len(records) > limit
        records = records[:limit]
        return records, _encode_cursor(records[-1]) if more else ""

    async def open_notice(
        self, principal: Principal, message_id: str
    ) -> tuple[NoticeRecord, notices_pb2.Notice]:
        """Open a received notice for `principal`; audited before it is returned."""
        validate_message_id(message_id)
        context = self._context
        found = await context.store.read(lambda c: inbox.get_incoming(c, message_id))
        if found is None:
            raise NotFoundError(f"no received notice {message_id}")
        record, envelope = found
        if record.state in _GONE:
            await self._refuse_read(principal, record)
        try:
            notice = context.open_content(
                envelope.sealed_payload, message_id, record.sender_node_id
            )
        except VerificationError as exc:
            # It opened when it arrived; failing now means lost keys or a damaged store.
            context.log.error("notice.unreadable", message_id=message_id)
            raise NotFoundError(f"notice {message_id} can no longer be opened") from exc
        now = context.clock.now()
        entry = AuditRecord(
            occurred_at=now,
            actor=principal.actor,
            action="notice.read",
            message_id=message_id,
            peer_node_id=record.sender_node_id,
            details={"kind": notices.kind_name(record.kind)},
        )

        def audit_read(connection: Connection) -> str | None:
            # Checked again in the transaction that records the read: a
            # withdrawal or purge committed meanwhile wins.
            current = find_notice(connection, message_id)
            state = current.state if current is not None else lifecycle.PURGED
            if state in _GONE:
                return state
            audit_log.append(connection, [entry])
            inbox.set_state(connection, message_id, inbox.READ, from_states={inbox.RECEIVED})
            return None

        gone = await context.store.write(audit_read)
        if gone is not None:
            await self._refuse_read(principal, dataclasses.replace(record, state=gone))
        if record.state == inbox.RECEIVED:
            record = dataclasses.replace(record, state=inbox.READ)
        return record, notice

    async def events(self, after: int) -> AsyncIterator[inbox.InboxEvent]:
        """Inbox events after `after`, then new ones as they are committed; never ends."""
        after = _sequence(after, "after_sequence")
        context = self._context
        while True:
            snapshot = context.inbox_changed.snapshot()
            batch = await context.store.read(functools.partial(_events_page, after=after))
            for event in batch:
                yield event
                after = event.sequence
            if len(batch) < _WATCH_PAGE:
                # Everything committed before the read began was read; a commit since has
                # fired the snapshot (taken before the read). Woken by a commit of this
                # process or (PostgreSQL) of another of the node.
                await Signal.wait(snapshot, context.config.store.watch_poll_seconds)

    async def _refuse_read(self, principal: Principal, record: NoticeRecord) -> None:
        """A withdrawn or purged notice is not served; the attempt is audited."""
        entry = AuditRecord(
            occurred_at=self._context.clock.now(),
            actor=principal.actor,
            action="notice.read_refused",
            message_id=record.message_id,
            peer_node_id=record.sender_node_id,
            details={"state": record.state},
        )
        await audit_log.record(self._context.store, entry)
        if record.state == lifecycle.WITHDRAWN:
            raise PreconditionError(f"notice {record.message_id} was withdrawn by its originator")
        raise PreconditionError(
            f"the content of notice {record.message_id} was purged when its retention ended"
        )

    async def delivery_status(self, message_id: str) -> DeliveryStatus:
        """Per recipient: delivery state and receipt, and whether a withdrawal was applied."""
        validate_message_id(message_id)

        def load(connection: Connection) -> DeliveryStatus:
            notice = find_notice(connection, message_id)
            if notice is None or notice.direction != OUTGOING:
                raise NotFoundError(f"no sent notice {message_id}")
            withdrawals = lifecycle.replies(
                connection, message_id, kind=_K.NOTICE_KIND_WITHDRAWAL, direction=OUTGOING
            )
            withdrawn_by = withdrawals[0][0] if withdrawals else ""
            applied = (
                {
                    sender
                    for _, sender in lifecycle.replies(
                        connection,
                        withdrawn_by,
                        kind=_K.NOTICE_KIND_ACKNOWLEDGEMENT,
                        direction=INCOMING,
                    )
                }
                if withdrawn_by
                else set()
            )
            return DeliveryStatus(
                recipients=outbox.delivery_status(connection, message_id),
                withdrawn_by=withdrawn_by,
                withdrawal_applied=frozenset(applied),
            )

        return await self._context.store.read(load)

    async def overdue(self) -> list[lifecycle.Overdue]:
        """Requests past their deadline without an answer, both ways."""
        now = to_millis(self._context.clock.now())
        return await self._context.store.read(
            lambda c: lifecycle.overdue_requests(c, now=now, answers=dict(notices.REQUEST_KINDS))
        )

    async def audit_entries(self, after: int, page_size: int) -> list[LoggedEntry]:
        limit = _page_size(page_size, 100, MAX_AUDIT_PAGE)
        after = _sequence(after, "after_sequence")
        return await self._context.store.read(lambda c: audit_log.entries_after(c, after, limit))


def _events_page(connection: Connection, after: int) -> list[inbox.InboxEvent]:
    return inbox.events_after(connection, after, _WATCH_PAGE)
