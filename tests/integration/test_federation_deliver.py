"""Federation.Deliver between real nodes over mTLS: what is accepted, answered and refused."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import grpc
import pytest

from exchange._proto.exchange.v1 import envelope_pb2, federation_pb2
from exchange.clock import ManualClock
from exchange.envelope import Envelope, Header
from exchange.harness import samples
from exchange.node import Node
from exchange.receipt import Receipt, SignedReceipt, verify_receipt
from exchange.store import audit_log, inbox
from exchange.store.notices import find_notice
from tests.conftest import DatabaseFactory
from tests.live import Federation, start_federation
from tests.peers import (
    craft_envelope,
    deliver_as,
    referral_notice,
)


async def _events(node: Node) -> list[inbox.InboxEvent]:
    return await node.context.store.read(lambda c: inbox.events_after(c, 0, 1000))


async def _audit_actions(node: Node) -> list[str]:
    entries = await node.context.store.read(lambda c: audit_log.entries_after(c, 0, 1000))
    return [entry.action for entry in entries]


def _message_id(envelope: Envelope) -> str:
    return Header.from_bytes(envelope.header).message_id


def _receipt(
    response: federation_pb2.DeliverResponse, sender: Node, recipient: Node, envelope: Envelope
) -> Receipt:
    """The receipt of `response`, verified as the sender's delivery worker does."""
    return verify_receipt(
        SignedReceipt.from_proto(response.receipt),
        trust=sender.context.trust,
        recipient_node_id=recipient.context.node_id,
        message_id=_message_id(envelope),
        envelope_digest=envelope.digest(),
        now=sender.context.clock.now(),
    )


async def test_delivery_is_answered_with_a_receipt_signed_by_the_recipient(
    federation: Federation,
) -> None:
    a, b = federation.node(0), federation.node(1)
    envelope = craft_envelope(a, [b.context.node_id], referral_notice())
    receipt = _receipt(await deliver_as(a, b, envelope), a, b, envelope)
    assert receipt.accepted
    stored = await b.context.store.read(lambda c: find_notice(c, receipt.message_id))
    assert stored is not None
    assert stored.state == inbox.RECEIVED
    assert [e.message_id for e in await _events(b)] == [receipt.message_id]


async def test_replayed_envelope_gets_the_original_receipt_and_is_stored_once(
    federation: Federation,
) -> None:
    a, b = federation.node(0), federation.node(1)
    envelope = craft_envelope(a, [b.context.node_id], referral_notice())
    first = await deliver_as(a, b, envelope)
    again = await deliver_as(a, b, envelope)
    await federation.crash(b.context.node_id)
    b = await federation.start(b.context.node_id)
    after_restart = await deliver_as(a, b, envelope)
    assert first.receipt == again.receipt == after_restart.receipt
    assert len(await _events(b)) == 1
    assert (await _audit_actions(b)).count("notice.received") == 1


async def test_sender_spoofing_is_refused_and_nothing_is_stored(federation: Federation) -> None:
    a, b, c = federation.node(0), federation.node(1), federation.node(2)
    envelope = craft_envelope(a, [b.context.node_id], referral_notice())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await deliver_as(c, b, envelope)  # C's TLS identity, A's envelope
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "authenticated peer" in (refused.value.details() or "")
    assert await b.context.store.read(lambda c_: find_notice(c_, _message_id(envelope))) is None
    assert await _events(b) == []
    assert "envelope.refused" in await _audit_actions(b)


async def test_envelope_for_another_node_is_refused(federation: Federation) -> None:
    a, b, c = federation.node(0), federation.node(1), federation.node(2)
    envelope = craft_envelope(a, [c.context.node_id], referral_notice())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await deliver_as(a, b, envelope)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await _events(b) == []


@pytest.mark.parametrize(
    ("part", "code"),
    [
        ("header", grpc.StatusCode.UNAUTHENTICATED),
        ("sealed_payload", grpc.StatusCode.UNAUTHENTICATED),
        ("signature", grpc.StatusCode.UNAUTHENTICATED),
    ],
)
async def test_tampered_envelope_is_refused(
    federation: Federation, part: str, code: grpc.StatusCode
) -> None:
    a, b = federation.node(0), federation.node(1)
    envelope = craft_envelope(a, [b.context.node_id], referral_notice())
    original = getattr(envelope, part)
    # Flip a bit in the last byte: in the header that is the payload digest.
    tampered = dataclasses.replace(envelope, **{part: original[:-1] + bytes([original[-1] ^ 1])})
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await deliver_as(a, b, tampered)
    assert refused.value.code() == code
    assert await _events(b) == []


