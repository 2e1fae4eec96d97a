"""Conversion between the authority API's messages and the domain."""

from __future__ import annotations

import datetime as dt
import json

from google.protobuf.duration_pb2 import Duration

from exchange import _wire
from exchange._proto.exchange.v1 import audit_pb2, envelope_pb2, matching_pb2
from exchange._proto.exchange.v1 import authority_pb2 as pb
from exchange.audit import LoggedEntry, canonical_details
from exchange.auditing import InclusionProof
from exchange.checkpoint import SignedTreeHead
from exchange.clock import from_millis, to_millis
from exchange.disclosure import MAX_RESTRICTED_SECTIONS
from exchange.envelope import MAX_RECIPIENTS, Handling
from exchange.errors import ValidationError
from exchange.identifiers import IdentifierType
from exchange.querying import Answer, Outcome
from exchange.reading import DeliveryStatus
from exchange.receipt import SignedReceipt
from exchange.registering import RawIdentifier
from exchange.store import inbox, lifecycle, outbox
from exchange.store.notices import NoticeRecord
from exchange.submitting import MAX_TTL, OutgoingRequest

__all__ = [
    "audit_entry",
    "audit_head_response",
    "delivery_status",
    "inclusion_response",
    "logged_entry",
    "outgoing_request",
    "overdue",
    "peer_answer",
    "raw_identifier",
    "signed_tree_head",
    "submitted",
    "summary",
    "tree_head",
    "watch_event",
]

_INBOX_STATES = {
    inbox.RECEIVED: pb.INBOX_STATE_RECEIVED,
    inbox.READ: pb.INBOX_STATE_READ,
    inbox.ACKNOWLEDGED: pb.INBOX_STATE_ACKNOWLEDGED,
    lifecycle.WITHDRAWN: pb.INBOX_STATE_WITHDRAWN,
    lifecycle.PURGED: pb.INBOX_STATE_PURGED,
}
_DELIVERY_STATES = {
    outbox.PENDING: pb.DELIVERY_STATE_PENDING,
    outbox.DELIVERED: pb.DELIVERY_STATE_DELIVERED,
    outbox.FAILED: pb.DELIVERY_STATE_FAILED,
}
_EVENT_TYPES = {
    inbox.NOTICE_RECEIVED: pb.INBOX_EVENT_TYPE_NOTICE_RECEIVED,
    inbox.DELIVERY_FAILED: pb.INBOX_EVENT_TYPE_DELIVERY_FAILED,
    inbox.AUDIT_INCONSISTENT: pb.INBOX_EVENT_TYPE_AUDIT_INCONSISTENT,
}


def _ttl(message: Duration) -> dt.timedelta:
    # Bounded before converting: a huge value would overflow timedelta.
    if not 0 <= message.seconds <= MAX_TTL.total_seconds() or message.nanos < 0:
        raise ValidationError("time_to_live", "must be between 1 minute and 30 days")
    return message.ToTimedelta()


def outgoing_request(request: pb.SubmitNoticeRequest | pb.RespondRequest) -> OutgoingRequest:
    """The OutgoingRequest of a SubmitNotice or Respond call (a reply's recipient comes later)."""
    recipients = request.recipient_node_ids if isinstance(request, pb.SubmitNoticeRequest) else ()
    # Counted before anything is copied: a 24 MiB request may hold millions of empty entries.
    if len(recipients) > MAX_RECIPIENTS:
        raise ValidationError("recipient_node_ids", f"must name 1 to {MAX_RECIPIENTS} nodes")
    if len(request.restricted_sections) > MAX_RESTRICTED_SECTIONS:
        raise ValidationError("restricted_sections", f"at most {MAX_RESTRICTED_SECTIONS} sections")
    if not request.HasField("handling"):
        raise ValidationError("handling", "is required")
    if not request.HasField("notice"):
        raise ValidationError("notice", "is required")
    return OutgoingRequest(
        recipient_node_ids=tuple(recipients),
        case_reference=request.case_reference,
        handling=Handling.from_proto(request.handling),
        notice=request.notice,
        time_to_live=_ttl(request.time_to_live) if request.HasField("time_to_live") else None,
        client_request_id=request.client_request_id,
        restricted_sections=tuple(request.restricted_sections),
    )


def summary(record: NoticeRecord) -> pb.NoticeSummary:
    message = pb.NoticeSummary(
        message_id=record.message_id,
        sender_node_id=record.sender_node_id,
        recipient_node_ids=record.recipient_node_ids,
        kind=record.kind,  # type: ignore[arg-type]
        case_reference=record.case_reference,
        in_reply_to=record.in_reply_to,
        handling=record.handling.to_proto(),
        created_at=_wire.timestamp(from_millis(record.created_at)),
        expires_at=_wire.timestamp(from_millis(record.expires_at)),
        state=_INBOX_STATES.get(record.state, pb.INBOX_STATE_UNSPECIFIED),
    )
    if record.received_at is not None:
        message.received_at.CopyFrom(_wire.timestamp(from_millis(record.received_at)))
    if record.response_deadline is not None:
        message.response_deadline.CopyFrom(_wire.timestamp(from_millis(record.response_deadline)))
    return message


def submitted(submission: outbox.Submission) -> pb.SubmittedNotice:
    return pb.SubmittedNotice(
        message_id=submission.message_id,
        recipient_node_ids=submission.recipient_node_ids,
        created_at=_wire.timestamp(from_millis(submission.created_at)),
        expires_at=_wire.timestamp(from_millis(submission.expires_at)),
    )


