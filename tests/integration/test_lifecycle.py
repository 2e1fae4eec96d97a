"""After delivery: staged disclosure, onward sharing, withdrawal, retention and deadlines.

Each test drives real nodes (XA, XB, XC) over mTLS through their authority
APIs, on both store engines.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange._proto.exchange.v1 import envelope_pb2 as epb
from exchange._proto.exchange.v1 import notices_pb2 as npb
from exchange.clock import ManualClock
from exchange.disclosure import MAX_HASHES
from exchange.harness import samples
from exchange.ids import new_message_id
from exchange.receipt import Receipt
from exchange.rpc.client import AuthorityClient
from exchange.store import audit_log, lifecycle
from exchange.store.notices import find_notice, load_envelope
from tests.conftest import DatabaseFactory
from tests.live import Federation, start_federation
from tests.peers import craft_envelope, deliver_as

VICTIM = "Victim: Jane Roe, born 12/03/2013, lives at 4 Elm Street"


async def eventually(probe: Callable[[], Awaitable[bool]], seconds: float = 15) -> None:
    for _ in range(int(seconds / 0.05)):
        if await probe():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def delivered(client: AuthorityClient, message_id: str) -> apb.GetDeliveryStatusResponse:
    status = apb.GetDeliveryStatusResponse()

    async def done() -> bool:
        nonlocal status
        status = await client.delivery_status(message_id)
        return all(r.state == apb.DELIVERY_STATE_DELIVERED for r in status.recipients)

    await eventually(done)
    return status


async def received(client: AuthorityClient, message_id: str) -> apb.GetNoticeResponse:
    async def arrived() -> bool:
        return any(n.message_id == message_id for n in (await client.list_inbox()).notices)

    await eventually(arrived)
    return await client.get_notice(message_id)


def referral(
    recipients: list[str], sharing: int = epb.ONWARD_SHARING_NONE
) -> apb.SubmitNoticeRequest:
    request = samples.case_referral(
        recipients, "XA-2026-0100", "A referral with a held-back victim."
    )
    request.handling.onward_sharing = sharing  # type: ignore[assignment]
    request.restricted_sections.append(
        npb.RestrictedSection(type=npb.SECTION_TYPE_VICTIM_IDENTITY, content=VICTIM)
    )
    return request


def approve(request_id: str, client_request_id: str = "") -> apb.DecideDisclosureRequest:
    return apb.DecideDisclosureRequest(
        request_message_id=request_id,
        decision=npb.DISCLOSURE_DECISION_APPROVED,
        client_request_id=client_request_id,
    )


def withdraw(message_id: str, request_id: str = "") -> apb.WithdrawRequest:
    return apb.WithdrawRequest(
        message_id=message_id,
        reason=npb.WITHDRAWAL_REASON_INFORMATION_INCORRECT,
        client_request_id=request_id,
    )


async def refused_with(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    return refused.value


async def shared_with_consent(
    federation: Federation, to: str
) -> tuple[apb.SubmittedNotice, apb.SubmittedNotice]:
    """XA refers a case to XB with a held-back section, and consents to XB sharing it with `to`.

    Returns the referral and XA's consent.
    """
    a, b = federation.client(0), federation.client(1)
    xb = federation.sim(1).node_id
    sent = await a.submit(referral([xb], epb.ONWARD_SHARING_WITH_ORIGINATOR_CONSENT))
    await received(b, sent.message_id)
    asked = await b.respond(samples.disclosure_request(sent.message_id, "XB-1", onward=[to]))
    await received(a, asked.message_id)
    consent = await a.decide_disclosure(approve(asked.message_id))
    await received(b, consent.message_id)
    return sent, consent


async def asked_for_section(
    federation: Federation,
) -> tuple[apb.SubmittedNotice, apb.SubmittedNotice]:
    """XA refers a case to XB with a held-back section, and XB asks for it: (referral, request)."""
    a, b = federation.client(0), federation.client(1)
    sent = await a.submit(referral([federation.sim(1).node_id]))
    await received(b, sent.message_id)
    asked = await b.respond(samples.disclosure_request(sent.message_id, "XB-1", sections=["s1"]))
    await received(a, asked.message_id)
    return sent, asked


PROTECTION = npb.ChildProtectionFlags(
    identity_protected=True, victim_identification=npb.VICTIM_IDENTIFICATION_UNKNOWN
)


def crafted_grant(content: str) -> npb.Notice:
    """An approved grant of section s1 with `content`, as a node could craft one."""
    section = npb.RestrictedSection(type=npb.SECTION_TYPE_VICTIM_IDENTITY, content=content)
    return npb.Notice(
        protection=PROTECTION,
        disclosure_grant=npb.DisclosureGrant(
            decision=npb.DISCLOSURE_DECISION_APPROVED,
            sections=[npb.DisclosedSection(section_id="s1", section=section, salt=bytes(32))],
        ),
    )


async def granted_section(federation: Federation, message_id: str) -> str:
    """XB asks XA for section s1 of `message_id` and receives it; returns the grant's id."""
    a, b = federation.client(0), federation.client(1)
    asked = await b.respond(samples.disclosure_request(message_id, "XB-1", sections=["s1"]))
    await received(a, asked.message_id)
    grant = await a.decide_disclosure(approve(asked.message_id))
    await received(b, grant.message_id)
    return grant.message_id