async def test_invalid_notice_is_answered_with_a_signed_rejection(federation: Federation) -> None:
    a, b = federation.node(0), federation.node(1)
    notice = referral_notice()
    notice.case_referral.ClearField("requested_actions")  # breaks the CaseReferral rules
    envelope = craft_envelope(a, [b.context.node_id], notice)
    receipt = _receipt(await deliver_as(a, b, envelope), a, b, envelope)
    assert not receipt.accepted
    assert receipt.rejection == envelope_pb2.REJECTION_REASON_INVALID_NOTICE
    assert await _events(b) == []
    listed = await b.context.store.read(lambda c: inbox.list_inbox(c, limit=10, before=None))
    assert listed == []


async def test_header_kind_must_match_the_sealed_notice(federation: Federation) -> None:
    a, b = federation.node(0), federation.node(1)
    envelope = craft_envelope(
        a,
        [b.context.node_id],
        referral_notice(),
        kind=envelope_pb2.NOTICE_KIND_ASSISTANCE_REQUEST,
    )
    receipt = _receipt(await deliver_as(a, b, envelope), a, b, envelope)
    assert receipt.rejection == envelope_pb2.REJECTION_REASON_INVALID_NOTICE


async def test_expired_envelope_is_answered_with_a_signed_rejection(
    federation: Federation,
) -> None:
    a, b = federation.node(0), federation.node(1)
    two_hours_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    envelope = craft_envelope(a, [b.context.node_id], referral_notice(), created_at=two_hours_ago)
    receipt = _receipt(await deliver_as(a, b, envelope), a, b, envelope)
    assert receipt.rejection == envelope_pb2.REJECTION_REASON_EXPIRED


async def test_envelope_from_the_future_is_refused(federation: Federation) -> None:
    a, b = federation.node(0), federation.node(1)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    envelope = craft_envelope(a, [b.context.node_id], referral_notice(), created_at=later)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await deliver_as(a, b, envelope)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_reply_to_a_notice_never_sent_is_rejected(federation: Federation) -> None:
    a, b = federation.node(0), federation.node(1)
    response = samples.assistance_response("", "XA-1", "An answer to nothing.").notice
    envelope = craft_envelope(
        a,
        [b.context.node_id],
        response,
        in_reply_to="01a22193-ba6a-7340-a22f-e02a78122912",
    )
    receipt = _receipt(await deliver_as(a, b, envelope), a, b, envelope)
    assert receipt.rejection == envelope_pb2.REJECTION_REASON_INVALID_NOTICE


async def test_message_id_of_another_sender_is_refused(federation: Federation) -> None:
    """A co-recipient cannot claim a message id to make the genuine envelope a 'duplicate'."""
    a, b, c = federation.node(0), federation.node(1), federation.node(2)
    original = craft_envelope(a, [b.context.node_id, c.context.node_id], referral_notice())
    squatter = craft_envelope(
        c, [b.context.node_id], referral_notice(), message_id=_message_id(original)
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await deliver_as(c, b, squatter)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not bound to the sender" in (refused.value.details() or "")
    assert _receipt(await deliver_as(a, b, original), a, b, original).accepted
    assert len(await _events(b)) == 1


async def test_a_repeat_after_expiry_still_gets_the_original_receipt(
    tmp_path: Path, databases: DatabaseFactory
) -> None:
    """The first receipt was lost; the sender's retry arrives after the envelope expired."""
    clock = ManualClock(dt.datetime.now(dt.UTC))
    federation = await start_federation(tmp_path, databases, clocks={"xb-prosecution": clock})
    try:
        a, b = federation.node(0), federation.node(1)
        envelope = craft_envelope(a, [b.context.node_id], referral_notice())
        first = await deliver_as(a, b, envelope)
        clock.advance(dt.timedelta(hours=2))  # past the envelope's one-hour expiry
        again = await deliver_as(a, b, envelope)
        assert again.receipt == first.receipt
        assert _receipt(again, a, b, envelope).accepted
    finally:
        await federation.close()


async def test_the_same_message_id_with_other_content_is_refused(federation: Federation) -> None:
    a, b = federation.node(0), federation.node(1)
    first = craft_envelope(a, [b.context.node_id], referral_notice())
    await deliver_as(a, b, first)
    other = referral_notice()
    other.case_referral.summary = "Something else under the same id."
    second = craft_envelope(a, [b.context.node_id], other, message_id=_message_id(first))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await deliver_as(a, b, second)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert len(await _events(b)) == 1
