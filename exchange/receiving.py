"""Receiving an envelope from a peer node.

DESIGN.md's flow, receiving side:

1. Verify the envelope (`envelope.check_envelope`): trust list, signature over
   the bytes as received, sender == TLS peer, this node among the recipients,
   time rules. Anything unauthentic is refused with an error and leaves no
   state behind except the audited refusal.
2. A message id seen before from the same sender gets the original receipt
   (at-least-once on the wire, exactly-once in the store); the same message
   signed anew by its sender (`composing.resign`) gets the same answer about
   the envelope as re-sent, and so does a repeat whose first receipt was
   signed with a key of this node revoked since (it would no longer verify).
3. Open the payload and check the notice against its type's rules, then
   forget the plaintext: content stays sealed at rest.
4. Commit, in one transaction: the envelope as received, the notice row, the
   signed receipt, the audit entry and the inbox event. The receipt is returned
   only after that commit, so a receipt always means a durable copy.

An authentic envelope that is expired, unreadable or invalid is answered with
a signed *rejection* receipt, so that its sender stops retrying.

`receive_many` takes a batch from one peer (a DeliverStream call): the common
case, new notices that reply to nothing, is checked envelope by envelope as
above but looked up in one read and committed in one transaction; anything else
(a repeat, a reply, a withdrawal, a refusal) goes through `receive` on its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from exchange import disclosure, failpoints, notices
from exchange._proto.exchange.v1 import envelope_pb2 as env_pb
from exchange._proto.exchange.v1 import notices_pb2 as pb
from exchange.audit import AuditRecord
from exchange.clock import to_millis
from exchange.composing import Composed, compose, reachable, resigned_copy
from exchange.envelope import Envelope, Handling, Header, check_envelope
from exchange.errors import (
    ConflictError,
    ExchangeError,
    ResourceLimitError,
    ValidationError,
    VerificationError,
    VerificationFailure,
)
from exchange.offload import in_thread_if_large
from exchange.receipt import REJECTION_REASONS, Receipt, SignedReceipt, sign_receipt
from exchange.runtime import NodeContext
from exchange.store import audit_log, inbox, lifecycle, outbox
from exchange.store.notices import (
    INCOMING,
    OUTGOING,
    NoticeRecord,
    find_notice,
    known_message_ids,
    load_envelope,
    stored_digest,
)

__all__ = ["MAX_SEALED_PAYLOAD", "Receiver"]


@dataclasses.dataclass(frozen=True)
class _Accepting:
    """An authentic envelope about to be stored, with its signed answer."""

    envelope: Envelope
    header: Header
    failure: VerificationFailure | None
    effects: _Effects
    receipt: SignedReceipt
    record: AuditRecord


@dataclasses.dataclass
class _Effects:
    """What accepting a notice changes besides storing it, in the same transaction."""

    also: list[Callable[[Connection], object]] = dataclasses.field(default_factory=list)
    audit: list[AuditRecord] = dataclasses.field(default_factory=list)
    outgoing: list[Composed] = dataclasses.field(default_factory=list)


_NONE = _Effects()
_WITHDRAWAL = env_pb.NOTICE_KIND_WITHDRAWAL
# States a withdrawal leaves as they are.
_SETTLED = (lifecycle.WITHDRAWN, lifecycle.PURGED, inbox.REJECTED)
_PROTECTION = pb.ChildProtectionFlags(
    identity_protected=True, victim_identification=pb.VICTIM_IDENTIFICATION_UNKNOWN
)

# The largest notice (a content hash referral) plus the per-recipient wrapped keys.
MAX_SEALED_PAYLOAD = notices.MAX_NOTICE_BYTES + 64 * 1024

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
                raise ResourceLimitError(f"sealed payload exceeds {MAX_SEALED_PAYLOAD} bytes")
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
            earlier = await self._earlier_receipt(header, envelope.digest(), now)
            if earlier is not None:
                return earlier
            if check.failure is not None and check.failure not in _REJECTABLE:
                check.raise_for_failure()
            failure, notice = check.failure, None
            if failure is None:
                failure, notice = await self._open_and_validate(envelope, header)
            effects = await self._effects(header, notice, now) if notice is not None else _NONE
        except ExchangeError as exc:
            await self._audit_refusal(envelope, peer_node_id, exc, now)
            raise
        try:
            return await self._commit(envelope, header, failure, now, effects)
        except ConflictError as exc:
            # Another message under this id was committed meanwhile: refused all the same.
            await self._audit_refusal(envelope, peer_node_id, exc, now)
            raise

    async def receive_many(
        self, envelopes: Sequence[Envelope], peer_node_id: str
    ) -> list[SignedReceipt | ExchangeError]:
        """`receive` each of `envelopes` from the TLS peer `peer_node_id`.

        Returns:
            For each envelope, in order, its signed receipt or the error
            `receive` raises for it (audited as there).
        """
        context = self._context
        now = context.clock.now()
        answers: list[SignedReceipt | ExchangeError | None] = [None] * len(envelopes)
        fresh = self._fresh(envelopes, peer_node_id, now)
        if fresh:
            try:
                for index, receipt in await self._receive_fresh(fresh, now):
                    answers[index] = receipt
            except IntegrityError:
                # One of them was committed meanwhile (by another call): each on its own.
                pass
            except ExchangeError as exc:  # the store: nothing of the batch was committed
                for index, _, _ in fresh:
                    answers[index] = exc

        async def alone(envelope: Envelope) -> SignedReceipt | ExchangeError:
            try:
                return await self.receive(envelope, peer_node_id)
            except ExchangeError as exc:
                return exc

        rest = [i for i, answer in enumerate(answers) if answer is None]
        for index, answer in zip(
            rest, await asyncio.gather(*(alone(envelopes[i]) for i in rest)), strict=True
        ):
            answers[index] = answer
        done = [answer for answer in answers if answer is not None]
        assert len(done) == len(envelopes), "every envelope is answered"
        return done

    def _fresh(
        self, envelopes: Sequence[Envelope], peer_node_id: str, now: dt.datetime
    ) -> list[tuple[int, Envelope, Header]]:
        """The envelopes that pass every check and reply to nothing: taken as a batch."""
        context = self._context
        if context.trust.expired(now):
            return []  # refused one by one, by `receive`
        fresh = []
        seen: set[str] = set()
        for index, envelope in enumerate(envelopes):
            if len(envelope.sealed_payload) > MAX_SEALED_PAYLOAD:
                continue
            check = check_envelope(
                envelope,
                trust=context.trust,
                recipient_node_id=context.node_id,
                peer_node_id=peer_node_id,
                now=now,
                policy=context.policy,
            )
            header = check.header
            if (
                check.failure is None
                and header is not None
                and not header.in_reply_to
                and header.kind not in notices.REPLY_RULES
                and header.message_id not in seen
            ):
                seen.add(header.message_id)
                fresh.append((index, envelope, header))
        return fresh

    async def _receive_fresh(
        self, fresh: list[tuple[int, Envelope, Header]], now: dt.datetime
    ) -> list[tuple[int, SignedReceipt]]:
        """Store the new ones of `fresh` in one transaction; their receipts by index.

        Those already held (repeats) are left to `receive`.
        """
        context = self._context
        ids = [header.message_id for _, _, header in fresh]

        sender = fresh[0][2].sender_node_id  # the TLS peer, checked for each

        def lookup(connection: Connection) -> tuple[set[str], set[str]]:
            return (
                known_message_ids(connection, ids),
                lifecycle.waiting_withdrawals(connection, ids, sender),
            )

        known, overtaken = await context.store.read(lookup)
        batch: list[tuple[int, _Accepting]] = []
        for index, envelope, header in fresh:
            if header.message_id in known:
                continue
            failure, notice = await self._open_and_validate(envelope, header)
            effects = _Effects()
            if notice is not None:
                self._deadline(header, notice, effects)
                if header.kind in notices.SUBSTANTIVE and header.message_id in overtaken:
                    self._withdrawn_on_arrival(header, effects)
            batch.append((index, self._accepting(envelope, header, failure, now, effects)))
        if not batch:
            return []
        accepting = [a for _, a in batch]

        def commit(connection: Connection) -> None:
            self._store(connection, accepting, now)

        await context.store.write(commit)
        self._committed(accepting)
        return [(index, a.receipt) for index, a in batch]

    async def _earlier_receipt(
        self, header: Header, digest: bytes, now: dt.datetime
    ) -> SignedReceipt | None:
        def lookup(connection: Connection) -> tuple[SignedReceipt | None, bool]:
            known = find_notice(connection, header.message_id)
            if known is None:
                return None, False
            if known.direction != INCOMING or known.sender_node_id != header.sender_node_id:
                raise ConflictError(f"message id {header.message_id} is already in use")
            earlier = inbox.own_receipt(connection, header.message_id, self._context.node_id)
            if stored_digest(connection, header.message_id) == digest:
                return earlier, False
            stored = load_envelope(connection, header.message_id)
            if (
                earlier is None
                or stored is None
                or not resigned_copy(Header.from_bytes(stored.header), header)
            ):
                raise ConflictError(
                    f"message id {header.message_id} was already delivered with other content"
                )
            return earlier, True

        earlier, resigned = await self._context.store.read(lookup)
        if earlier is None:
            return None
        if resigned:
            return await self._receipt_for_resigned(earlier, header, digest, now)
        if not self._verifiable(earlier, now):
            return await self._receipt_with_current_key(earlier, header, now)
        return earlier

    def _verifiable(self, receipt: SignedReceipt, now: dt.datetime) -> bool:
        """Whether the sender can still verify a receipt of ours (`verify_receipt`'s key rule)."""
        context = self._context
        own = context.trust.node(context.node_id)
        body = Receipt.from_bytes(receipt.body)
        return (
            own is not None
            and own.signing_key(body.recipient_key_id, body.received_at, now=now) is not None
        )

    async def _receipt_with_current_key(
        self, earlier: SignedReceipt, header: Header, now: dt.datetime
    ) -> SignedReceipt:
        """The first receipt's key has been revoked since (its answer was lost meanwhile):
        a revoked key fails every check from its revocation on, so the sender would retry
        until expiry and report a delivery that happened as failed. The same statement,
        signed now with the current key; the stored receipt stays the evidence of the first.
        """
        context = self._context
        first = Receipt.from_bytes(earlier.body)
        receipt = self._sign_anew(first, first.envelope_digest, now)
        record = AuditRecord(
            occurred_at=now,
            actor=context.actor,
            action="receipt.resigned",
            message_id=header.message_id,
            peer_node_id=header.sender_node_id,
            details={
                "envelope_digest": first.envelope_digest.hex(),
                "previous_key_id": first.recipient_key_id,
                "key_id": Receipt.from_bytes(receipt.body).recipient_key_id,
                "first_received_at": first.received_at.isoformat(),
            },
        )
        await audit_log.record(context.store, record)
        return receipt

    def _sign_anew(self, first: Receipt, digest: bytes, now: dt.datetime) -> SignedReceipt:
        """`first`'s statement about the envelope with `digest`, signed now with our current key."""
        context = self._context
        key_id, key = context.identity.signer(context.trust, now)
        return sign_receipt(
            dataclasses.replace(
                first, envelope_digest=digest, recipient_key_id=key_id, received_at=now
            ),
            key,
        )

    async def _receipt_for_resigned(
        self, earlier: SignedReceipt, header: Header, digest: bytes, now: dt.datetime
    ) -> SignedReceipt:
        """The sender re-signed a message this node holds (its first receipt was lost and
        its key revoked meanwhile): the same answer, now about the envelope as re-sent.

        Stored once all the same; the copy is not stored, its receipt is audited.
        """
        context = self._context
        first = Receipt.from_bytes(earlier.body)
        receipt = self._sign_anew(first, digest, now)
        record = AuditRecord(
            occurred_at=now,
            actor=context.actor,
            action="notice.received_resigned",
            message_id=header.message_id,
            peer_node_id=header.sender_node_id,
            details={
                "envelope_digest": digest.hex(),
                "key_id": header.sender_key_id,
                "first_envelope_digest": first.envelope_digest.hex(),
            },
        )
        await audit_log.record(context.store, record)
        return receipt

    async def _open_and_validate(
        self, envelope: Envelope, header: Header
    ) -> tuple[VerificationFailure | None, pb.Notice | None]:
        """Open the payload and check the notice: (why it must be rejected, or the notice)."""
        context = self._context
        try:
            # Opened to be checked, then forgotten: content stays sealed at rest.
            notice = await in_thread_if_large(
                len(envelope.sealed_payload), self._open_and_check, envelope, header
            )
            await self._validate_reply(header)
            if notice.HasField("disclosure_grant"):
                await self._validate_grant(header, notice.disclosure_grant)
        except VerificationError as exc:
            context.log.warning(
                "envelope.rejected", message_id=header.message_id, reason=exc.failure.value
            )
            return exc.failure, None
        except ValidationError as exc:
            context.log.warning("envelope.rejected", message_id=header.message_id, field=exc.field)
            return VerificationFailure.INVALID_NOTICE, None
        return None, notice

    def _open_and_check(self, envelope: Envelope, header: Header) -> pb.Notice:
        notice = self._context.open_content(
            envelope.sealed_payload, header.message_id, header.sender_node_id
        )
        if notices.validate_notice(notice, now=header.created_at) != header.kind:
            raise ValidationError("kind", "does not match the notice body")
        return notice

    async def _validate_reply(self, header: Header) -> NoticeRecord | None:
        """A reply must refer to a notice it may refer to; returns that notice.

        A response, acknowledgement or disclosure message refers to a notice
        this node sent to the replying node; a withdrawal to a notice the
        withdrawing node sent to this node, or to one not (yet) received: a
        withdrawal may overtake the delivery it cancels.
        """
        rule = notices.REPLY_RULES.get(header.kind)
        if rule is None and not header.in_reply_to:
            return None
        original = (
            await self._context.store.read(lambda c: find_notice(c, header.in_reply_to))
            if header.in_reply_to
            else None
        )
        if original is None and header.in_reply_to and header.kind == _WITHDRAWAL:
            return None
        own = rule is not None and rule.own
        if original is not None and not (
            (
                own
                and original.direction == INCOMING
                and original.sender_node_id == header.sender_node_id
            )
            or (
                not own
                and original.direction == OUTGOING
                and header.sender_node_id in original.recipient_node_ids
            )
        ):
            original = None
        notices.validate_reply(header.kind, original.kind if original else None)
        return original

    async def _validate_grant(self, header: Header, grant: pb.DisclosureGrant) -> None:
        """A grant discloses a live notice; every section is the one committed to."""
        if not grant.sections and not grant.onward_node_ids:
            return
        asked = await self._context.store.read(lambda c: find_notice(c, header.in_reply_to))
        assert asked is not None  # checked by _validate_reply
        original = await self._context.store.read(lambda c: find_notice(c, asked.in_reply_to))
        if original is None or original.direction != INCOMING:
            raise ValidationError("disclosure_grant", "the notice it discloses is not held")
        if original.state in (lifecycle.WITHDRAWN, lifecycle.PURGED):
            raise ValidationError(
                "disclosure_grant", f"the notice it discloses is {original.state}"
            )
        if not grant.sections:
            return
        committed = {
            c.section_id: c.commitment for c in (await self._open_own(original)).restricted_sections
        }
        for i, section in enumerate(grant.sections):
            commitment = committed.get(section.section_id)
            if commitment is None or not disclosure.section_matches(section, commitment):
                raise ValidationError(
                    f"disclosure_grant.sections[{i}]", "does not match the signed commitment"
                )

    async def _open_own(self, record: NoticeRecord) -> pb.Notice:
        """Open a notice this node received, for its own checks."""
        opened = await self._context.open_stored(record)
        if opened is None:
            raise ValidationError("in_reply_to", "the notice referred to is no longer held")
        return opened

    async def _effects(self, header: Header, notice: pb.Notice, now: dt.datetime) -> _Effects:
        """What accepting `notice` changes besides storing it."""
        context = self._context
        effects = _Effects()
        self._deadline(header, notice, effects)
        if notice.HasField("withdrawal"):
            await self._apply_withdrawal(header, notice.withdrawal, effects, now)
        elif header.kind in notices.SUBSTANTIVE:
            await self._withdrawn_already(header, effects)
        if notice.HasField("disclosure_grant"):
            grant = notice.disclosure_grant
            if grant.decision == pb.DISCLOSURE_DECISION_APPROVED and grant.onward_node_ids:
                asked = await context.store.read(lambda c: find_notice(c, header.in_reply_to))
                assert asked is not None
                nodes = list(grant.onward_node_ids)
                effects.also.append(
                    lambda c: lifecycle.record_consents(
                        c, asked.in_reply_to, nodes, header.message_id, to_millis(now)
                    )
                )
        return effects

    @staticmethod
    def _deadline(header: Header, notice: pb.Notice, effects: _Effects) -> None:
        deadline = notices.response_deadline(notice)
        if deadline is not None:
            millis = to_millis(deadline)
            effects.also.append(lambda c: lifecycle.set_deadline(c, header.message_id, millis))

    async def _withdrawn_already(self, header: Header, effects: _Effects) -> None:
        """A notice whose withdrawal overtook it is stored withdrawn, never shown."""
        waiting = await self._context.store.read(
            lambda c: lifecycle.waiting_withdrawal(c, header.message_id, header.sender_node_id)
        )
        if waiting is not None:
            self._withdrawn_on_arrival(header, effects)

    @staticmethod
    def _withdrawn_on_arrival(header: Header, effects: _Effects) -> None:
        effects.also.append(
            lambda c: inbox.set_state(
                c, header.message_id, lifecycle.WITHDRAWN, from_states={inbox.RECEIVED}
            )
        )

    async def _apply_withdrawal(
        self, header: Header, withdrawal: pb.Withdrawal, effects: _Effects, now: dt.datetime
    ) -> None:
        """Withdraw the notice, what was disclosed of it and the copies forwarded of it.

        The originator gets an acknowledgement when something changed (or the
        notice has not arrived: it never will be shown); each forwarded copy's
        recipients get a withdrawal of their own from this node.
        """
        context = self._context
        withdrawn = header.in_reply_to
        target, copies = await context.store.read(
            lambda c: (find_notice(c, withdrawn), lifecycle.forwarded_copies(c, withdrawn))
        )
        changes = target is None or target.state not in _SETTLED
        millis = to_millis(now)

        def mark(connection: Connection) -> None:
            inbox.set_state(
                connection,
                withdrawn,
                lifecycle.WITHDRAWN,
                from_states={inbox.RECEIVED, inbox.READ, inbox.ACKNOWLEDGED},
            )
            # Grants carry sections of the notice: withdrawn with it.
            lifecycle.set_states(
                connection,
                lifecycle.disclosures_about(connection, withdrawn),
                lifecycle.WITHDRAWN,
                unless=_SETTLED,
            )
            for copy_id, _ in copies:
                inbox.set_state(connection, copy_id, lifecycle.WITHDRAWN, from_states={"sent"})
                outbox.cancel_pending(connection, copy_id, millis)

        effects.also.append(mark)
        onward = [
            self._compose_protocol(
                header,
                recipients,
                pb.Notice(protection=_PROTECTION, withdrawal=withdrawal),
                env_pb.NOTICE_KIND_WITHDRAWAL,
                in_reply_to=copy_id,
                now=now,
            )
            for copy_id, recipients in copies
        ]
        confirmation = (
            self._compose_protocol(
                header,
                (header.sender_node_id,),
                pb.Notice(
                    protection=_PROTECTION,
                    acknowledgement=pb.Acknowledgement(
                        status=pb.ACKNOWLEDGEMENT_STATUS_WITHDRAWAL_APPLIED
                    ),
                ),
                env_pb.NOTICE_KIND_ACKNOWLEDGEMENT,
                in_reply_to=header.message_id,
                now=now,
            )
            if changes
            else None
        )
        sent = [c for c in (confirmation, *onward) if c is not None]
        effects.outgoing.extend(sent)
        effects.audit.append(
            AuditRecord(
                occurred_at=now,
                actor=context.actor,
                action="notice.withdrawn",
                message_id=withdrawn,
                peer_node_id=header.sender_node_id,
                details={
                    "withdrawal": header.message_id,
                    "confirmation": confirmation.header.message_id if confirmation else "",
                    "copies_withdrawn": ",".join(copy_id for copy_id, _ in copies),
                },
            )
        )

    def _compose_protocol(
        self,
        header: Header,
        recipients: tuple[str, ...],
        notice: pb.Notice,
        kind: int,
        *,
        in_reply_to: str,
        now: dt.datetime,
    ) -> Composed | None:
        """A protocol message this node sends on its own, to those it can still seal to.

        Best effort: a node without a valid key cannot be told, which must not
        stop this node from applying what it received.
        """
        context = self._context
        trust = context.usable_trust(now)
        reachable_now = reachable(trust, recipients, now)
        if not reachable_now:
            context.log.warning("protocol_message.unsealable", in_reply_to=in_reply_to, kind=kind)
            return None
        return compose(
            identity=context.identity,
            trust=trust,
            clock=context.clock,
            recipients=reachable_now,
            notice=notice,
            kind=kind,
            case_reference=header.case_reference,
            handling=Handling(
                onward_sharing=env_pb.ONWARD_SHARING_NONE,
                evidence_use=env_pb.EVIDENCE_USE_INTELLIGENCE_ONLY,
                retention_days=header.handling.retention_days,
            ),
            ttl=context.config.delivery.default_ttl(),
            in_reply_to=in_reply_to,
        )

    async def _commit(
        self,
        envelope: Envelope,
        header: Header,
        failure: VerificationFailure | None,
        now: dt.datetime,
        effects: _Effects,
    ) -> SignedReceipt:
        accepting = self._accepting(envelope, header, failure, now, effects)

        def commit(connection: Connection) -> SignedReceipt:
            self._store(connection, [accepting], now)
            return accepting.receipt

        try:
            stored = await self._context.store.write(commit)
        except IntegrityError:
            # The same envelope was committed concurrently: answer with that receipt.
            earlier = await self._earlier_receipt(header, envelope.digest(), now)
            if earlier is None:
                raise
            return earlier
        self._committed([accepting])
        return stored

    def _accepting(
        self,
        envelope: Envelope,
        header: Header,
        failure: VerificationFailure | None,
        now: dt.datetime,
        effects: _Effects,
    ) -> _Accepting:
        """The signed receipt and the audit entry of an envelope about to be stored."""
        context = self._context
        accepted = failure is None
        digest = envelope.digest()
        key_id, key = context.identity.signer(context.trust, now)
        receipt = sign_receipt(
            Receipt(
                message_id=header.message_id,
                envelope_digest=digest,
                recipient_node_id=context.node_id,
                recipient_key_id=key_id,
                received_at=now,
                accepted=accepted,
                rejection=0 if failure is None else REJECTION_REASONS[failure],
            ),
            key,
        )
        record = AuditRecord(
            occurred_at=now,
            actor=context.actor,
            action="notice.received" if accepted else "notice.rejected",
            message_id=header.message_id,
            peer_node_id=header.sender_node_id,
            details={
                "kind": notices.kind_name(header.kind),
                "envelope_digest": digest.hex(),
                **({} if failure is None else {"reason": failure.value}),
            },
        )
        return _Accepting(envelope, header, failure, effects, receipt, record)

    def _store(self, connection: Connection, batch: Sequence[_Accepting], now: dt.datetime) -> None:
        """Store envelopes with their receipts, audit entries and inbox events.

        One append to the audit log for the batch, each envelope's entry
        followed by those of its effects.

        Raises:
            sqlalchemy.exc.IntegrityError: a message id is already stored.
        """
        context = self._context
        millis = to_millis(now)
        inbox.insert_incoming_many(
            connection,
            [inbox.Incoming(a.header, a.envelope, a.receipt, a.failure is None) for a in batch],
            node_id=context.node_id,
            received_at=millis,
        )
        records: list[AuditRecord] = []
        for accepting in batch:
            records += [accepting.record, *accepting.effects.audit]
        sequences = iter(audit_log.append(connection, records))
        events = []
        for accepting in batch:
            sequence = next(sequences)
            for _ in accepting.effects.audit:
                next(sequences)
            for change in accepting.effects.also:
                change(connection)
            for outgoing in accepting.effects.outgoing:
                outbox.insert_outgoing(
                    connection,
                    header=outgoing.header,
                    envelope=outgoing.envelope,
                    client_id=None,
                    client_request_id=None,
                    request_digest=None,
                    now=millis,
                )
            if accepting.failure is None:
                events.append(
                    inbox.InboxEvent(
                        sequence=sequence,
                        event_type=inbox.NOTICE_RECEIVED,
                        message_id=accepting.header.message_id,
                        peer_node_id=accepting.header.sender_node_id,
                        reason="",
                        occurred_at=millis,
                    )
                )
        inbox.insert_events(connection, events)
        failpoints.reached("receive.before_commit")

    def _committed(self, batch: Sequence[_Accepting]) -> None:
        """Tell the node's parts what was stored."""
        failpoints.reached("receive.after_commit")
        context = self._context
        context.inbox_changed.fire()
        for accepting in batch:
            header = accepting.header
            context.peer_heard_from(header.sender_node_id)
            if accepting.effects.outgoing:
                context.outbox_changed.fire()
            context.log.info(
                "notice.received" if accepting.failure is None else "notice.rejected",
                message_id=header.message_id,
                sender=header.sender_node_id,
                kind=notices.kind_name(header.kind),
            )

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
        await audit_log.record(self._context.store, record)
        self._context.log.warning("envelope.refused", peer=peer_node_id, reason=reason)