def forward(message_id: str, *to: str, request_id: str = "") -> apb.ForwardRequest:
    return apb.ForwardRequest(
        message_id=message_id,
        recipient_node_ids=to,
        case_reference="XB-2026-0200",
        client_request_id=request_id,
    )


# --- staged disclosure -------------------------------------------------------------------------


async def test_a_restricted_section_crosses_only_as_a_commitment_until_granted(
    federation: Federation,
) -> None:
    a, b = federation.client(0), federation.client(1)
    xb = federation.sim(1).node_id
    sent = await a.submit(referral([xb]))
    opened = await received(b, sent.message_id)
    (commitment,) = opened.notice.restricted_sections
    assert commitment.type == npb.SECTION_TYPE_VICTIM_IDENTITY
    assert len(commitment.commitment) == 32
    assert VICTIM not in str(opened)

    asked = await b.respond(samples.disclosure_request(sent.message_id, "XB-1", sections=["s1"]))
    request = await received(a, asked.message_id)
    assert list(request.notice.disclosure_request.section_ids) == ["s1"]
    granted = await a.decide_disclosure(
        apb.DecideDisclosureRequest(
            request_message_id=asked.message_id, decision=npb.DISCLOSURE_DECISION_APPROVED
        )
    )
    grant = await received(b, granted.message_id)
    (section,) = grant.notice.disclosure_grant.sections
    assert (section.section_id, section.section.content) == ("s1", VICTIM)
    assert grant.summary.in_reply_to == asked.message_id
    # Once answered, the request cannot be answered again.
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await a.decide_disclosure(
            apb.DecideDisclosureRequest(
                request_message_id=asked.message_id, decision=npb.DISCLOSURE_DECISION_APPROVED
            )
        )
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    actions = [e.action for e in (await federation.auditor(0).audit_entries()).entries]
    assert "disclosure.approved" in actions


async def test_a_refused_disclosure_carries_the_ground_and_no_section(
    federation: Federation,
) -> None:
    a, b = federation.client(0), federation.client(1)
    _, asked = await asked_for_section(federation)
    refused = await a.decide_disclosure(
        apb.DecideDisclosureRequest(
            request_message_id=asked.message_id,
            decision=npb.DISCLOSURE_DECISION_REFUSED,
            refusal_ground=npb.REFUSAL_GROUND_CHILD_BEST_INTERESTS,
        )
    )
    grant = (await received(b, refused.message_id)).notice.disclosure_grant
    assert grant.decision == npb.DISCLOSURE_DECISION_REFUSED
    assert grant.refusal_ground == npb.REFUSAL_GROUND_CHILD_BEST_INTERESTS
    assert not grant.sections


