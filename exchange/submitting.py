"""Sending: submissions, replies, withdrawals, disclosure decisions and forwarding.

The flow of DESIGN.md: a notice is checked against its type's disclosure
policy, sealed for its recipients' current sealing keys and signed
(`exchange.composing`), and the notice, envelope, one outbox row per recipient
and the audit entry are committed in one transaction, with whatever else the
operation changes (a notice marked withdrawn, restricted sections held back).
Only then is the authority told the message id; the delivery worker takes it
from there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import os
from collections.abc import Callable, Sequence

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from exchange import disclosure, failpoints, notices
from exchange._encoding import tagged_digest
from exchange._proto.exchange.v1 import envelope_pb2, notices_pb2
from exchange.audit import AuditRecord
from exchange.clients import Principal
from exchange.clock import to_millis
from exchange.composing import compose, reachable
from exchange.delivery import Lease
from exchange.envelope import MAX_RECIPIENTS, Handling
from exchange.errors import (
    ConflictError,
    NotFoundError,
    PreconditionError,
    ValidationError,
    VerificationError,
)
from exchange.ids import (
    new_message_id,
    validate_case_reference,
    validate_message_id,
    validate_node_id,
)
from exchange.offload import in_thread_if_large
from exchange.runtime import Handover, NodeContext
from exchange.seal import SealRecipient, open_sealed, seal
from exchange.store import audit_log, inbox, lifecycle, outbox
from exchange.store.notices import OUTGOING, NoticeRecord, find_notice

__all__ = ["MAX_TTL", "OutgoingRequest", "Submitter"]

MIN_TTL = dt.timedelta(minutes=1)
MAX_TTL = dt.timedelta(days=30)
MAX_REQUEST_ID = 128
_DAY_MS = 86_400_000
_K = envelope_pb2

InTransaction = Callable[[Connection], None]


@dataclasses.dataclass(frozen=True)
class OutgoingRequest:
    """What an authority asks its node to send.

    Attributes:
        time_to_live: delivery window; None for the node's default.
        client_request_id: idempotency key; empty for none.
        restricted_sections: sections to hold back, sent only as commitments.
    """

    recipient_node_ids: tuple[str, ...]
    case_reference: str
    handling: Handling
    notice: notices_pb2.Notice
    time_to_live: dt.timedelta | None = None
    client_request_id: str = ""
    restricted_sections: tuple[notices_pb2.RestrictedSection, ...] = ()

    def digest(self, in_reply_to: str) -> bytes:
        """Identifies the request's content, to recognize an idempotent retry.

        Commitments are left out: their salts are new at every attempt; the
        sections they commit to are in.
        """
        notice = notices_pb2.Notice()
        notice.CopyFrom(self.notice)
        del notice.restricted_sections[:]
        return tagged_digest(
            "exchange.v1.SubmitRequest",
            ",".join(self.recipient_node_ids).encode(),
            self.case_reference.encode(),
            self.handling.to_proto().SerializeToString(deterministic=True),
            notice.SerializeToString(deterministic=True),
            str(self.time_to_live).encode(),
            in_reply_to.encode(),
            *(s.SerializeToString(deterministic=True) for s in self.restricted_sections),
        )


def _protocol_flags() -> notices_pb2.ChildProtectionFlags:
    return notices_pb2.ChildProtectionFlags(
        identity_protected=True,
        victim_identification=notices_pb2.VICTIM_IDENTIFICATION_UNKNOWN,
    )


class Submitter:
    """Accepts what an authority asks its node to send, and queues it for delivery."""

    def __init__(self, context: NodeContext) -> None:
        self._context = context

    # --- submissions and replies -------------------------------------------------------------

    async def submit(self, principal: Principal, request: OutgoingRequest) -> outbox.Submission:
        """Send a new notice (not a reply)."""
        _check_authored(request.notice)
        # A retry gets the notice it committed (its answer lost to a crash or a cut), not
        # judged anew: a deadline that was ahead then may have passed since.
        earlier = await self._replayed(principal, request.client_request_id, request.digest(""))
        if earlier is not None:
            return earlier
        message_id = self._new_message_id()
        request, held = self._hold_back(request, message_id)
        kind = await self._validate(request)
        if kind in notices.REPLY_RULES:
            raise ValidationError(
                "notice.body", f"a {notices.kind_name(kind)} is a reply: use Respond"
            )
        return await self._send(principal, request, kind, message_id=message_id, held=held)

    async def respond(
        self, principal: Principal, in_reply_to: str, request: OutgoingRequest
    ) -> outbox.Submission:
        """Send a reply to a received notice, addressed to its sender."""
        validate_message_id(in_reply_to, "in_reply_to")
        _check_authored(request.notice)
        original = await self._received(in_reply_to, live=False)
        request = dataclasses.replace(request, recipient_node_ids=(original.sender_node_id,))
        # A retry gets the reply it committed (its answer lost to a crash or a cut), not
        # judged anew: the notice may have been withdrawn since, or a deadline passed.
        earlier = await self._replayed(
            principal, request.client_request_id, request.digest(original.message_id)
        )
        if earlier is not None:
            return earlier
        _check_live(original)
        message_id = self._new_message_id()
        request, held = self._hold_back(request, message_id)
        kind = await self._validate(request)
        if kind == _K.NOTICE_KIND_WITHDRAWAL:
            raise ValidationError("notice.body", "a WITHDRAWAL is sent with Withdraw")
        if kind == _K.NOTICE_KIND_DISCLOSURE_GRANT:
            raise ValidationError("notice.body", "a DISCLOSURE_GRANT is sent with DecideDisclosure")
        notices.validate_reply(kind, original.kind)
        also = None
        if kind == _K.NOTICE_KIND_ACKNOWLEDGEMENT:

            def also(connection: Connection) -> None:
                inbox.set_state(
                    connection,
                    original.message_id,
                    inbox.ACKNOWLEDGED,
                    from_states={inbox.RECEIVED, inbox.READ},
                )

        if kind == _K.NOTICE_KIND_DISCLOSURE_REQUEST:
            await self._check_disclosure_request(original, request.notice.disclosure_request)
        return await self._send(
            principal,
            request,
            kind,
            message_id=message_id,
            in_reply_to=original.message_id,
            held=held,
            also=also,
        )

    async def acknowledge(
        self, principal: Principal, message_id: str, status: int, note: str, client_request_id: str
    ) -> outbox.Submission:
        """Acknowledge a received notice to its sender and mark it acknowledged.

        The acknowledgement quotes the original's case reference and keeps
        its retention; it may not be shared onward.
        """
        validate_message_id(message_id)
        # Whether it is still live is checked by `respond`, after a retry is recognized.
        original = await self._received(message_id, live=False)
        notice = notices_pb2.Notice(
            protection=_protocol_flags(),
            acknowledgement=notices_pb2.Acknowledgement(status=status, note=note),  # type: ignore[arg-type]
        )
        request = OutgoingRequest(
            recipient_node_ids=(original.sender_node_id,),
            case_reference=original.case_reference,
            handling=_protocol_handling(original.handling.retention_days),
            notice=notice,
            client_request_id=client_request_id,
        )
        return await self.respond(principal, message_id, request)

    async def _received(self, message_id: str, *, live: bool = True) -> NoticeRecord:
        """A notice this node received; unless `live` is False, not withdrawn or purged."""
        found = await self._context.store.read(lambda c: inbox.get_incoming(c, message_id))
        if found is None:
            raise NotFoundError(f"no received notice {message_id}")
        if live:
            _check_live(found[0])
        return found[0]

    # --- withdrawal ---------------------------------------------------------------------------

    async def withdraw(
        self, principal: Principal, message_id: str, reason: int, note: str, client_request_id: str
    ) -> outbox.Submission:
        """Withdraw a notice this node sent, from all its recipients.

        Deliveries not yet made are cancelled and held-back sections deleted,
        in the same transaction; the withdrawal goes to every recipient that
        can still be sealed to, since a delivery in flight may yet land.
        """
        validate_message_id(message_id)
        digest = _parameters_digest("exchange.v1.WithdrawRequest", message_id, reason, note)
        earlier = await self._replayed(principal, client_request_id, digest)
        if earlier is not None:
            return earlier
        original = await self._context.store.read(lambda c: find_notice(c, message_id))
        if original is None or original.direction != OUTGOING:
            raise NotFoundError(f"no sent notice {message_id}")
        if original.kind not in notices.SUBSTANTIVE:
            raise PreconditionError(f"a {notices.kind_name(original.kind)} cannot be withdrawn")
        if original.state != "sent":
            raise PreconditionError(f"notice {message_id} is {original.state}")
        now = self._context.clock.now()
        recipients = reachable(self._context.sendable_trust(now), original.recipient_node_ids, now)
        if not recipients:
            raise PreconditionError(
                f"none of the recipients of {message_id} is an active node with a valid "
                "sealing key: a withdrawal cannot be sealed to any of them"
            )
        request = OutgoingRequest(
            recipient_node_ids=recipients,
            case_reference=original.case_reference,
            handling=_protocol_handling(original.handling.retention_days),
            notice=notices_pb2.Notice(
                protection=_protocol_flags(),
                withdrawal=notices_pb2.Withdrawal(reason=reason, note=note),  # type: ignore[arg-type]
            ),
            client_request_id=client_request_id,
        )
        kind = await self._validate(request)
        unreachable = [r for r in original.recipient_node_ids if r not in recipients]
        audit = AuditRecord(
            occurred_at=now,
            actor=principal.actor,
            action="notice.withdrawn",
            message_id=message_id,
            details={"unreachable": ",".join(unreachable)} if unreachable else {},
        )

        def mark(connection: Connection) -> None:
            sent = {"sent"}
            if not inbox.set_state(connection, message_id, lifecycle.WITHDRAWN, from_states=sent):
                raise PreconditionError(f"notice {message_id} was withdrawn meanwhile")
            outbox.cancel_pending(connection, message_id, to_millis(now))
            lifecycle.delete_sections(connection, message_id)

        return await self._send(
            principal,
            request,
            kind,
            in_reply_to=message_id,
            also=mark,
            extra_audit=[audit],
            request_digest=digest,
        )

    # --- staged disclosure --------------------------------------------------------------------

    def _hold_back(
        self, request: OutgoingRequest, message_id: str
    ) -> tuple[OutgoingRequest, list[lifecycle.HeldSection]]:
        """Replace restricted sections by salted commitments; seal them for this node alone."""
        if not request.restricted_sections:
            return request, []
        if len(request.restricted_sections) > disclosure.MAX_RESTRICTED_SECTIONS:
            raise ValidationError(
                "restricted_sections", f"at most {disclosure.MAX_RESTRICTED_SECTIONS} sections"
            )
        notice = notices_pb2.Notice()
        notice.CopyFrom(request.notice)
        held = []
        for i, section in enumerate(request.restricted_sections):
            disclosure.check_section(section, f"restricted_sections[{i}]")
            section_id = f"s{i + 1}"
            salt = os.urandom(32)
            notice.restricted_sections.append(
                notices_pb2.SectionCommitment(
                    section_id=section_id,
                    type=section.type,
                    commitment=disclosure.commit_section(section, salt),
                )
            )
            sealed = self._seal_to_self(section, _held_label(message_id, section_id, salt))
            held.append(lifecycle.HeldSection(section_id, section.type, salt, sealed))
        return dataclasses.replace(request, notice=notice), held

    def _seal_to_self(self, section: notices_pb2.RestrictedSection, label: str) -> bytes:
        """Sealed at rest to this node's own key, bound to its notice, section id and salt."""
        identity = self._context.identity
        key_id = identity.sealing_key_id
        key = identity.sealing_keys[key_id]
        return seal(
            section.SerializeToString(deterministic=True),
            message_id=label,
            sender_node_id=identity.node_id,
            recipients=[SealRecipient(identity.node_id, key_id, key.public_key())],
        )

    def _unseal_own(
        self, message_id: str, held: lifecycle.HeldSection
    ) -> notices_pb2.RestrictedSection:
        identity = self._context.identity
        try:
            plaintext = open_sealed(
                held.sealed,
                message_id=_held_label(message_id, held.section_id, held.salt),
                sender_node_id=identity.node_id,
                recipient_node_id=identity.node_id,
                keys=identity.sealing_keys,
            )
        except VerificationError:
            raise PreconditionError(f"section {held.section_id} can no longer be opened") from None
        return notices_pb2.RestrictedSection.FromString(plaintext)

    async def _check_disclosure_request(
        self, original: NoticeRecord, request: notices_pb2.DisclosureRequest
    ) -> None:
        """A disclosure request names sections the original has, or asks for onward consent."""
        if request.purpose == notices_pb2.DISCLOSURE_PURPOSE_ONWARD_SHARING:
            if original.handling.onward_sharing != _K.ONWARD_SHARING_WITH_ORIGINATOR_CONSENT:
                raise PreconditionError(
                    f"notice {original.message_id} may not be shared onward at all"
                )
            return
        opened = await self._open_received(original)
        committed = {c.section_id for c in opened.restricted_sections}
        for i, section_id in enumerate(request.section_ids):
            if section_id not in committed:
                raise ValidationError(
                    f"notice.disclosure_request.section_ids[{i}]",
                    f"notice {original.message_id} has no restricted section {section_id}",
                )

    async def decide_disclosure(
        self,
        principal: Principal,
        request_id: str,
        decision: int,
        refusal_ground: int,
        client_request_id: str,
    ) -> outbox.Submission:
        """Answer a received DisclosureRequest, sealed to the requester alone.

        One answer per request: the decision is recorded in the transaction
        that queues the grant, under the request's id as primary key.
        """
        validate_message_id(request_id, "request_message_id")
        digest = _parameters_digest(
            "exchange.v1.DecideDisclosureRequest", request_id, decision, refusal_ground
        )
        earlier = await self._replayed(principal, client_request_id, digest)
        if earlier is not None:
            return earlier
        received = await self._received(request_id)
        if received.kind != _K.NOTICE_KIND_DISCLOSURE_REQUEST:
            raise NotFoundError(f"no received disclosure request {request_id}")
        asked = (await self._open_received(received)).disclosure_request
        original = await self._context.store.read(lambda c: find_notice(c, received.in_reply_to))
        if original is None or original.direction != OUTGOING:
            raise NotFoundError(f"the notice asked about ({received.in_reply_to}) is not held")
        if original.state != "sent":
            raise PreconditionError(f"notice {original.message_id} is {original.state}")
        if await self._context.store.read(lambda c: lifecycle.decided(c, request_id)):
            raise PreconditionError(f"disclosure request {request_id} was already answered")
        grant_id = self._new_message_id()
        grant = notices_pb2.DisclosureGrant(
            decision=decision,  # type: ignore[arg-type]
            refusal_ground=refusal_ground,  # type: ignore[arg-type]
        )
        if decision == notices_pb2.DISCLOSURE_DECISION_APPROVED:
            if asked.purpose == notices_pb2.DISCLOSURE_PURPOSE_ONWARD_SHARING:
                grant.onward_node_ids.extend(asked.onward_node_ids)
            else:
                grant.sections.extend(await self._disclose(original, list(asked.section_ids)))
        request = OutgoingRequest(
            recipient_node_ids=(received.sender_node_id,),
            case_reference=original.case_reference,
            handling=_protocol_handling(original.handling.retention_days),
            notice=notices_pb2.Notice(protection=_protocol_flags(), disclosure_grant=grant),
            client_request_id=client_request_id,
        )
        kind = await self._validate(request)
        now = self._context.clock.now()
        audit = AuditRecord(
            occurred_at=now,
            actor=principal.actor,
            action="disclosure.approved"
            if decision == notices_pb2.DISCLOSURE_DECISION_APPROVED
            else "disclosure.refused",
            message_id=original.message_id,
            peer_node_id=received.sender_node_id,
            details={
                "request": request_id,
                "purpose": notices_pb2.DisclosurePurpose.Name(asked.purpose),
                "sections": ",".join(s.section_id for s in grant.sections),
                "onward_nodes": ",".join(grant.onward_node_ids),
            },
        )

        def record(connection: Connection) -> None:
            # Checked again where it counts: a withdrawal or another answer may have won.
            current = find_notice(connection, original.message_id)
            if current is None or current.state != "sent":
                raise PreconditionError(f"notice {original.message_id} is no longer sent")
            if lifecycle.decided(connection, request_id):
                raise PreconditionError(f"disclosure request {request_id} was already answered")
            lifecycle.record_decision(connection, request_id, grant_id, to_millis(now))

        try:
            return await self._send(
                principal,
                request,
                kind,
                message_id=grant_id,
                in_reply_to=request_id,
                also=record,
                extra_audit=[audit],
                request_digest=digest,
            )
        except IntegrityError:
            # Another process of this node recorded its answer first.
            raise PreconditionError(
                f"disclosure request {request_id} was already answered"
            ) from None

    async def _disclose(
        self, original: NoticeRecord, section_ids: list[str]
    ) -> list[notices_pb2.DisclosedSection]:
        held = await self._context.store.read(
            lambda c: lifecycle.load_sections(c, original.message_id, section_ids)
        )
        by_id = {h.section_id: h for h in held}
        missing = [s for s in section_ids if s not in by_id]
        if missing:
            raise PreconditionError(
                f"sections {', '.join(missing)} of {original.message_id} are no longer held"
            )
        return [
            notices_pb2.DisclosedSection(
                section_id=section_id,
                section=self._unseal_own(original.message_id, by_id[section_id]),
                salt=by_id[section_id].salt,
            )
            for section_id in section_ids
        ]

    # --- forwarding ---------------------------------------------------------------------------

    async def forward(
        self,
        principal: Principal,
        message_id: str,
        recipients: Sequence[str],
        case_reference: str,
        client_request_id: str,
    ) -> outbox.Submission:
        """Forward a received notice, as its handling code and the originator allow.

        The copy names its origin, carries the forwarder's case reference,
        may not travel further, and is kept no longer than the original.
        Every refusal is audited: an attempt to share onward is a disclosure
        decision even when it fails.
        """
        validate_message_id(message_id)
        recipients = tuple(recipients)
        self._check_recipients(recipients)
        validate_case_reference(case_reference)
        digest = _parameters_digest(
            "exchange.v1.ForwardRequest", message_id, ",".join(recipients), case_reference
        )
        earlier = await self._replayed(principal, client_request_id, digest)
        if earlier is not None:
            return earlier
        found = await self._context.store.read(lambda c: inbox.get_incoming(c, message_id))
        now = self._context.clock.now()
        try:
            if found is None:
                raise NotFoundError(f"no received notice {message_id}")
            original = found[0]
            await self._check_onward(original, recipients, now)
            opened = await self._open_received(original)
        except (NotFoundError, PreconditionError) as refusal:
            origin = found[0].sender_node_id if found is not None else ""
            await self._audit_refusal(principal, message_id, origin, recipients, str(refusal))
            raise
        copy = notices_pb2.Notice()
        copy.CopyFrom(opened)
        # Held-back sections stay with the originator; the copy names its origin.
        del copy.restricted_sections[:]
        copy.forwarded_from.CopyFrom(
            notices_pb2.ForwardedFrom(
                origin_node_id=original.sender_node_id, origin_message_id=original.message_id
            )
        )
        request = OutgoingRequest(
            recipient_node_ids=recipients,
            case_reference=case_reference,
            handling=dataclasses.replace(
                original.handling,
                onward_sharing=_K.ONWARD_SHARING_NONE,
                retention_days=_days_left(original, now),
            ),
            notice=copy,
            client_request_id=client_request_id,
        )
        kind = await self._validate(request)
        audit = AuditRecord(
            occurred_at=now,
            actor=principal.actor,
            action="notice.forwarded",
            message_id=original.message_id,
            peer_node_id=original.sender_node_id,
            details={"to": ",".join(recipients)},
        )
        return await self._send(
            principal,
            request,
            kind,
            extra_audit=[audit],
            request_digest=digest,
            origin_message_id=original.message_id,
        )

    async def _check_onward(
        self, original: NoticeRecord, recipients: Sequence[str], now: dt.datetime
    ) -> None:
        sharing = original.handling.onward_sharing
        if original.state in (lifecycle.WITHDRAWN, lifecycle.PURGED):
            raise PreconditionError(f"notice {original.message_id} is {original.state}")
        if original.kind not in notices.SUBSTANTIVE:
            raise PreconditionError(
                f"a {notices.kind_name(original.kind)} is a protocol message: never forwarded"
            )
        if _days_left(original, now) < 1:
            raise PreconditionError(f"the retention of {original.message_id} has ended")
        if sharing == _K.ONWARD_SHARING_NONE:
            raise PreconditionError("its handling code forbids onward sharing")
        if sharing == _K.ONWARD_SHARING_WITHIN_RECEIVING_AUTHORITY:
            raise PreconditionError(
                "its handling code allows sharing within this authority only, not with other nodes"
            )
        consented = await self._context.store.read(
            lambda c: lifecycle.consented_nodes(c, original.message_id)
        )
        missing = [r for r in recipients if r not in consented]
        if missing:
            raise PreconditionError(
                f"no signed consent of {original.sender_node_id} on record for "
                f"{', '.join(missing)}; ask with a DisclosureRequest for onward sharing"
            )

    async def _audit_refusal(
        self,
        principal: Principal,
        message_id: str,
        origin_node_id: str,
        recipients: Sequence[str],
        why: str,
    ) -> None:
        record = AuditRecord(
            occurred_at=self._context.clock.now(),
            actor=principal.actor,
            action="forward.refused",
            message_id=message_id,
            peer_node_id=origin_node_id,
            details={"to": ",".join(recipients), "reason": why[:200]},
        )
        await audit_log.record(self._context.store, record)

    async def _open_received(self, record: NoticeRecord) -> notices_pb2.Notice:
        """Open a received notice for the node's own use (not a disclosure to a person)."""
        opened = await self._context.open_stored(record)
        if opened is None:
            raise PreconditionError(f"the content of {record.message_id} is no longer held")
        return opened

    # --- common path --------------------------------------------------------------------------

    def _new_message_id(self) -> str:
        return new_message_id(self._context.clock, self._context.node_id)

    def _check_recipients(self, recipients: Sequence[str]) -> None:
        if not 1 <= len(recipients) <= MAX_RECIPIENTS:
            raise ValidationError("recipient_node_ids", f"must name 1 to {MAX_RECIPIENTS} nodes")
        for i, recipient in enumerate(recipients):
            validate_node_id(recipient, f"recipient_node_ids[{i}]")
            if recipient == self._context.node_id:
                raise ValidationError(f"recipient_node_ids[{i}]", "is this node itself")
        if len(set(recipients)) != len(recipients):
            raise ValidationError("recipient_node_ids", "must be unique")

    async def _validate(self, request: OutgoingRequest) -> int:
        self._check_recipients(request.recipient_node_ids)
        validate_case_reference(request.case_reference)
        request.handling.validate()
        ttl = request.time_to_live
        if ttl is not None and not MIN_TTL <= ttl <= MAX_TTL:
            raise ValidationError("time_to_live", "must be between 1 minute and 30 days")
        if len(request.client_request_id) > MAX_REQUEST_ID:
            raise ValidationError("client_request_id", f"at most {MAX_REQUEST_ID} characters")
        return await in_thread_if_large(
            request.notice.ByteSize(),
            notices.validate_notice,
            request.notice,
            now=self._context.clock.now(),
        )

    async def _replayed(
        self, principal: Principal, client_request_id: str, request_digest: bytes
    ) -> outbox.Submission | None:
        """The earlier result of an idempotent retry, found before anything is checked.

        Raises:
            ConflictError: the key was used for a different request.
        """
        if not client_request_id:
            return None
        earlier = await self._context.store.read(
            lambda c: outbox.find_submission(c, principal.client_id, client_request_id)
        )
        return None if earlier is None else _same_request(earlier, request_digest)

    async def _send(
        self,
        principal: Principal,
        request: OutgoingRequest,
        kind: int,
        *,
        message_id: str = "",
        in_reply_to: str = "",
        held: Sequence[lifecycle.HeldSection] = (),
        also: InTransaction | None = None,
        extra_audit: Sequence[AuditRecord] = (),
        request_digest: bytes | None = None,
        origin_message_id: str | None = None,
    ) -> outbox.Submission:
        """Compose, then commit the notice with everything else the operation changes.

        Args:
            message_id: chosen beforehand when something is bound to it.
            request_digest: identifies the request for idempotent retries, when
                the request's own digest does not (the operations that take
                parameters rather than a notice).
            origin_message_id: a forwarded copy's original.
        """
        context = self._context
        now = context.clock.now()
        if request_digest is None:
            request_digest = request.digest(in_reply_to)
        earlier = await self._replayed(principal, request.client_request_id, request_digest)
        if earlier is not None:
            return earlier
        # A stale list may no longer say who the members are and which keys are good.
        trust = context.sendable_trust(now)
        composed = await in_thread_if_large(
            request.notice.ByteSize(),
            compose,
            identity=context.identity,
            trust=trust,
            clock=context.clock,
            recipients=request.recipient_node_ids,
            notice=request.notice,
            kind=kind,
            case_reference=request.case_reference,
            handling=request.handling,
            ttl=request.time_to_live or context.config.delivery.default_ttl(),
            in_reply_to=in_reply_to,
            message_id=message_id,
        )
        header, envelope = composed.header, composed.envelope
        deadline = notices.response_deadline(request.notice)
        record = AuditRecord(
            occurred_at=now,
            actor=principal.actor,
            action="notice.submitted",
            message_id=header.message_id,
            details={
                "kind": notices.kind_name(kind),
                "recipients": ",".join(request.recipient_node_ids),
                "envelope_digest": envelope.digest().hex(),
                "in_reply_to": in_reply_to,
                **({"restricted_sections": str(len(held))} if held else {}),
            },
        )

        handover, lease = context.handover, None
        if handover is not None:
            recipients, size = len(header.recipient_node_ids), outbox.batch_bytes(envelope)
            lease = handover.lease_for(recipients, size, to_millis(now))

        def commit(connection: Connection) -> tuple[outbox.Submission, list[outbox.OutboxItem]]:
            if request.client_request_id:
                # Checked again inside the transaction: a concurrent retry may have won.
                earlier = outbox.find_submission(
                    connection, principal.client_id, request.client_request_id
                )
                if earlier is not None:
                    return _same_request(earlier, request_digest), []
            rows = outbox.insert_outgoing(
                connection,
                header=header,
                envelope=envelope,
                client_id=principal.client_id,
                client_request_id=request.client_request_id or None,
                request_digest=request_digest,
                now=to_millis(now),
                origin_message_id=origin_message_id,
                lease_until=lease.until if lease else 0,
            )
            if deadline is not None:
                lifecycle.set_deadline(connection, header.message_id, to_millis(deadline))
            lifecycle.insert_sections(connection, header.message_id, held)
            if also is not None:
                also(connection)
            audit_log.append(connection, [record, *extra_audit])
            failpoints.reached("submit.before_commit")
            submission = outbox.Submission(
                message_id=header.message_id,
                recipient_node_ids=request.recipient_node_ids,
                created_at=to_millis(header.created_at),
                expires_at=to_millis(header.expires_at),
            )
            return submission, rows

        written = asyncio.ensure_future(context.store.write(commit))
        written.add_done_callback(functools.partial(_after_write, context, handover, lease))
        try:
            # Shielded: should this call be cancelled, the rows still reach the worker.
            submission, _ = await asyncio.shield(written)
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
        failpoints.reached("submit.after_commit")
        context.log.info(
            "notice.submitted",
            message_id=submission.message_id,
            kind=notices.kind_name(kind),
            recipients=len(submission.recipient_node_ids),
        )
        return submission


