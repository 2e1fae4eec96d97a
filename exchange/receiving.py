"""Receiving an envelope from a peer node.

DESIGN.md's flow, receiving side:

1. Verify the envelope (`envelope.check_envelope`): trust list, signature over
   the bytes as received, sender == TLS peer, this node among the recipients,
   time rules. Anything unauthentic is refused with an error and leaves no
   state behind except the audited refusal.
2. A message id seen before from the same sender gets the original receipt
   (at-least-once on the wire, exactly-once in the store).
3. Open the payload and check the notice against its type's rules, then
   forget the plaintext: content stays sealed at rest.
4. Commit, in one transaction: the envelope as received, the notice row, the
   signed receipt, the audit entry and the inbox event. The receipt is returned
   only after that commit, so a receipt always means a durable copy.

An authentic envelope that is expired, unreadable or invalid is answered with
a signed *rejection* receipt, so that its sender stops retrying.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from exchange import notices
from exchange.audit import AuditRecord
from exchange.clock import to_millis
from exchange.envelope import Envelope, Header, check_envelope
from exchange.errors import (
    ConflictError,
    ExchangeError,
    ResourceLimitError,
    ValidationError,
    VerificationError,
    VerificationFailure,
)
from exchange.receipt import REJECTION_REASONS, Receipt, SignedReceipt, sign_receipt
from exchange.runtime import NodeContext
from exchange.seal import open_sealed
from exchange.store import audit_log, inbox
from exchange.store.notices import INCOMING, OUTGOING, find_notice, stored_digest

__all__ = ["MAX_SEALED_PAYLOAD", "Receiver"]

MAX_SEALED_PAYLOAD = 4 * 1024 * 1024

# Failures after which the envelope is authentic: answered with a signed rejection.
_REJECTABLE = frozenset(REJECTION_REASONS)
# Authentic headers that this node never accepts, not even as a repeat.
_NEVER_ACCEPTED = frozenset(
    {
        VerificationFailure.PAYLOAD_DIGEST_MISMATCH,
        VerificationFailure.NOT_A_RECIPIENT,
        VerificationFailure.UNSUPPORTED_SUITE,
    }
)


class Receiver:
    """Verifies and stores envelopes delivered by peers."""

    def __init__(self, context: NodeContext) -> None:
        self._context = context

    async def receive(self, envelope: Envelope, peer_node_id: str | None) -> SignedReceipt:
        """Verify and store `envelope`; returns the signed receipt.

        Args:
            peer_node_id: the TLS peer's node id (None only for local tools).

        Raises:
            VerificationError: the envelope is not authentic or not for this node.
            ConflictError: the message id is already used by another message.
            ResourceLimitError: the envelope is too large.
        """
        context = self._context
        now = context.clock.now()
        try:
            if len(envelope.sealed_payload) > MAX_SEALED_PAYLOAD:
                raise ResourceLimitError("sealed payload exceeds 4 MiB")
            # An expired list may no longer say who is a member: accept nothing.
            trust = context.usable_trust(now)
            check = check_envelope(
                envelope,
                trust=trust,
                recipient_node_id=context.node_id,
                peer_node_id=peer_node_id,
                now=now,
                policy=context.policy,
            )
            header = check.header
            if header is None or check.failure in _NEVER_ACCEPTED:
                check.raise_for_failure()
            assert header is not None
            # An authentic envelope seen before gets its original receipt, even if it
            # is now too old or expired: its first receipt was lost on the way back.
            earlier = await self._earlier_receipt(header, envelope.digest())
            if earlier is not None:
                return earlier
            if check.failure is not None and check.failure not in _REJECTABLE:
                check.raise_for_failure()
            failure = check.failure or await self._open_and_validate(envelope, header)
        except ExchangeError as exc:
            await self._audit_refusal(envelope, peer_node_id, exc, now)
            raise
        return await self._commit(envelope, header, failure, now)

    async def _earlier_receipt(self, header: Header, digest: bytes) -> SignedReceipt | None:
        def lookup(connection: Connection) -> SignedReceipt | None:
            known = find_notice(connection, header.message_id)
            if known is None:
                return None
            if known.direction != INCOMING or known.sender_node_id != header.sender_node_id:
                raise ConflictError(f"message id {header.message_id} is already in use")
            if stored_digest(connection, header.message_id) != digest:
                raise ConflictError(
                    f"message id {header.message_id} was already delivered with other content"
                )
            return inbox.own_receipt(connection, header.message_id, self._context.node_id)

        return await self._context.store.read(lookup)

    async def _open_and_validate(
        self, envelope: Envelope, header: Header
    ) -> VerificationFailure | None:
        """Open the payload and check the notice; returns why it must be rejected, if so."""
        context = self._context
        try:
            plaintext = open_sealed(
                envelope.sealed_payload,
                message_id=header.message_id,
                sender_node_id=header.sender_node_id,
                recipient_node_id=context.node_id,
                keys=context.identity.sealing_keys,
            )
            notice = notices.decode_notice(plaintext)
            del plaintext
            if notices.validate_notice(notice, now=header.created_at) != header.kind:
                raise ValidationError("kind", "does not match the notice body")
            await self._validate_reply(header)
        except VerificationError as exc:
            context.log.warning(
                "envelope.rejected", message_id=header.message_id, reason=exc.failure.value
            )
            return exc.failure
        except ValidationError as exc:
            context.log.warning("envelope.rejected", message_id=header.message_id, field=exc.field)
            return VerificationFailure.INVALID_NOTICE
        return None

    async def _validate_reply(self, header: Header) -> None:
        """A reply must answer a notice this node sent to the replying node."""
        if header.kind not in notices.REPLY_RULES and not header.in_reply_to:
            return
        original = (
            await self._context.store.read(lambda c: find_notice(c, header.in_reply_to))
            if header.in_reply_to
            else None
        )
        if original is not None and (
            original.direction != OUTGOING
            or header.sender_node_id not in original.recipient_node_ids
        ):
            original = None
        notices.validate_reply(header.kind, original.kind if original else None)

    async def _commit(
        self,
        envelope: Envelope,
        header: Header,
        failure: VerificationFailure | None,
        now: dt.datetime,
    ) -> SignedReceipt:
        context = self._context
        accepted = failure is None
        receipt = sign_receipt(
            Receipt(
                message_id=header.message_id,
                envelope_digest=envelope.digest(),
                recipient_node_id=context.node_id,
                recipient_key_id=context.identity.signing_key_id,
                received_at=now,
                accepted=accepted,
                rejection=0 if failure is None else REJECTION_REASONS[failure],
            ),
            context.identity.signing_key,
        )
        record = AuditRecord(
            occurred_at=now,
            actor=context.actor,
            action="notice.received" if accepted else "notice.rejected",
            message_id=header.message_id,
            peer_node_id=header.sender_node_id,
            details={
                "kind": notices.kind_name(header.kind),
                "envelope_digest": envelope.digest().hex(),
                **({} if failure is None else {"reason": failure.value}),
            },
        )

        def commit(connection: Connection) -> SignedReceipt:
            inbox.insert_incoming(
                connection,
                header=header,
                envelope=envelope,
                receipt=receipt,
                node_id=context.node_id,
                accepted=accepted,
                received_at=to_millis(now),
            )
            (sequence,) = audit_log.append(connection, [record])
            if accepted:
                inbox.insert_event(
                    connection,
                    inbox.InboxEvent(
                        sequence=sequence,
                        event_type=inbox.NOTICE_RECEIVED,
                        message_id=header.message_id,
                        peer_node_id=header.sender_node_id,
                        reason="",
                        occurred_at=to_millis(now),
                    ),
                )
            return receipt

        try:
            stored = await context.store.write(commit)
        except IntegrityError:
            # The same envelope was committed concurrently: answer with that receipt.
            earlier = await self._earlier_receipt(header, envelope.digest())
            if earlier is None:
                raise
            return earlier
        context.inbox_changed.fire()
        context.log.info(
            "notice.received" if accepted else "notice.rejected",
            message_id=header.message_id,
            sender=header.sender_node_id,
            kind=notices.kind_name(header.kind),
        )
        return stored

    async def _audit_refusal(
        self, envelope: Envelope, peer_node_id: str | None, error: ExchangeError, now: dt.datetime
    ) -> None:
        reason = error.failure.value if isinstance(error, VerificationError) else str(error)[:200]
        record = AuditRecord(
            occurred_at=now,
            actor=self._context.actor,
            action="envelope.refused",
            peer_node_id=peer_node_id or "",
            details={"reason": reason, "envelope_digest": envelope.digest().hex()},
        )
        await self._context.store.write(lambda c: audit_log.append(c, [record]))
        self._context.log.warning("envelope.refused", peer=peer_node_id, reason=reason)