async def test_asking_for_a_section_the_notice_does_not_have_is_refused(
    federation: Federation,
) -> None:
    a, b = federation.client(0), federation.client(1)
    sent = await a.submit(referral([federation.sim(1).node_id]))
    await received(b, sent.message_id)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await b.respond(samples.disclosure_request(sent.message_id, "XB-1", sections=["s9"]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "section_ids[0]" in (refused.value.details() or "")


async def test_a_grant_that_does_not_match_the_commitment_is_rejected(
    federation: Federation,
) -> None:
    """The requester's node checks each section against the originally signed commitment."""
    node_a, node_b = federation.node(0), federation.node(1)
    _, asked = await asked_for_section(federation)
    forged = crafted_grant("Someone else entirely")
    envelope = craft_envelope(
        node_a, [node_b.context.node_id], forged, in_reply_to=asked.message_id
    )
    response = await deliver_as(node_a, node_b, envelope)
    receipt = Receipt.from_bytes(response.receipt.body)
    assert not receipt.accepted
    assert receipt.rejection == epb.REJECTION_REASON_INVALID_NOTICE


# --- onward sharing -----------------------------------------------------------------------------


async def test_forwarding_with_the_originators_signed_consent(federation: Federation) -> None:
    a, b, c = federation.client(0), federation.client(1), federation.client(2)
    xa, xb, xc = (federation.sim(i).node_id for i in range(3))
    sent = await a.submit(referral([xb], epb.ONWARD_SHARING_WITH_ORIGINATOR_CONSENT))
    await received(b, sent.message_id)
    asked = await b.respond(samples.disclosure_request(sent.message_id, "XB-1", onward=[xc]))
    await received(a, asked.message_id)
    consent = await a.decide_disclosure(
        apb.DecideDisclosureRequest(
            request_message_id=asked.message_id, decision=npb.DISCLOSURE_DECISION_APPROVED
        )
    )
    await received(b, consent.message_id)
    forwarded = await b.forward(forward(sent.message_id, xc))
    copy = await received(c, forwarded.message_id)
    assert copy.summary.sender_node_id == xb
    assert copy.notice.forwarded_from.origin_node_id == xa
    assert copy.notice.forwarded_from.origin_message_id == sent.message_id
    assert not copy.notice.restricted_sections  # held-back sections stay with the originator
    assert copy.summary.handling.onward_sharing == epb.ONWARD_SHARING_NONE
    # The consent named XC only.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await b.forward(forward(sent.message_id, xa))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


# --- withdrawal ---------------------------------------------------------------------------------


async def test_a_withdrawal_stops_every_recipient_serving_the_notice(
    federation: Federation,
) -> None:
    a, b, c = federation.client(0), federation.client(1), federation.client(2)
    xb, xc = federation.sim(1).node_id, federation.sim(2).node_id
    sent = await a.submit(referral([xb, xc]))
    await received(b, sent.message_id)
    await received(c, sent.message_id)
    withdrawal = await a.withdraw(
        apb.WithdrawRequest(
            message_id=sent.message_id, reason=npb.WITHDRAWAL_REASON_INFORMATION_INCORRECT
        )
    )

    async def both_applied() -> bool:
        status = await a.delivery_status(sent.message_id)
        return all(r.withdrawal_applied for r in status.recipients)

    await eventually(both_applied)
    status = await a.delivery_status(sent.message_id)
    assert status.withdrawn_by == withdrawal.message_id
    for client in (b, c):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.get_notice(sent.message_id)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "withdrawn" in (refused.value.details() or "")
        states = {n.message_id: n.state for n in (await client.list_inbox()).notices}
        assert states[sent.message_id] == apb.INBOX_STATE_WITHDRAWN
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await a.withdraw(
            apb.WithdrawRequest(
                message_id=sent.message_id, reason=npb.WITHDRAWAL_REASON_CASE_CLOSED
            )
        )
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_only_the_originator_can_withdraw(federation: Federation) -> None:
    a, b = federation.client(0), federation.client(1)
    sent = await a.submit(referral([federation.sim(1).node_id]))
    await received(b, sent.message_id)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await b.withdraw(
            apb.WithdrawRequest(
                message_id=sent.message_id, reason=npb.WITHDRAWAL_REASON_SENT_IN_ERROR
            )
        )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_withdrawal_cancels_the_deliveries_not_yet_made(federation: Federation) -> None:
    a, b = federation.client(0), federation.client(1)
    xb, xc = federation.sim(1).node_id, federation.sim(2).node_id
    await federation.crash(xc)
    sent = await a.submit(referral([xb, xc]))
    await received(b, sent.message_id)
    await a.withdraw(withdraw(sent.message_id))
    status = {r.recipient_node_id: r for r in (await a.delivery_status(sent.message_id)).recipients}
    assert status[xc].state == apb.DELIVERY_STATE_FAILED
    assert "withdrawn before delivery" in status[xc].last_error
    # Back up, XC gets the withdrawal (for a notice it never received) and confirms it.
    await federation.start(xc)

    async def applied_everywhere() -> bool:
        recipients = (await a.delivery_status(sent.message_id)).recipients
        return all(r.withdrawal_applied for r in recipients)

    await eventually(applied_everywhere)
    c = federation.client(2)
    assert sent.message_id not in {n.message_id for n in (await c.list_inbox()).notices}


async def test_a_notice_overtaken_by_its_withdrawal_is_stored_withdrawn(
    federation: Federation,
) -> None:
    node_a, node_b = federation.node(0), federation.node(1)
    xb = node_b.context.node_id
    notice = referral([xb]).notice
    message_id = new_message_id(node_a.context.clock, node_a.context.node_id)
    withdrawal = npb.Notice(
        protection=PROTECTION,
        withdrawal=npb.Withdrawal(reason=npb.WITHDRAWAL_REASON_SENT_IN_ERROR),
    )
    first = await deliver_as(
        node_a, node_b, craft_envelope(node_a, [xb], withdrawal, in_reply_to=message_id)
    )
    assert Receipt.from_bytes(first.receipt.body).accepted
    late = await deliver_as(
        node_a, node_b, craft_envelope(node_a, [xb], notice, message_id=message_id)
    )
    assert Receipt.from_bytes(late.receipt.body).accepted
    refused = await refused_with(federation.client(1).get_notice(message_id))
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "withdrawn" in (refused.details() or "")


async def test_a_withdrawal_takes_back_disclosed_sections_and_forwarded_copies(
    federation: Federation,
) -> None:
    a, b, c = federation.client(0), federation.client(1), federation.client(2)
    xc = federation.sim(2).node_id
    sent, _ = await shared_with_consent(federation, xc)
    grant_id = await granted_section(federation, sent.message_id)
    copy = await b.forward(forward(sent.message_id, xc))
    await received(c, copy.message_id)
    pending = await b.respond(samples.disclosure_request(sent.message_id, "XB-1", sections=["s1"]))
    await received(a, pending.message_id)

    await a.withdraw(withdraw(sent.message_id))

    async def copy_withdrawn() -> bool:
        states = {n.message_id: n.state for n in (await c.list_inbox()).notices}
        return states[copy.message_id] == apb.INBOX_STATE_WITHDRAWN

    await eventually(copy_withdrawn)
    for client, message_id in ((b, sent.message_id), (b, grant_id), (c, copy.message_id)):
        refused = await refused_with(client.get_notice(message_id))
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Nothing more of it is disclosed, and its held-back sections are gone.
    refused = await refused_with(a.decide_disclosure(approve(pending.message_id)))
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    held = await federation.node(0).context.store.read(
        lambda conn: lifecycle.load_sections(conn, sent.message_id, ["s1"])
    )
    assert held == []


async def test_a_grant_for_a_withdrawn_notice_is_rejected(federation: Federation) -> None:
    node_a, node_b = federation.node(0), federation.node(1)
    a = federation.client(0)
    sent, asked = await asked_for_section(federation)
    await a.withdraw(withdraw(sent.message_id))

    async def withdrawn() -> bool:
        found = await node_b.context.store.read(lambda conn: find_notice(conn, sent.message_id))
        return found is not None and found.state == "withdrawn"

    await eventually(withdrawn)
    late_grant = crafted_grant(VICTIM)
    envelope = craft_envelope(
        node_a, [node_b.context.node_id], late_grant, in_reply_to=asked.message_id
    )
    receipt = Receipt.from_bytes((await deliver_as(node_a, node_b, envelope)).receipt.body)
    assert not receipt.accepted
    assert receipt.rejection == epb.REJECTION_REASON_INVALID_NOTICE


async def test_two_concurrent_decisions_on_one_request_give_one_answer(
    federation: Federation,
) -> None:
    a = federation.client(0)
    _, asked = await asked_for_section(federation)
    outcomes = await asyncio.gather(
        *(a.decide_disclosure(approve(asked.message_id)) for _ in range(4)),
        return_exceptions=True,
    )
    answers = [o for o in outcomes if isinstance(o, apb.SubmittedNotice)]
    refusals = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(answers) == 1
    assert [r.code() for r in refusals] == [grpc.StatusCode.FAILED_PRECONDITION] * 3


async def test_retried_operations_return_their_first_result(federation: Federation) -> None:
    """An idempotent retry is answered before the checks that its first success changed."""
    a, b = federation.client(0), federation.client(1)
    xc = federation.sim(2).node_id
    sent, _ = await shared_with_consent(federation, xc)
    asked = await b.respond(samples.disclosure_request(sent.message_id, "XB-1", sections=["s1"]))
    await received(a, asked.message_id)

    decided = await a.decide_disclosure(approve(asked.message_id, "decide-1"))
    assert await a.decide_disclosure(approve(asked.message_id, "decide-1")) == decided
    forwarded = await b.forward(forward(sent.message_id, xc, request_id="forward-1"))
    assert await b.forward(forward(sent.message_id, xc, request_id="forward-1")) == forwarded
    withdrawn = await a.withdraw(withdraw(sent.message_id, "withdraw-1"))
    assert await a.withdraw(withdraw(sent.message_id, "withdraw-1")) == withdrawn
    # The same key for another request is a conflict, not a replay.
    other = withdraw(sent.message_id, "withdraw-1")
    other.reason = npb.WITHDRAWAL_REASON_CASE_CLOSED
    assert (await refused_with(a.withdraw(other))).code() == grpc.StatusCode.ALREADY_EXISTS


async def test_what_only_a_node_writes_is_refused_from_an_authority(
    federation: Federation,
) -> None:
    a, b = federation.client(0), federation.client(1)
    xb = federation.sim(1).node_id
    forged_commitment = referral([xb])
    forged_commitment.notice.restricted_sections.append(
        npb.SectionCommitment(
            section_id="s1", type=npb.SECTION_TYPE_VICTIM_IDENTITY, commitment=bytes(32)
        )
    )
    refused = await refused_with(a.submit(forged_commitment))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "notice.restricted_sections" in (refused.details() or "")

    sent = await a.submit(referral([xb]))
    await received(b, sent.message_id)
    claimed_origin = samples.disclosure_request(sent.message_id, "XB-1", sections=["s1"])
    claimed_origin.notice.forwarded_from.origin_node_id = "xc-childprotection"
    refused = await refused_with(b.respond(claimed_origin))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "notice.forwarded_from" in (refused.details() or "")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("   ", "is required"),
        ("x" * 2001, "longer than 2000"),
        ("Jane\x00Roe", "control characters"),
    ],
    ids=["blank", "too-long", "control-character"],
)
async def test_a_bad_restricted_section_is_refused_before_anything_is_kept(
    federation: Federation, content: str, reason: str
) -> None:
    request = referral([federation.sim(1).node_id])
    request.restricted_sections[0].content = content
    refused = await refused_with(federation.client(0).submit(request))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "restricted_sections[0].content" in (refused.details() or "")
    assert reason in (refused.details() or "")
    outgoing = await federation.node(0).context.store.read(
        lambda conn: conn.exec_driver_sql("SELECT count(*) FROM notices").scalar()
    )
    assert outgoing == 0


