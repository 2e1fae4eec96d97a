"""Sending a notice: validate, seal, sign, and queue it in one transaction.

The flow of DESIGN.md: the notice is checked against its type's rules, sealed
for its recipients' current sealing keys, wrapped in a signed envelope, and the
notice, envelope, one outbox row per recipient and the audit entry are
committed together. Only then is the authority told the message id; the
delivery worker takes it from there.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from exchange import notices
from exchange._encoding import tagged_digest
from exchange._proto.exchange.v1 import envelope_pb2, notices_pb2
from exchange.audit import AuditRecord
from exchange.clients import Principal
from exchange.clock import to_millis
from exchange.envelope import MAX_RECIPIENTS, Handling, Header, sign_envelope
from exchange.errors import ConflictError, NotFoundError, PreconditionError, ValidationError
from exchange.ids import (
    new_message_id,
    validate_case_reference,
    validate_message_id,
    validate_node_id,
)
from exchange.runtime import NodeContext
from exchange.seal import SUITE, SealRecipient, seal
from exchange.store import audit_log, inbox, outbox
from exchange.store.notices import NoticeRecord
from exchange.trust import TrustList

__all__ = ["OutgoingRequest", "Submitter"]

MIN_TTL = dt.timedelta(minutes=1)
MAX_TTL = dt.timedelta(days=30)
MAX_REQUEST_ID = 128


@dataclasses.dataclass(frozen=True)
class OutgoingRequest:
    """What an authority asks its node to send.

    Attributes:
        time_to_live: delivery window; None for the node's default.
        client_request_id: idempotency key; empty for none.
    """

    recipient_node_ids: tuple[str, ...]
    case_reference: str
    handling: Handling
    notice: notices_pb2.Notice
    time_to_live: dt.timedelta | None = None
    client_request_id: str = ""

    def digest(self, in_reply_to: str) -> bytes:
        """Identifies the request's content, to recognize an idempotent retry."""
        return tagged_digest(
            "exchange.v1.SubmitRequest",
            ",".join(self.recipient_node_ids).encode(),
            self.case_reference.encode(),
            self.handling.to_proto().SerializeToString(deterministic=True),
            self.notice.SerializeToString(deterministic=True),
            str(self.time_to_live).encode(),
            in_reply_to.encode(),
        )