def watch_event(event: inbox.InboxEvent) -> pb.WatchInboxResponse:
    return pb.WatchInboxResponse(
        sequence=event.sequence,
        type=_EVENT_TYPES.get(event.event_type, pb.INBOX_EVENT_TYPE_UNSPECIFIED),
        message_id=event.message_id,
        peer_node_id=event.peer_node_id,
        reason=event.reason,
        occurred_at=_wire.timestamp(from_millis(event.occurred_at)),
    )


def _receipt(receipt: SignedReceipt | None) -> envelope_pb2.SignedReceipt | None:
    return None if receipt is None else receipt.to_proto()


def delivery_status(message_id: str, status: DeliveryStatus) -> pb.GetDeliveryStatusResponse:
    return pb.GetDeliveryStatusResponse(
        message_id=message_id,
        recipients=[
            _recipient_delivery(r, r.recipient_node_id in status.withdrawal_applied)
            for r in status.recipients
        ],
        withdrawn_by=status.withdrawn_by,
    )


def _recipient_delivery(record: outbox.DeliveryRecord, applied: bool) -> pb.RecipientDelivery:
    message = pb.RecipientDelivery(
        recipient_node_id=record.recipient_node_id,
        state=_DELIVERY_STATES[record.state],
        attempts=record.attempts,
        last_error=record.last_error,
        receipt=_receipt(record.receipt),
        withdrawal_applied=applied,
    )
    if record.state == outbox.PENDING:
        message.next_attempt_at.CopyFrom(_wire.timestamp(from_millis(record.next_attempt_at)))
    return message


def overdue(request: lifecycle.Overdue) -> pb.OverdueRequest:
    return pb.OverdueRequest(
        message_id=request.message_id,
        kind=request.kind,  # type: ignore[arg-type]
        owed=pb.OWED_BY_US if request.owed_by_us else pb.OWED_TO_US,
        counterpart_node_id=request.counterpart_node_id,
        case_reference=request.case_reference,
        response_deadline=_wire.timestamp(from_millis(request.response_deadline)),
    )


def audit_entry(entry: LoggedEntry) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(
        sequence=entry.sequence,
        occurred_at=_wire.timestamp(from_millis(entry.occurred_at_ms)),
        actor=entry.actor,
        action=entry.action,
        message_id=entry.message_id,
        peer_node_id=entry.peer_node_id,
        details=json.loads(entry.details_json),
        leaf_hash=entry.leaf_hash,
    )


def logged_entry(message: audit_pb2.AuditEntry) -> LoggedEntry:
    """The entry as its node logged it (its leaf hash as sent, to be checked by the reader)."""
    return LoggedEntry(
        sequence=message.sequence,
        occurred_at_ms=to_millis(message.occurred_at.ToDatetime(tzinfo=dt.UTC)),
        actor=message.actor,
        action=message.action,
        message_id=message.message_id,
        peer_node_id=message.peer_node_id,
        details_json=canonical_details(dict(message.details)),
        leaf_hash=message.leaf_hash,
    )


def audit_head_response(signed: SignedTreeHead | None) -> audit_pb2.GetAuditHeadResponse:
    if signed is None:
        return audit_pb2.GetAuditHeadResponse()
    return audit_pb2.GetAuditHeadResponse(head=tree_head(signed))


def inclusion_response(
    proof: InclusionProof, *, with_entry: bool
) -> audit_pb2.GetInclusionProofResponse:
    response = audit_pb2.GetInclusionProofResponse(
        tree_size=proof.tree_size, leaf_hash=proof.entry.leaf_hash, path=proof.path
    )
    if with_entry:
        response.entry.CopyFrom(audit_entry(proof.entry))
    return response


_IDENTIFIER_TYPES = {
    matching_pb2.IDENTIFIER_TYPE_PASSPORT: IdentifierType.PASSPORT,
    matching_pb2.IDENTIFIER_TYPE_PHONE: IdentifierType.PHONE,
    matching_pb2.IDENTIFIER_TYPE_EMAIL: IdentifierType.EMAIL,
    matching_pb2.IDENTIFIER_TYPE_WALLET: IdentifierType.WALLET,
    matching_pb2.IDENTIFIER_TYPE_FILE_SHA256: IdentifierType.FILE_SHA256,
    matching_pb2.IDENTIFIER_TYPE_PERCEPTUAL_HASH: IdentifierType.PERCEPTUAL_HASH,
    matching_pb2.IDENTIFIER_TYPE_VEHICLE_PLATE: IdentifierType.VEHICLE_PLATE,
}


def raw_identifier(message: matching_pb2.IdentifierValue) -> RawIdentifier:
    """An identifier as sent; an unknown type becomes None (refused, naming the field)."""
    return RawIdentifier(_IDENTIFIER_TYPES.get(message.type), message.qualifier, message.value)


_OUTCOMES = {
    Outcome.NO_HIT: matching_pb2.QUERY_OUTCOME_NO_HIT,
    Outcome.HIT: matching_pb2.QUERY_OUTCOME_HIT,
    Outcome.UNAVAILABLE: matching_pb2.QUERY_OUTCOME_UNAVAILABLE,
}


def peer_answer(answer: Answer) -> matching_pb2.PeerAnswer:
    return matching_pb2.PeerAnswer(
        peer_node_id=answer.peer_node_id,
        identifier_index=answer.identifier_index,
        outcome=_OUTCOMES[answer.outcome],
        hits=[
            matching_pb2.Hit(case_reference=h.case_reference, contact_point=h.contact_point)
            for h in answer.hits
        ],
        reason=answer.reason,
    )


def tree_head(signed: SignedTreeHead) -> audit_pb2.SignedTreeHead:
    return audit_pb2.SignedTreeHead(
        checkpoint=signed.text, key_id=signed.key_id, signature=signed.signature
    )


def signed_tree_head(message: audit_pb2.SignedTreeHead) -> SignedTreeHead:
    return SignedTreeHead(message.checkpoint, message.key_id, message.signature)