@pytest.mark.parametrize(
    ("forward_request", "code", "field"),
    [
        (forward("01890a5d-ac96-7abc-8def-0123456789ab"), "INVALID_ARGUMENT", "recipient_node_ids"),
        (
            forward("01890a5d-ac96-7abc-8def-0123456789ab", "Not A Node"),
            "INVALID_ARGUMENT",
            "recipient_node_ids[0]",
        ),
        (
            forward("01890a5d-ac96-7abc-8def-0123456789ab", *(f"xz-{i}" for i in range(33))),
            "INVALID_ARGUMENT",
            "recipient_node_ids",
        ),
        (
            apb.ForwardRequest(
                message_id="01890a5d-ac96-7abc-8def-0123456789ab",
                recipient_node_ids=["xc-childprotection"],
            ),
            "INVALID_ARGUMENT",
            "case_reference",
        ),
        (
            forward("01890a5d-ac96-7abc-8def-0123456789ab", "xc-childprotection"),
            "NOT_FOUND",
            "",
        ),
    ],
    ids=["no-recipient", "malformed-recipient", "33-recipients", "no-case-reference", "unknown"],
)
async def test_a_bad_forward_request_is_refused_with_what_was_wrong(
    federation: Federation, forward_request: apb.ForwardRequest, code: str, field: str
) -> None:
    refused = await refused_with(federation.client(1).forward(forward_request))
    assert refused.code() == getattr(grpc.StatusCode, code)
    assert (refused.details() or "").startswith(field)