def _after_write(
    context: NodeContext,
    handover: Handover | None,
    lease: Lease | None,
    written: asyncio.Future[tuple[outbox.Submission, list[outbox.OutboxItem]]],
) -> None:
    """Tell the worker of the rows committed, if any, whether or not the caller still waits:
    handed over if they were leased to it, else the worker is woken to claim them.

    (Retrieving the outcome here also keeps a failure the cancelled caller never sees
    from being reported as unretrieved.)
    """
    committed = not written.cancelled() and written.exception() is None
    rows = written.result()[1] if committed else []
    if lease is not None and handover is not None:
        handover.hand_over(lease, rows)
    elif rows:
        context.outbox_changed.fire()


def _protocol_handling(retention_days: int) -> Handling:
    """Protocol messages are never shared onward and are not evidence."""
    return Handling(
        onward_sharing=_K.ONWARD_SHARING_NONE,
        evidence_use=_K.EVIDENCE_USE_INTELLIGENCE_ONLY,
        retention_days=retention_days,
    )


def _check_live(record: NoticeRecord) -> None:
    if record.state in (lifecycle.WITHDRAWN, lifecycle.PURGED):
        raise PreconditionError(f"notice {record.message_id} is {record.state}")


def _check_authored(notice: notices_pb2.Notice) -> None:
    """What only a node writes into a notice, an authority may not."""
    if notice.HasField("forwarded_from"):
        raise ValidationError("notice.forwarded_from", "is set by a node when it forwards")
    if notice.restricted_sections:
        raise ValidationError(
            "notice.restricted_sections",
            "commitments are made by the node: give the sections to hold back "
            "in the request's restricted_sections",
        )


def _held_label(message_id: str, section_id: str, salt: bytes) -> str:
    """What a held-back section's seal is bound to: it opens only for its own notice."""
    return f"held-section:{message_id}:{section_id}:{salt.hex()}"


def _days_left(original: NoticeRecord, now: dt.datetime) -> int:
    """Whole days (rounded up) before `original`'s retention ends; 0 or less if it has."""
    kept_since = original.received_at or original.created_at
    left = kept_since + original.handling.retention_days * _DAY_MS - to_millis(now)
    return -(-left // _DAY_MS)


def _parameters_digest(operation: str, *parameters: str | int) -> bytes:
    """Identifies a request made of parameters, to recognize an idempotent retry."""
    return tagged_digest(operation, *(str(p).encode() for p in parameters))


def _same_request(earlier: outbox.Submission, request_digest: bytes) -> outbox.Submission:
    if earlier.request_digest != request_digest:
        raise ConflictError("client_request_id was already used for a different notice")
    return earlier
