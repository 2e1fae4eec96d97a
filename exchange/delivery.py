"""The delivery worker: drains the outbox, one claimed row per recipient.

Each attempt sends the envelope as stored (signed anew first if the key that
signed it has since been revoked or retired: a backlog drains with the new
key), verifies the recipient's signed
receipt against the trust list and the envelope digest, and commits the
outcome with its audit entry:

- an accepted receipt ends the row as delivered;
- a signed rejection ends it as failed, and the authority is told in its inbox;
- anything else (unreachable peer, transport error, a receipt that does not
  verify) is retried with exponential backoff and jitter until the envelope
  expires; then the row fails and the authority is told.

A row is ended only by one of those outcomes, so nothing accepted is silently
dropped; a crash between send and commit only means one more (idempotent)
delivery after the lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
from typing import Protocol

from sqlalchemy import Connection

from exchange import failpoints
from exchange.audit import AuditRecord
from exchange.clock import to_millis
from exchange.composing import resign
from exchange.envelope import Envelope, Header
from exchange.errors import (
    PeerUnreachableError,
    PreconditionError,
    StoreUnavailableError,
    VerificationError,
)
from exchange.receipt import Receipt, SignedReceipt, verify_receipt
from exchange.runtime import NodeContext, Signal
from exchange.store import audit_log, inbox, outbox
from exchange.store.notices import load_envelope
from exchange.trust import TrustedNode

__all__ = ["DeliveryTransport", "DeliveryWorker", "backoff"]

IDLE_WAIT_SECONDS = 5.0


class DeliveryTransport(Protocol):
    """How envelopes reach a peer (gRPC in production, anything in tests)."""

    async def deliver(self, peer: TrustedNode, envelope: Envelope, timeout: float) -> SignedReceipt:
        """Deliver `envelope` to `peer`; raises PeerUnreachableError on any failure."""
        ...


def backoff(attempts: int, initial: float, maximum: float, jitter: float) -> dt.timedelta:
    """Exponential backoff with jitter for the attempt after `attempts` failures.

    Args:
        jitter: a number in [0, 1); the delay is scaled into [50%, 100%) of the
            exponential value, so peers recovering from an outage are not hit
            by every sender at once.
    """
    exponential = min(maximum, initial * 2 ** min(attempts, 32))
    return dt.timedelta(seconds=exponential * (0.5 + jitter / 2))


def _error_category(error: str) -> str:
    """What went wrong, for the audit log: a peer's status code, never its free text.

    A peer chooses the details of the errors it returns; only its status code
    (or our own wording, for failures found here) goes on the record.
    """
    code, sep, _ = error.partition(":")
    if sep and code.isupper() and code.replace("_", "").isalpha():
        return code
    return error[:120]


class DeliveryWorker:
    """Sends due outbox rows until cancelled."""

    def __init__(self, context: NodeContext, transport: DeliveryTransport) -> None:
        self._context = context
        self._transport = transport
        self._config = context.config.delivery

    async def run(self) -> None:
        """Deliver forever; cancel the task to stop (claimed rows return after their lease).

        Nothing ends the loop but cancellation: a store that is unavailable is
        waited for with backoff, and a failed attempt only reschedules its row.
        """
        context = self._context
        outages = 0
        while True:
            snapshot = context.outbox_changed.snapshot()
            try:
                if await self.run_once():
                    outages = 0
                    continue
                due = await context.store.read(outbox.next_due_at)
                outages = 0
            except StoreUnavailableError as exc:
                outages += 1
                delay = backoff(outages, 0.5, IDLE_WAIT_SECONDS * 6, context.rng.random())
                context.log.warning(
                    "delivery.store_unavailable", error=str(exc), retry_in=delay.total_seconds()
                )
                await asyncio.sleep(delay.total_seconds())
                continue
            wait = IDLE_WAIT_SECONDS
            if due is not None:
                wait = (due - to_millis(context.clock.now())) / 1000
            await Signal.wait(snapshot, min(max(wait, 0.01), IDLE_WAIT_SECONDS))

    async def run_once(self) -> int:
        """Claim and attempt one batch of due rows; returns how many were attempted."""
        context = self._context
        stale = context.trust_staleness(context.clock.now())
        if stale is not None:
            # Held, not failed: they go out once a newer trust list is adopted.
            context.log.warning("delivery.held", reason=stale)
            return 0
        now = to_millis(context.clock.now())
        items = await context.store.write(
            lambda c: outbox.claim_due(
                c,
                now=now,
                lease_ms=int(self._config.lease_seconds * 1000),
                limit=self._config.batch_size,
            )
        )
        if items:
            await asyncio.gather(*(self._attempt(item) for item in items))
        return len(items)

    async def _attempt(self, item: outbox.OutboxItem) -> None:
        """One delivery attempt; never raises (but for cancellation)."""
        try:
            await self._try(item)
        except StoreUnavailableError as exc:
            # The outcome could not be recorded: the lease runs out and the row is
            # tried again (the recipient answers a repeat with the same receipt).
            self._context.log.warning(
                "delivery.unrecorded", message_id=item.message_id, error=str(exc)
            )
        except Exception as exc:
            self._context.log.exception(
                "delivery.attempt_failed", message_id=item.message_id, error_type=type(exc).__name__
            )
            with contextlib.suppress(StoreUnavailableError):
                await self._retry(
                    item, f"internal error ({type(exc).__name__})", self._context.clock.now()
                )

    async def _try(self, item: outbox.OutboxItem) -> None:
        context = self._context
        now = context.clock.now()
        if item.expires_at <= to_millis(now):
            await self._fail(item, "expired before delivery", now)
            return
        peer = context.trust.active_node(item.recipient_node_id)
        if peer is None:
            await self._retry(item, "recipient is not an active node of the trust list", now)
            return
        try:
            item = await self._signed_acceptably(item, now)
        except PreconditionError as exc:
            # No valid key of ours: held until the stewards publish one.
            await self._retry(item, str(exc), now)
            return
        failpoints.reached("deliver.before_send")
        try:
            signed = await self._transport.deliver(
                peer, item.envelope, self._config.attempt_timeout_seconds
            )
        except PeerUnreachableError as exc:
            await self._retry(item, str(exc), context.clock.now())
            return
        failpoints.reached("deliver.after_send")
        try:
            receipt = verify_receipt(
                signed,
                trust=context.trust,
                recipient_node_id=item.recipient_node_id,
                message_id=item.message_id,
                envelope_digest=item.envelope_digest,
                now=context.clock.now(),
            )
        except VerificationError as exc:
            # A forged or mismatched receipt proves nothing: keep the row pending.
            context.log.warning(
                "receipt.refused",
                message_id=item.message_id,
                peer=item.recipient_node_id,
                reason=exc.failure.value,
            )
            await self._retry(item, f"invalid receipt: {exc.failure.value}", context.clock.now())
            return
        await self._record(item, signed, receipt, context.clock.now())

    async def _signed_acceptably(
        self, item: outbox.OutboxItem, now: dt.datetime
    ) -> outbox.OutboxItem:
        """The item, its envelope signed anew first if its key was revoked or retired.

        The stored envelope is replaced only if it is still the one this item
        carries (another worker may have re-signed it meanwhile: then that one is
        sent), so every recipient gets, and every receipt covers, the envelope
        on record; the replaced signature stays evidence in the audit entry.
        """
        context = self._context
        renewed = resign(item.envelope, identity=context.identity, trust=context.trust, now=now)
        if renewed is None:
            return item
        old = Header.from_bytes(item.envelope.header)
        new = Header.from_bytes(renewed.header)
        record = AuditRecord(
            occurred_at=now,
            actor=context.actor,
            action="notice.resigned",
            message_id=item.message_id,
            details={
                "previous_key_id": old.sender_key_id,
                "key_id": new.sender_key_id,
                "previous_envelope_digest": item.envelope_digest.hex(),
                "envelope_digest": renewed.digest().hex(),
                "previous_created_at": old.created_at.isoformat(),
                "previous_signature": item.envelope.signature.hex(),
            },
        )

        def swap(connection: Connection) -> outbox.OutboxItem:
            if outbox.replace_envelope(
                connection,
                item.message_id,
                previous=item.envelope,
                envelope=renewed,
                now=to_millis(now),
            ):
                audit_log.append(connection, [record])
                return dataclasses.replace(item, envelope=renewed, envelope_digest=renewed.digest())
            stored = load_envelope(connection, item.message_id)
            assert stored is not None, "an outbox row always has its envelope"
            return dataclasses.replace(item, envelope=stored, envelope_digest=stored.digest())

        swapped = await context.store.write(swap)
        context.log.info(
            "delivery.resigned",
            message_id=item.message_id,
            previous_key_id=old.sender_key_id,
            key_id=Header.from_bytes(swapped.envelope.header).sender_key_id,
        )
        return swapped

    async def _retry(self, item: outbox.OutboxItem, error: str, now: dt.datetime) -> None:
        delay = backoff(
            item.attempts,
            self._config.initial_backoff_seconds,
            self._config.max_backoff_seconds,
            self._context.rng.random(),
        )
        # Never sleep past expiry: the failure must be reported when it happens.
        next_attempt = min(to_millis(now + delay), item.expires_at)
        attempt = AuditRecord(
            occurred_at=now,
            actor=self._context.actor,
            action="delivery.attempt_failed",
            message_id=item.message_id,
            peer_node_id=item.recipient_node_id,
            details={"attempt": str(item.attempts + 1), "error": _error_category(error)},
        )

        def commit(connection: Connection) -> None:
            outbox.retry_later(
                connection,
                outbox_id=item.outbox_id,
                error=error,
                next_attempt_at=next_attempt,
                now=to_millis(now),
            )
            audit_log.append(connection, [attempt])

        await self._context.store.write(commit)
        self._context.log.info(
            "delivery.retry",
            message_id=item.message_id,
            peer=item.recipient_node_id,
            attempts=item.attempts + 1,
            error=error,
        )

    def _failure_entries(
        self, connection: Connection, item: outbox.OutboxItem, reason: str, now: dt.datetime
    ) -> None:
        (sequence,) = audit_log.append(
            connection,
            [
                AuditRecord(
                    occurred_at=now,
                    actor=self._context.actor,
                    action="delivery.failed",
                    message_id=item.message_id,
                    peer_node_id=item.recipient_node_id,
                    details={"reason": reason, "attempts": str(item.attempts + 1)},
                )
            ],
        )
        inbox.insert_event(
            connection,
            inbox.InboxEvent(
                sequence=sequence,
                event_type=inbox.DELIVERY_FAILED,
                message_id=item.message_id,
                peer_node_id=item.recipient_node_id,
                reason=reason,
                occurred_at=to_millis(now),
            ),
        )

    async def _fail(self, item: outbox.OutboxItem, reason: str, now: dt.datetime) -> None:
        def commit(connection: Connection) -> None:
            if outbox.fail(connection, outbox_id=item.outbox_id, error=reason, now=to_millis(now)):
                self._failure_entries(connection, item, reason, now)

        await self._context.store.write(commit)
        self._context.inbox_changed.fire()
        self._context.log.warning(
            "delivery.failed",
            message_id=item.message_id,
            peer=item.recipient_node_id,
            reason=reason,
        )

    async def _record(
        self, item: outbox.OutboxItem, signed: SignedReceipt, receipt: Receipt, now: dt.datetime
    ) -> None:
        reason = "" if receipt.accepted else f"rejected by recipient: {receipt.rejection_name}"

        def commit(connection: Connection) -> None:
            stored = outbox.record_receipt(
                connection,
                outbox_id=item.outbox_id,
                message_id=item.message_id,
                recipient_node_id=item.recipient_node_id,
                receipt=signed,
                accepted=receipt.accepted,
                received_at=to_millis(receipt.received_at),
                error=reason,
                now=to_millis(now),
            )
            if not stored:
                return
            if receipt.accepted:
                audit_log.append(
                    connection,
                    [
                        AuditRecord(
                            occurred_at=now,
                            actor=self._context.actor,
                            action="notice.delivered",
                            message_id=item.message_id,
                            peer_node_id=item.recipient_node_id,
                            details={
                                "receipt_received_at": receipt.received_at.isoformat(),
                                "receipt_digest": hashlib.sha256(signed.body).hexdigest(),
                                "envelope_digest": item.envelope_digest.hex(),
                            },
                        )
                    ],
                )
            else:
                self._failure_entries(connection, item, reason, now)

        await self._context.store.write(commit)
        self._context.peer_heard_from(item.recipient_node_id)
        if not receipt.accepted:
            self._context.inbox_changed.fire()
        self._context.log.info(
            "delivery.done" if receipt.accepted else "delivery.rejected",
            message_id=item.message_id,
            peer=item.recipient_node_id,
        )