async def test_every_refused_forward_is_audited(federation: Federation) -> None:
    b = federation.client(1)
    unknown = "01890a5d-ac96-7abc-8def-0123456789ab"
    await refused_with(b.forward(forward(unknown, "xc-childprotection")))
    entries = await federation.node(1).context.store.read(
        lambda conn: audit_log.entries_after(conn, 0, 1000)
    )
    (entry,) = [e for e in entries if e.action == "forward.refused"]
    assert entry.message_id == unknown
    assert "no received notice" in json.loads(entry.details_json)["reason"]


# --- retention and deadlines (on one manual clock) ------------------------------------------------


@pytest.fixture
async def clocked(
    tmp_path: Path, databases: DatabaseFactory
) -> AsyncIterator[tuple[Federation, ManualClock]]:
    clock = ManualClock(dt.datetime.now(dt.UTC))
    ids = ["xa-police", "xb-prosecution", "xc-childprotection"]
    running = await start_federation(tmp_path, databases, clocks=dict.fromkeys(ids, clock))
    try:
        yield running, clock
    finally:
        await running.close()


async def test_at_the_end_of_retention_only_a_tombstone_remains(
    clocked: tuple[Federation, ManualClock],
) -> None:
    federation, clock = clocked
    a, b = federation.client(0), federation.client(1)
    request = referral([federation.sim(1).node_id])
    request.handling.retention_days = 1
    sent = await a.submit(request)
    await received(b, sent.message_id)
    node_b = federation.node(1)
    assert await node_b.purge() == 0  # retention not over yet
    clock.advance(dt.timedelta(days=1, minutes=1))
    assert await node_b.purge() == 1
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await b.get_notice(sent.message_id)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "purged" in (refused.value.details() or "")
    tombstone = await node_b.context.store.read(lambda c: load_envelope(c, sent.message_id))
    assert tombstone is not None
    assert tombstone.sealed_payload == b""
    # The signed header stays as evidence.
    assert tombstone.header
    assert tombstone.signature
    # The originator keeps its held-back section until its own copy's retention ends.
    assert await federation.node(0).purge() == 1
    entries = await node_b.context.store.read(lambda c: audit_log.entries_after(c, 0, 1000))
    assert [e.message_id for e in entries if e.action == "notice.purged"] == [sent.message_id]


