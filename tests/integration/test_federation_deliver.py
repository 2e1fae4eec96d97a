"""Federation.Deliver between real nodes over mTLS: what is accepted, answered and refused."""

from __future__ import annotations

from exchange._proto.exchange.v1 import envelope_pb2
from exchange.harness import samples
from exchange.node import Node
from exchange.store import inbox
from exchange.store.notices import find_notice
from tests.live import Federation
from tests.peers import (
    craft_envelope,
    deliver_as,
    referral_notice,
    verified,
)


async def _events(node: Node) -> list[inbox.InboxEvent]:
    return await node.context.store.read(lambda c: inbox.events_after(c, 0, 1000))


async def test_delivery_is_answered_with_a_receipt_signed_by_the_recipient(
    federation: Federation,
) -> None:
    a, b = federation.node(0), federation.node(1)
    envelope = craft_envelope(a, [b.context.node_id], referral_notice())
    receipt = verified(await deliver_as(a, b, envelope), a, b, envelope)
    assert receipt.accepted
    stored = await b.context.store.read(lambda c: find_notice(c, receipt.message_id))
    assert stored is not None
    assert stored.state == inbox.RECEIVED
    assert [e.message_id for e in await _events(b)] == [receipt.message_id]


async def test_invalid_notice_is_answered_with_a_signed_rejection(federation: Federation) -> None:
    a, b = federation.node(0), federation.node(1)
    notice = referral_notice()
    notice.case_referral.ClearField("requested_actions")  # breaks the CaseReferral rules
    envelope = craft_envelope(a, [b.context.node_id], notice)
    receipt = verified(await deliver_as(a, b, envelope), a, b, envelope)
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
    receipt = verified(await deliver_as(a, b, envelope), a, b, envelope)
    assert receipt.rejection == envelope_pb2.REJECTION_REASON_INVALID_NOTICE


async def test_reply_to_a_notice_never_sent_is_rejected(federation: Federation) -> None:
    a, b = federation.node(0), federation.node(1)
    response = samples.assistance_response("", "XA-1", "An answer to nothing.").notice
    envelope = craft_envelope(
        a,
        [b.context.node_id],
        response,
        in_reply_to="01a22193-ba6a-7340-a22f-e02a78122912",
    )
    receipt = verified(await deliver_as(a, b, envelope), a, b, envelope)
    assert receipt.rejection == envelope_pb2.REJECTION_REASON_INVALID_NOTICE