class Submitter:
    """Accepts notices from authority clients and queues them for delivery."""

    def __init__(self, context: NodeContext) -> None:
        self._context = context

    async def submit(self, principal: Principal, request: OutgoingRequest) -> outbox.Submission:
        """Send a new notice (not a reply)."""
        kind = self._validate(request)
        if kind in notices.REPLY_RULES:
            raise ValidationError(
                "notice.body", f"a {notices.kind_name(kind)} is a reply: use Respond"
            )
        return await self._send(principal, request, kind, in_reply_to=None)

    async def respond(
        self, principal: Principal, in_reply_to: str, request: OutgoingRequest
    ) -> outbox.Submission:
        """Send a reply to a received notice, addressed to its sender."""
        validate_message_id(in_reply_to, "in_reply_to")
        original = await self._received(in_reply_to)
        request = dataclasses.replace(request, recipient_node_ids=(original.sender_node_id,))
        kind = self._validate(request)
        notices.validate_reply(kind, original.kind)
        return await self._send(principal, request, kind, in_reply_to=original)

    async def acknowledge(
        self, principal: Principal, message_id: str, status: int, note: str, client_request_id: str
    ) -> outbox.Submission:
        """Acknowledge a received notice to its sender and mark it acknowledged.

        The acknowledgement quotes the original's case reference and keeps
        its retention; it may not be shared onward.
        """
        validate_message_id(message_id)
        original = await self._received(message_id)
        notice = notices_pb2.Notice(
            protection=notices_pb2.ChildProtectionFlags(
                identity_protected=True,
                victim_identification=notices_pb2.VICTIM_IDENTIFICATION_UNKNOWN,
            ),
            acknowledgement=notices_pb2.Acknowledgement(status=status, note=note),  # type: ignore[arg-type]
        )
        request = OutgoingRequest(
            recipient_node_ids=(original.sender_node_id,),
            case_reference=original.case_reference,
            handling=Handling(
                onward_sharing=envelope_pb2.ONWARD_SHARING_NONE,
                evidence_use=envelope_pb2.EVIDENCE_USE_INTELLIGENCE_ONLY,
                retention_days=original.handling.retention_days,
            ),
            notice=notice,
            client_request_id=client_request_id,
        )
        return await self.respond(principal, message_id, request)

    async def _received(self, message_id: str) -> NoticeRecord:
        found = await self._context.store.read(lambda c: inbox.get_incoming(c, message_id))
        if found is None:
            raise NotFoundError(f"no received notice {message_id}")
        return found[0]

    def _validate(self, request: OutgoingRequest) -> int:
        recipients = request.recipient_node_ids
        if not 1 <= len(recipients) <= MAX_RECIPIENTS:
            raise ValidationError("recipient_node_ids", f"must name 1 to {MAX_RECIPIENTS} nodes")
        for i, recipient in enumerate(recipients):
            validate_node_id(recipient, f"recipient_node_ids[{i}]")
            if recipient == self._context.node_id:
                raise ValidationError(f"recipient_node_ids[{i}]", "is this node itself")
        if len(set(recipients)) != len(recipients):
            raise ValidationError("recipient_node_ids", "must be unique")
        validate_case_reference(request.case_reference)
        request.handling.validate()
        ttl = request.time_to_live
        if ttl is not None and not MIN_TTL <= ttl <= MAX_TTL:
            raise ValidationError("time_to_live", "must be between 1 minute and 30 days")
        if len(request.client_request_id) > MAX_REQUEST_ID:
            raise ValidationError("client_request_id", f"at most {MAX_REQUEST_ID} characters")
        return notices.validate_notice(request.notice, now=self._context.clock.now())

    def _seal_recipients(
        self, trust: TrustList, recipients: tuple[str, ...], now: dt.datetime
    ) -> list[SealRecipient]:
        sealed_to = []
        for i, node_id in enumerate(recipients):
            node = trust.active_node(node_id)
            key = node.sealing_key(now) if node is not None else None
            if node is None or key is None:
                raise PreconditionError(
                    f"recipient_node_ids[{i}]: {node_id} is not an active node with a valid "
                    f"sealing key in trust list version {trust.version}"
                )
            sealed_to.append(SealRecipient(node_id, key.key_id, key.x25519()))
        return sealed_to

    async def _send(
        self,
        principal: Principal,
        request: OutgoingRequest,
        kind: int,
        in_reply_to: NoticeRecord | None,
    ) -> outbox.Submission:
        context = self._context
        now = context.clock.now()
        trust = context.usable_trust(now)
        reply_id = in_reply_to.message_id if in_reply_to else ""
        request_digest = request.digest(reply_id)
        if request.client_request_id:
            earlier = await context.store.read(
                lambda c: outbox.find_submission(c, principal.client_id, request.client_request_id)
            )
            if earlier is not None:
                return _same_request(earlier, request_digest)
        sealed_to = self._seal_recipients(trust, request.recipient_node_ids, now)
        message_id = new_message_id(context.clock, context.node_id)
        ttl = request.time_to_live or context.config.delivery.default_ttl()
        plaintext = notices.encode_notice(request.notice)
        sealed = seal(
            plaintext,
            message_id=message_id,
            sender_node_id=context.node_id,
            recipients=sealed_to,
        )
        header = Header(
            message_id=message_id,
            sender_node_id=context.node_id,
            sender_key_id=context.identity.signing_key_id,
            recipient_node_ids=request.recipient_node_ids,
            created_at=now,
            expires_at=now + ttl,
            kind=kind,
            case_reference=request.case_reference,
            in_reply_to=reply_id,
            handling=request.handling,
            payload_digest=hashlib.sha256(sealed).digest(),
            seal_suite=SUITE,
        )
        envelope = sign_envelope(header, sealed, context.identity.signing_key)
        record = AuditRecord(
            occurred_at=now,
            actor=principal.actor,
            action="notice.submitted",
            message_id=message_id,
            details={
                "kind": notices.kind_name(kind),
                "recipients": ",".join(request.recipient_node_ids),
                "envelope_digest": envelope.digest().hex(),
                "in_reply_to": reply_id,
            },
        )

        def commit(connection: Connection) -> outbox.Submission:
            if request.client_request_id:
                # Checked again inside the transaction: a concurrent retry may have won.
                earlier = outbox.find_submission(
                    connection, principal.client_id, request.client_request_id
                )
                if earlier is not None:
                    return _same_request(earlier, request_digest)
            outbox.insert_outgoing(
                connection,
                header=header,
                envelope=envelope,
                client_id=principal.client_id,
                client_request_id=request.client_request_id or None,
                request_digest=request_digest,
                now=to_millis(now),
            )
            if kind == envelope_pb2.NOTICE_KIND_ACKNOWLEDGEMENT and in_reply_to is not None:
                inbox.set_state(
                    connection,
                    in_reply_to.message_id,
                    inbox.ACKNOWLEDGED,
                    from_states={inbox.RECEIVED, inbox.READ},
                )
            audit_log.append(connection, [record])
            return outbox.Submission(
                message_id=message_id,
                recipient_node_ids=request.recipient_node_ids,
                created_at=to_millis(now),
                expires_at=to_millis(header.expires_at),
            )

        try:
            submission = await context.store.write(commit)
        except IntegrityError:
            # Another process of this node committed the same retry first.
            if not request.client_request_id:
                raise
            earlier = await context.store.read(
                lambda c: outbox.find_submission(c, principal.client_id, request.client_request_id)
            )
            if earlier is None:
                raise
            return _same_request(earlier, request_digest)
        context.outbox_changed.fire()
        context.log.info(
            "notice.submitted",
            message_id=submission.message_id,
            kind=notices.kind_name(kind),
            recipients=len(submission.recipient_node_ids),
        )
        return submission


def _same_request(earlier: outbox.Submission, request_digest: bytes) -> outbox.Submission:
    if earlier.request_digest != request_digest:
        raise ConflictError("client_request_id was already used for a different notice")
    return earlier