async def test_requests_past_their_deadline_are_reported_both_ways(
    clocked: tuple[Federation, ManualClock],
) -> None:
    federation, clock = clocked
    a, b = federation.client(0), federation.client(1)
    xa = federation.sim(0).node_id
    asked = await b.submit(samples.seizure_request(xa, "XB-2026-7", clock.now(), "12 Baker Street"))
    await received(a, asked.message_id)
    assert not (await a.overdue()).requests
    clock.advance(dt.timedelta(hours=49))  # the urgent request was due in 48 hours
    (owed,) = (await a.overdue()).requests
    assert (owed.message_id, owed.owed, owed.counterpart_node_id) == (
        asked.message_id,
        apb.OWED_BY_US,
        federation.sim(1).node_id,
    )
    (owed_to_b,) = (await b.overdue()).requests
    assert owed_to_b.owed == apb.OWED_TO_US
    answer = await a.respond(samples.seizure_response(asked.message_id, "XA-2026-9"))
    await received(b, answer.message_id)
    assert not (await a.overdue()).requests
    assert not (await b.overdue()).requests


async def test_a_forwarded_copy_is_kept_no_longer_than_its_original(
    clocked: tuple[Federation, ManualClock],
) -> None:
    federation, clock = clocked
    b, c = federation.client(1), federation.client(2)
    xc = federation.sim(2).node_id
    sent, _ = await shared_with_consent(federation, xc)
    retained = samples.handling().retention_days
    clock.advance(dt.timedelta(days=10))
    copy = await b.forward(forward(sent.message_id, xc))
    assert (await received(c, copy.message_id)).summary.handling.retention_days == retained - 10


