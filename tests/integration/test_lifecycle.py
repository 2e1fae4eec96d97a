"""After delivery: staged disclosure, onward sharing, withdrawal, retention and deadlines.

Each test drives real nodes (XA, XB, XC) over mTLS through their authority
APIs, on both store engines.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange._proto.exchange.v1 import envelope_pb2 as epb
from exchange._proto.exchange.v1 import notices_pb2 as npb
from exchange.clock import ManualClock
from exchange.harness import samples
from exchange.receipt import Receipt
from exchange.rpc.client import AuthorityClient
from exchange.store import audit_log
from exchange.store.notices import load_envelope
from tests.conftest import DatabaseFactory
from tests.integration._peers import craft_envelope, deliver_as
from tests.integration.conftest import Federation, start_federation

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
    sent = await a.submit(referral([federation.sim(1).node_id]))
    await received(b, sent.message_id)
    asked = await b.respond(samples.disclosure_request(sent.message_id, "XB-1", sections=["s1"]))
    await received(a, asked.message_id)
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
    a, b = federation.client(0), federation.client(1)
    sent = await a.submit(referral([node_b.context.node_id]))
    await received(b, sent.message_id)
    asked = await b.respond(samples.disclosure_request(sent.message_id, "XB-1", sections=["s1"]))
    await received(a, asked.message_id)
    forged = npb.Notice(
        protection=npb.ChildProtectionFlags(
            identity_protected=True, victim_identification=npb.VICTIM_IDENTIFICATION_UNKNOWN
        ),
        disclosure_grant=npb.DisclosureGrant(
            decision=npb.DISCLOSURE_DECISION_APPROVED,
            sections=[
                npb.DisclosedSection(
                    section_id="s1",
                    section=npb.RestrictedSection(
                        type=npb.SECTION_TYPE_VICTIM_IDENTITY, content="Someone else entirely"
                    ),
                    salt=bytes(32),
                )
            ],
        ),
    )
    envelope = craft_envelope(
        node_a, [node_b.context.node_id], forged, in_reply_to=asked.message_id
    )
    response = await deliver_as(node_a, node_b, envelope)
    receipt = Receipt.from_bytes(response.receipt.body)
    assert not receipt.accepted
    assert receipt.rejection == epb.REJECTION_REASON_INVALID_NOTICE


# --- onward sharing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sharing", "why"),
    [
        (epb.ONWARD_SHARING_NONE, "forbids onward sharing"),
        (epb.ONWARD_SHARING_WITHIN_RECEIVING_AUTHORITY, "within this authority only"),
        (epb.ONWARD_SHARING_WITH_ORIGINATOR_CONSENT, "no signed consent"),
    ],
    ids=["none", "within-authority", "consent-not-yet-given"],
)
async def test_forwarding_against_the_handling_code_is_refused_and_audited(
    federation: Federation, sharing: int, why: str
) -> None:
    a, b = federation.client(0), federation.client(1)
    xc = federation.sim(2).node_id
    sent = await a.submit(referral([federation.sim(1).node_id], sharing))
    await received(b, sent.message_id)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await b.forward(apb.ForwardRequest(message_id=sent.message_id, recipient_node_ids=[xc]))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert why in (refused.value.details() or "")
    entries = await federation.node(1).context.store.read(
        lambda c: audit_log.entries_after(c, 0, 1000)
    )
    assert [e.message_id for e in entries if e.action == "forward.refused"] == [sent.message_id]


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
    forwarded = await b.forward(
        apb.ForwardRequest(message_id=sent.message_id, recipient_node_ids=[xc])
    )
    copy = await received(c, forwarded.message_id)
    assert copy.summary.sender_node_id == xb
    assert copy.notice.forwarded_from.origin_node_id == xa
    assert copy.notice.forwarded_from.origin_message_id == sent.message_id
    assert not copy.notice.restricted_sections  # held-back sections stay with the originator
    assert copy.summary.handling.onward_sharing == epb.ONWARD_SHARING_NONE
    # The consent named XC only.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await b.forward(apb.ForwardRequest(message_id=sent.message_id, recipient_node_ids=[xa]))
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
