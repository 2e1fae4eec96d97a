"""The simulation's scenario, played as each country's authority system.

1. The first country (A) refers a case to the second (B) and third (C).
2. B acknowledges it.
3. C's node is killed; B sends it an assistance request (OPSC art. 6).
4. C restarts, receives the request, and 5. answers with an assistance response.
6. A notifies B that a person is not extradited but prosecuted at home (art. 5(5)).
7. B asks C to seize devices and close premises (art. 7); C reports execution.
8. C coordinates a victim's repatriation with A (art. 8, 9, 10(2)), the victim's
   identity held back; A asks for it (staged disclosure) and C grants it.
9. A alerts B to a convicted offender's travel (art. 10(1)).
10. B refers 5,000 hashes of material hosted in A's territory (art. 3(1)(c), 7).
11. A refers a case that may be shared onward with consent; B asks, A consents,
    B forwards it to C.
12. A withdraws the referral of step 1: B and C stop serving it and confirm.
13. A sends C an urgent request due in seconds and C lets it pass: both report
    it overdue.
14. Every further country refers a case to A.
15. Every node's inbox holds each notice exactly once, and every audit chain verifies.

Each expectation is a `Check`; the scenario never stops at a failed check
unless later steps cannot run without it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import grpc

from exchange import _wire
from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange._proto.exchange.v1 import envelope_pb2 as epb
from exchange._proto.exchange.v1 import matching_pb2 as mpb
from exchange._proto.exchange.v1 import notices_pb2 as npb
from exchange.admin.federation import latest_published
from exchange.audit import LoggedEntry, check_log
from exchange.checkpoint import TreeHead
from exchange.disclosure import readable_fields
from exchange.harness import samples
from exchange.harness.setup import SimNode
from exchange.notices import kind_name
from exchange.rpc import convert
from exchange.rpc.client import AuthorityClient
from exchange.trust import TrustList

__all__ = ["Check", "NodeControl", "Overdue", "Readable", "Report", "Scenario", "Traffic"]

POLL_SECONDS = 0.05
BULK_HASHES = 5_000
# Personal values of the scenario: they cross the wire only sealed, and reach
# the requester only in a disclosure grant.
VICTIM = "Victim: Amira K., born 03/05/2013, passport X1234567"
PREMISES = "12 Harbour Street, unit 4"


def _submitting(
    request: apb.SubmitNoticeRequest,
) -> Callable[[AuthorityClient], Awaitable[apb.SubmittedNotice]]:
    return functools.partial(AuthorityClient.submit, request=request)


def _without_commitments(notice: npb.Notice) -> npb.Notice:
    """The notice as its sender wrote it: the node adds the commitments."""
    copy = npb.Notice()
    copy.CopyFrom(notice)
    del copy.restricted_sections[:]
    return copy


class NodeControl(Protocol):
    """Crashes and restarts nodes (processes in the simulation, in-process in tests)."""

    async def crash(self, node_id: str) -> None: ...

    async def start(self, node_id: str) -> None: ...


@dataclasses.dataclass(frozen=True)
class Check:
    step: str
    expectation: str
    passed: bool
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class Traffic:
    """One notice of the scenario and what became of it."""

    step: str
    sender: str
    recipients: tuple[str, ...]
    kind: str
    message_id: str
    outcome: str


@dataclasses.dataclass(frozen=True)
class Readable:
    """What one recipient could read of one notice."""

    message_id: str
    kind: str
    recipient: str
    fields: tuple[str, ...]
    # Restricted sections named only by commitment: "s1 (VICTIM_IDENTITY)".
    withheld: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Overdue:
    node_id: str
    message_id: str
    owed: str


@dataclasses.dataclass
class Report:
    checks: list[Check] = dataclasses.field(default_factory=list)
    traffic: list[Traffic] = dataclasses.field(default_factory=list)
    readable: list[Readable] = dataclasses.field(default_factory=list)
    overdue: list[Overdue] = dataclasses.field(default_factory=list)
    # Every text and byte string the authorities put into notices: none of it
    # may cross the wire in clear (the proof test checks the captured traffic).
    sensitive: list[bytes] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)


class ScenarioAborted(Exception):
    """A check failed that later steps depend on."""


class Scenario:
    """Plays the scenario against running nodes."""

    def __init__(
        self, nodes: list[SimNode], control: NodeControl, *, timeout: float = 30.0
    ) -> None:
        if len(nodes) < 3:
            raise ValueError("the scenario needs at least three countries")
        self.nodes = nodes
        self._control = control
        self._timeout = timeout
        self.report = Report()
        self._clients: dict[str, AuthorityClient] = {}
        self._auditors: dict[str, AuthorityClient] = {}
        self._received: dict[str, list[str]] = {node.node_id: [] for node in nodes}

    # --- plumbing ---------------------------------------------------------------------------

    def _client(self, node: SimNode) -> AuthorityClient:
        if node.node_id not in self._clients:
            self._clients[node.node_id] = AuthorityClient(
                node.authority_address,
                node.case_worker_token,
                ca_certificate=node.authority_certificate,
            )
        return self._clients[node.node_id]

    def _auditor(self, node: SimNode) -> AuthorityClient:
        if node.node_id not in self._auditors:
            self._auditors[node.node_id] = AuthorityClient(
                node.authority_address,
                node.auditor_token,
                ca_certificate=node.authority_certificate,
            )
        return self._auditors[node.node_id]

    async def close(self) -> None:
        for client in [*self._clients.values(), *self._auditors.values()]:
            await client.close()

    def check(self, step: str, expectation: str, passed: bool, detail: str = "") -> bool:
        self.report.checks.append(Check(step, expectation, passed, detail))
        return passed

    def require(self, step: str, expectation: str, passed: bool, detail: str = "") -> None:
        if not self.check(step, expectation, passed, detail):
            raise ScenarioAborted(f"{step}: {expectation}")

    async def _until(self, probe: Callable[[], Awaitable[bool]]) -> bool:
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            try:
                if await probe():
                    return True
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
            await asyncio.sleep(POLL_SECONDS)
        return False

    async def _delivery(self, sender: SimNode, message_id: str) -> apb.GetDeliveryStatusResponse:
        """The delivery status once no recipient is pending (or the timeout)."""
        status = apb.GetDeliveryStatusResponse()

        async def settled() -> bool:
            nonlocal status
            status = await self._client(sender).delivery_status(message_id)
            return all(r.state != apb.DELIVERY_STATE_PENDING for r in status.recipients)

        await self._until(settled)
        return status

    async def _received_event(self, node: SimNode, message_id: str) -> bool:
        """Whether `node`'s WatchInbox stream reports `message_id` as received."""

        async def watch() -> bool:
            async for event in self._client(node).watch(0):
                if (
                    event.type == apb.INBOX_EVENT_TYPE_NOTICE_RECEIVED
                    and event.message_id == message_id
                ):
                    return True
            return False

        try:
            return await asyncio.wait_for(watch(), self._timeout)
        except TimeoutError:
            return False

    async def _send(
        self,
        step: str,
        sender: SimNode,
        recipients: list[SimNode],
        submit: Callable[[AuthorityClient], Awaitable[apb.SubmittedNotice]],
        expected: npb.Notice | None,
        *,
        restricted: Sequence[npb.RestrictedSection] = (),
    ) -> str:
        """Submit, then check delivery, receipt, inbox event and readable content."""
        if expected is not None:
            self._note_sensitive(expected)
        for section in restricted:
            self._note_sensitive(section)
        submitted = await submit(self._client(sender))
        message_id = submitted.message_id
        status = await self._delivery(sender, message_id)
        delivered = [
            r.recipient_node_id
            for r in status.recipients
            if r.state == apb.DELIVERY_STATE_DELIVERED and r.receipt.body
        ]
        names = ", ".join(r.node_id for r in recipients)
        self.check(
            step,
            f"{sender.node_id} holds a signed receipt from each of {names}",
            sorted(delivered) == sorted(r.node_id for r in recipients),
            f"delivered to {delivered}",
        )
        kind = ""
        for recipient in recipients:
            self._received[recipient.node_id].append(message_id)
            self.check(
                step,
                f"{recipient.node_id}'s authority is told by WatchInbox",
                await self._received_event(recipient, message_id),
            )
            opened = await self._client(recipient).get_notice(message_id)
            kind = kind_name(opened.summary.kind)
            self._note_readable(recipient, message_id, kind, opened.notice)
            if expected is not None:
                self.check(
                    step,
                    f"{recipient.node_id} opens exactly what {sender.node_id} sent",
                    _without_commitments(opened.notice) == expected,
                )
            if restricted:
                self.check(
                    step,
                    f"{recipient.node_id} sees the held-back sections by commitment only",
                    [c.type for c in opened.notice.restricted_sections]
                    == [s.type for s in restricted]
                    and not any(s.content in str(opened) for s in restricted),
                )
        self.report.traffic.append(
            Traffic(
                step,
                sender.node_id,
                tuple(r.node_id for r in recipients),
                kind,
                message_id,
                "delivered" if len(delivered) == len(recipients) else "NOT DELIVERED",
            )
        )
        return message_id

    def _note_sensitive(self, message: Any) -> None:
        """Remember every string and byte value of a notice (8 bytes or more)."""
        for field, value in message.ListFields():
            items = value if field.is_repeated else [value]
            for item in items:
                if field.message_type is not None:
                    self._note_sensitive(item)
                elif isinstance(item, str | bytes):
                    raw = item.encode() if isinstance(item, str) else item
                    # Shorter values would turn up by chance in ciphertext.
                    if len(raw) >= 8:
                        self.report.sensitive.append(raw)

    def _note_readable(
        self, recipient: SimNode, message_id: str, kind: str, notice: npb.Notice
    ) -> None:
        self.report.readable.append(
            Readable(
                message_id=message_id,
                kind=kind,
                recipient=recipient.node_id,
                fields=tuple(readable_fields(notice)),
                withheld=tuple(
                    f"{c.section_id} ({npb.SectionType.Name(c.type).removeprefix('SECTION_TYPE_')})"
                    for c in notice.restricted_sections
                ),
            )
        )

    # --- the scenario -----------------------------------------------------------------------

    async def run(self) -> Report:
        try:
            await self._play()
        except ScenarioAborted:
            pass
        finally:
            await self.close()
        return self.report

    async def _play(self) -> None:
        first, second, third, *others = self.nodes
        now = dt.datetime.now(dt.UTC)

        step = "1 referral"
        referral = samples.case_referral(
            [second.node_id, third.node_id],
            f"{first.country}-2026-0001",
            "Material hosted in recipient territory; suspect believed present.",
        )
        referral_id = await self._send(
            step, first, [second, third], lambda c: c.submit(referral), referral.notice
        )

        step = "2 acknowledgement"
        ack = await self._client(second).acknowledge(
            apb.AcknowledgeRequest(
                message_id=referral_id, status=npb.ACKNOWLEDGEMENT_STATUS_ACCEPTED_FOR_ACTION
            )
        )
        self._received[first.node_id].append(ack.message_id)
        status = await self._delivery(second, ack.message_id)
        self.check(
            step,
            f"{first.node_id} receives the acknowledgement",
            status.recipients[0].state == apb.DELIVERY_STATE_DELIVERED,
        )
        opened = await self._client(first).get_notice(ack.message_id)
        self.check(
            step,
            "the acknowledgement answers the referral",
            opened.summary.in_reply_to == referral_id
            and opened.notice.acknowledgement.status
            == npb.ACKNOWLEDGEMENT_STATUS_ACCEPTED_FOR_ACTION,
        )
        inbox = await self._client(second).list_inbox()
        states = {n.message_id: n.state for n in inbox.notices}
        self.check(
            step,
            f"{second.node_id} marks the referral acknowledged",
            states.get(referral_id) == apb.INBOX_STATE_ACKNOWLEDGED,
        )
        self.report.traffic.append(
            Traffic(
                step,
                second.node_id,
                (first.node_id,),
                "ACKNOWLEDGEMENT",
                ack.message_id,
                "delivered",
            )
        )

        step = "3 node down"
        await self._control.crash(third.node_id)
        request = samples.assistance_request(
            third.node_id,
            f"{second.country}-2026-0107",
            now,
            "Please identify the subscriber behind the account and preserve its data.",
        )
        request_sent = await self._client(second).submit(request)

        async def retried() -> bool:
            status = await self._client(second).delivery_status(request_sent.message_id)
            return status.recipients[0].attempts >= 2

        self.check(
            step,
            f"{second.node_id} keeps the request pending and retries while {third.node_id} is down",
            await self._until(retried),
        )
        pending = await self._client(second).delivery_status(request_sent.message_id)
        self.check(
            step,
            "the request is still pending, not lost or failed",
            pending.recipients[0].state == apb.DELIVERY_STATE_PENDING,
            pending.recipients[0].last_error,
        )

        step = "4 restart"
        await self._control.start(third.node_id)
        self._received[third.node_id].append(request_sent.message_id)
        status = await self._delivery(second, request_sent.message_id)
        self.require(
            step,
            f"{third.node_id} receives the request after its restart",
            status.recipients[0].state == apb.DELIVERY_STATE_DELIVERED,
            status.recipients[0].last_error,
        )
        opened = await self._client(third).get_notice(request_sent.message_id)
        self.check(step, "the request opens intact", opened.notice == request.notice)
        self.report.traffic.append(
            Traffic(
                step,
                second.node_id,
                (third.node_id,),
                "ASSISTANCE_REQUEST",
                request_sent.message_id,
                "delivered after restart",
            )
        )

        step = "5 response"
        response = samples.assistance_response(
            request_sent.message_id,
            f"{third.country}-2026-0033",
            "Subscriber identified; data preserved.",
        )
        response_id = await self._send(
            step, third, [second], lambda c: c.respond(response), response.notice
        )
        answered = await self._client(second).get_notice(response_id)
        self.check(
            step,
            "the response answers the request",
            answered.summary.in_reply_to == request_sent.message_id,
        )

        await self._catalogue(first, second, third, now)
        await self._lifecycle(first, second, third, referral_id)
        await self._hit_no_hit(first, third, now)

        for index, other in enumerate(others, start=15):
            referral = samples.case_referral(
                [first.node_id],
                f"{other.country}-2026-{index:04d}",
                "Suspect travelled to recipient.",
            )
            await self._send(
                f"{index} referral",
                other,
                [first],
                _submitting(referral),
                referral.notice,
            )

        await self._check_exactly_once()
        await self._check_audit_logs()

    async def _hit_no_hit(self, asker: SimNode, holder: SimNode, now: dt.datetime) -> None:
        """Prüm step 1 without showing the identifier, then step 2 by assistance request."""
        step = "14 hit/no-hit"
        case = f"{holder.country}-2026-0077"
        passport = mpb.IdentifierValue(
            type=mpb.IDENTIFIER_TYPE_PASSPORT, qualifier=asker.country, value=b"P 1234 5678"
        )
        registered = await self._client(holder).register_identifiers(
            apb.RegisterIdentifiersRequest(
                case_reference=case,
                contact_point=f"{holder.country} OPSC desk",
                identifiers=[
                    passport,
                    mpb.IdentifierValue(type=mpb.IDENTIFIER_TYPE_PHONE, value=b"+999 555 0100"),
                ],
            )
        )
        self.check(
            step,
            f"{holder.node_id} indexes 2 identifiers of its case, not in clear",
            registered.registered == 2,
        )
        written_otherwise = mpb.IdentifierValue(
            type=passport.type, qualifier=asker.country.lower(), value=b"p-12345678"
        )
        unknown = mpb.IdentifierValue(type=mpb.IDENTIFIER_TYPE_EMAIL, value=b"x@example.org")
        answers = await self._client(asker).query(
            mpb.QueryRequest(identifiers=[written_otherwise, unknown], deadline_ms=5000)
        )
        hits = [a for a in answers.answers if a.outcome == mpb.QUERY_OUTCOME_HIT]
        self.check(
            step,
            f"asking every country about the passport: a hit at {holder.node_id} only, "
            "with its case reference and contact point and nothing more",
            [(a.peer_node_id, a.identifier_index, [h.case_reference for h in a.hits]) for a in hits]
            == [(holder.node_id, 0, [case])],
            f"{len(hits)} hits",
        )
        self.check(
            step,
            "every other answer is a no-hit",
            all(a.outcome == mpb.QUERY_OUTCOME_NO_HIT for a in answers.answers if a not in hits),
        )
        request = samples.assistance_request(
            holder.node_id,
            f"{asker.country}-2026-0078",
            now,
            "Following a hit in your case index: please share the case file details.",
        )
        await self._send(step, asker, [holder], lambda c: c.submit(request), request.notice)

    async def _catalogue(
        self, first: SimNode, second: SimNode, third: SimNode, now: dt.datetime
    ) -> None:
        """Steps 6 to 10: one notice of every other type, and a disclosure round."""
        extradition = samples.extradition_notice(second.node_id, f"{first.country}-2026-0200")
        await self._send(
            "6 extradition", first, [second], _submitting(extradition), extradition.notice
        )

        seizure = samples.seizure_request(
            third.node_id, f"{second.country}-2026-0300", now, PREMISES
        )
        seizure_id = await self._send(
            "7 seizure", second, [third], _submitting(seizure), seizure.notice
        )
        executed = samples.seizure_response(seizure_id, f"{third.country}-2026-0301")
        await self._send(
            "7 seizure", third, [second], lambda c: c.respond(executed), executed.notice
        )

        step = "8 victim support"
        support = samples.victim_support(first.node_id, f"{third.country}-2026-0400", VICTIM)
        support_id = await self._send(
            step,
            third,
            [first],
            _submitting(support),
            support.notice,
            restricted=list(support.restricted_sections),
        )
        asking = samples.disclosure_request(
            support_id, f"{first.country}-2026-0401", sections=["s1"]
        )
        asked_id = await self._send(
            step, first, [third], lambda c: c.respond(asking), asking.notice
        )
        decision = apb.DecideDisclosureRequest(
            request_message_id=asked_id, decision=npb.DISCLOSURE_DECISION_APPROVED
        )
        grant_id = await self._send(
            step, third, [first], lambda c: c.decide_disclosure(decision), None
        )
        granted = await self._client(first).get_notice(grant_id)
        sections = granted.notice.disclosure_grant.sections
        self.check(
            step,
            f"{first.node_id} reads the victim's identity only after {third.node_id} granted it",
            [s.section.content for s in sections] == [VICTIM],
        )

        alert = samples.travel_alert(second.node_id, f"{first.country}-2026-0500", now)
        await self._send("9 travel alert", first, [second], _submitting(alert), alert.notice)

        hashes = [hashlib.sha256(f"material-{n}".encode()).digest() for n in range(BULK_HASHES)]
        bulk = samples.content_hash_referral(first.node_id, f"{second.country}-2026-0600", hashes)
        bulk_id = await self._send("10 content hashes", second, [first], _submitting(bulk), None)
        opened = await self._client(first).get_notice(bulk_id)
        self.check(
            "10 content hashes",
            f"{first.node_id} reads all {BULK_HASHES} hashes",
            [h.value for h in opened.notice.content_hash_referral.hashes] == hashes,
        )
        self.report.sensitive.extend(hashes[:50])

    async def _lifecycle(
        self, first: SimNode, second: SimNode, third: SimNode, referral_id: str
    ) -> None:
        """Steps 11 to 13: onward sharing with consent, withdrawal, overdue requests."""
        step = "11 onward sharing"
        shareable = samples.case_referral(
            [second.node_id], f"{first.country}-2026-0700", "Network spanning three countries."
        )
        shareable.handling.onward_sharing = epb.ONWARD_SHARING_WITH_ORIGINATOR_CONSENT
        shared_id = await self._send(
            step, first, [second], _submitting(shareable), shareable.notice
        )
        asking = samples.disclosure_request(
            shared_id, f"{second.country}-2026-0701", onward=[third.node_id]
        )
        asked_id = await self._send(step, second, [first], lambda c: c.respond(asking), None)
        consent = apb.DecideDisclosureRequest(
            request_message_id=asked_id, decision=npb.DISCLOSURE_DECISION_APPROVED
        )
        await self._send(step, first, [second], lambda c: c.decide_disclosure(consent), None)
        forward = apb.ForwardRequest(
            message_id=shared_id,
            recipient_node_ids=[third.node_id],
            case_reference=f"{second.country}-2026-0702",
        )
        forwarded_id = await self._send(step, second, [third], lambda c: c.forward(forward), None)
        copy = await self._client(third).get_notice(forwarded_id)
        self.check(
            step,
            f"{third.node_id} receives it from {second.node_id}, naming {first.node_id} as origin",
            copy.notice.forwarded_from.origin_message_id == shared_id,
        )

        step = "12 withdrawal"
        withdraw = apb.WithdrawRequest(
            message_id=referral_id, reason=npb.WITHDRAWAL_REASON_INFORMATION_INCORRECT
        )
        withdrawal_id = await self._send(
            step, first, [second, third], lambda c: c.withdraw(withdraw), None
        )

        async def confirmed() -> bool:
            status = await self._client(first).delivery_status(referral_id)
            return all(r.withdrawal_applied for r in status.recipients)

        self.check(
            step,
            f"{second.node_id} and {third.node_id} confirm they applied the withdrawal",
            await self._until(confirmed),
        )
        inbox = await self._client(first).list_inbox(page_size=500)
        self._received[first.node_id].extend(
            n.message_id for n in inbox.notices if n.in_reply_to == withdrawal_id
        )
        for node in (second, third):
            try:
                await self._client(node).get_notice(referral_id)
                served = True
            except grpc.aio.AioRpcError as exc:
                served = exc.code() != grpc.StatusCode.FAILED_PRECONDITION
            self.check(step, f"{node.node_id} no longer serves the withdrawn referral", not served)

        step = "13 overdue"
        request = samples.assistance_request(
            third.node_id, f"{first.country}-2026-0800", dt.datetime.now(dt.UTC), "Urgent."
        )
        request.notice.assistance_request.urgency = npb.URGENCY_URGENT
        request.notice.assistance_request.response_deadline.CopyFrom(
            _wire.timestamp(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3))
        )
        overdue_id = await self._send(step, first, [third], _submitting(request), request.notice)

        async def reported() -> bool:
            owed = {r.message_id for r in (await self._client(third).overdue()).requests}
            return overdue_id in owed

        self.check(
            step,
            f"{third.node_id} reports the unanswered request overdue, and so does {first.node_id}",
            await self._until(reported)
            and overdue_id
            in {r.message_id for r in (await self._client(first).overdue()).requests},
        )
        for node in self.nodes:
            for owed in (await self._client(node).overdue()).requests:
                self.report.overdue.append(
                    Overdue(
                        node.node_id,
                        owed.message_id,
                        "by us" if owed.owed == apb.OWED_BY_US else "to us",
                    )
                )

    async def _check_exactly_once(self) -> None:
        step = "final"
        for node in self.nodes:
            ids: list[str] = []
            token = ""
            while True:
                page = await self._client(node).list_inbox(page_size=100, page_token=token)
                ids.extend(n.message_id for n in page.notices)
                token = page.next_page_token
                if not token:
                    break
            self.check(
                step,
                f"{node.node_id} holds each notice sent to it exactly once",
                sorted(ids) == sorted(self._received[node.node_id]),
                f"{len(ids)} stored, {len(self._received[node.node_id])} expected",
            )

    async def _check_audit_logs(self) -> None:
        _, published = latest_published(self.nodes[0].directory.parent / "federation")
        for node in self.nodes:
            await self._check_audit_log(node, published.trust_list)

    async def _check_audit_log(self, node: SimNode, trust: TrustList) -> None:
        auditor = self._auditor(node)
        entries = await self._audit_entries(auditor)
        heads: list[TreeHead] = []

        async def head_covers_the_log() -> bool:
            response = await auditor.audit_head()
            if not response.HasField("head"):
                return False
            heads[:] = [convert.signed_tree_head(response.head).verify(trust, node.node_id)]
            return heads[0].size >= len(entries)

        signed = await self._until(head_covers_the_log)
        self.check(
            "final",
            f"{node.node_id} signed a head over its whole audit log",
            signed,
            f"{heads[0].size if heads else 0} of {len(entries)} entries",
        )
        if not heads:
            return
        entries = await self._audit_entries(auditor)
        outcome = check_log(entries[: heads[0].size], heads)
        self.check(
            "final",
            f"{node.node_id}'s audit log replays to its signed head ({heads[0].size} entries)",
            outcome.ok,
            outcome.problem,
        )
        # Peers cross-checked its heads and it theirs: no contradiction, no stale list.
        self.check(
            "final",
            f"{node.node_id} reports SERVING (no inconsistent peer log, trust list fresh)",
            await auditor.serving(),
        )

    async def _audit_entries(self, auditor: AuthorityClient) -> list[LoggedEntry]:
        entries: list[LoggedEntry] = []
        while True:
            after = entries[-1].sequence if entries else 0
            page = await auditor.audit_entries(after, 1000)
            entries.extend(convert.logged_entry(e) for e in page.entries)
            if len(page.entries) < 1000:
                return entries