async def test_a_grant_is_purged_with_the_notice_it_discloses(
    clocked: tuple[Federation, ManualClock],
) -> None:
    federation, clock = clocked
    a, b = federation.client(0), federation.client(1)
    request = referral([federation.sim(1).node_id])
    request.handling.retention_days = 1
    sent = await a.submit(request)
    await received(b, sent.message_id)
    clock.advance(dt.timedelta(hours=12))
    grant_id = await granted_section(federation, sent.message_id)
    clock.advance(dt.timedelta(hours=12, minutes=1))
    node_b = federation.node(1)
    # The grant's own retention (a day from its receipt) has not ended: it goes with the referral.
    assert await node_b.purge() == 2
    for message_id in (sent.message_id, grant_id):
        refused = await refused_with(b.get_notice(message_id))
        assert "purged" in (refused.details() or "")


async def test_an_overdue_request_names_each_recipient_that_has_not_answered(
    clocked: tuple[Federation, ManualClock],
) -> None:
    federation, clock = clocked
    a, b, c = (federation.client(i) for i in range(3))
    xa, xb, xc = (federation.sim(i).node_id for i in range(3))
    request = samples.seizure_request(xb, "XA-2026-8", clock.now(), "12 Baker Street")
    request.recipient_node_ids.append(xc)
    asked = await a.submit(request)
    await received(b, asked.message_id)
    await received(c, asked.message_id)
    answer = await b.respond(samples.seizure_response(asked.message_id, "XB-2026-9"))
    await received(a, answer.message_id)
    clock.advance(dt.timedelta(hours=49))
    (owed,) = (await a.overdue()).requests
    assert (owed.owed, owed.counterpart_node_id) == (apb.OWED_TO_US, xc)
    assert [r.counterpart_node_id for r in (await c.overdue()).requests] == [xa]
    assert not (await b.overdue()).requests


async def test_a_referral_of_500000_hashes_crosses_the_authority_api_and_the_federation(
    federation: Federation,
) -> None:
    """The largest referral (19 MB, over the 16 MiB that gRPC ports took before) goes end to end."""
    a, b = federation.client(0), federation.client(1)
    hashes = [index.to_bytes(32, "big") for index in range(MAX_HASHES)]
    request = samples.content_hash_referral(federation.sim(1).node_id, "XA-2026-4", hashes)
    assert request.ByteSize() > 16 * 2**20
    sent = await a.submit(request)
    await delivered(a, sent.message_id)
    opened = await b.get_notice(sent.message_id)
    assert [h.value for h in opened.notice.content_hash_referral.hashes] == hashes
