"""Envelopes that claim another origin or destination (issue 6, attacks 5 and 6).

Sender spoofing: a node may only deliver envelopes whose sender is its own TLS
identity. Splicing: a sealed payload is bound to its message id, sender and
recipients (HPKE `info`, content AAD), and the header to the payload (digest);
moved under another header it is refused or, if a member signed the new
header, answered with a signed rejection because it cannot be opened. A node
that is not among the recipients refuses the envelope.
"""

from __future__ import annotations

from exchange.envelope import Envelope
from exchange.errors import VerificationFailure
from exchange.ids import new_message_id
from exchange.node import Node
from tests.adversarial._envelopes import (
    Trace,
    accepted_delivery,
    audited,
    message_id,
    refused_delivery,
    rejected_delivery,
    resigned,
    trace,
)
from tests.live import Federation
from tests.peers import craft_envelope, referral_notice

EMPTY = Trace(0, 0, 0, 0, 0)


def _new_id(node: Node) -> str:
    return new_message_id(node.context.clock, node.context.node_id)


# --- sender spoofing -----------------------------------------------------------------------


async def test_sender_spoofing_relaying_another_nodes_envelope_is_refused(
    federation: Federation,
) -> None:
    a, b, c = federation.node(0), federation.node(1), federation.node(2)
    envelope = craft_envelope(a, [b.context.node_id], referral_notice())
    # C's TLS identity, A's genuine envelope.
    await refused_delivery(c, b, envelope, VerificationFailure.SENDER_MISMATCH)
    assert await trace(b) == EMPTY
    (entry,) = await audited(b, "envelope.refused")
    assert entry["peer_node_id"] == c.context.node_id
    # The refusal does not spoil the message for its real sender.
    await accepted_delivery(a, b, envelope)


async def test_sender_spoofing_with_a_header_signed_by_the_spoofer_is_refused(
    federation: Federation,
) -> None:
    """C writes A as the sender, names its own key and signs: its TLS identity gives it away."""
    a, b, c = federation.node(0), federation.node(1), federation.node(2)
    genuine = craft_envelope(a, [b.context.node_id], referral_notice())
    forged = resigned(
        genuine, c.context.identity.signing_key, sender_key_id=c.context.identity.signing_key_id
    )
    await refused_delivery(c, b, forged, VerificationFailure.SENDER_MISMATCH)
    assert await trace(b) == EMPTY


async def test_message_id_of_another_sender_is_refused(federation: Federation) -> None:
    """A co-recipient cannot claim a message id to make the genuine envelope a 'duplicate'."""
    a, b, c = federation.node(0), federation.node(1), federation.node(2)
    original = craft_envelope(a, [b.context.node_id, c.context.node_id], referral_notice())
    squatter = craft_envelope(
        c, [b.context.node_id], referral_notice(), message_id=message_id(original)
    )
    await refused_delivery(
        c, b, squatter, VerificationFailure.MALFORMED, detail="not bound to the sender"
    )
    assert await trace(b) == EMPTY
    await accepted_delivery(a, b, original)
    assert (await trace(b)).inbox_events == 1


# --- splicing and misdirection --------------------------------------------------------------


async def test_payload_spliced_under_another_signed_header_is_refused(
    federation: Federation,
) -> None:
    """Without the sender's key: the header's payload digest no longer matches."""
    a, b = federation.node(0), federation.node(1)
    first = craft_envelope(a, [b.context.node_id], referral_notice())
    second = craft_envelope(a, [b.context.node_id], referral_notice())
    spliced = Envelope(second.header, first.sealed_payload, second.signature)
    await refused_delivery(a, b, spliced, VerificationFailure.PAYLOAD_DIGEST_MISMATCH)
    assert await trace(b) == EMPTY
    await accepted_delivery(a, b, first)
    await accepted_delivery(a, b, second)


async def test_payload_moved_to_a_new_message_by_its_sender_cannot_be_opened(
    federation: Federation,
) -> None:
    """Signed anew under another message id: the wrapped keys are bound to the old one."""
    a, b = federation.node(0), federation.node(1)
    original = craft_envelope(a, [b.context.node_id], referral_notice())
    moved = resigned(original, a.context.identity.signing_key, message_id=_new_id(a))
    await rejected_delivery(a, b, moved, VerificationFailure.UNREADABLE_PAYLOAD)
    await accepted_delivery(a, b, original)


async def test_payload_re_attributed_by_a_co_recipient_cannot_be_opened(
    federation: Federation,
) -> None:
    """C received A's notice too, and passes A's payload off as its own message to B."""
    a, b, c = federation.node(0), federation.node(1), federation.node(2)
    original = craft_envelope(a, [b.context.node_id, c.context.node_id], referral_notice())
    stolen = resigned(
        original,
        c.context.identity.signing_key,
        message_id=_new_id(c),
        sender_node_id=c.context.node_id,
        sender_key_id=c.context.identity.signing_key_id,
        recipient_node_ids=(b.context.node_id,),
    )
    await rejected_delivery(c, b, stolen, VerificationFailure.UNREADABLE_PAYLOAD)
    await accepted_delivery(a, b, original)


async def test_payload_sealed_for_another_node_cannot_be_opened(federation: Federation) -> None:
    """A header naming B over a payload sealed only for C: B holds no wrapped key."""
    a, b, c = federation.node(0), federation.node(1), federation.node(2)
    for_c = craft_envelope(a, [c.context.node_id], referral_notice())
    readdressed = resigned(
        for_c, a.context.identity.signing_key, recipient_node_ids=(b.context.node_id,)
    )
    await rejected_delivery(a, b, readdressed, VerificationFailure.UNREADABLE_PAYLOAD)


async def test_envelope_delivered_to_a_node_that_is_not_a_recipient_is_refused(
    federation: Federation,
) -> None:
    a, b, c = federation.node(0), federation.node(1), federation.node(2)
    envelope = craft_envelope(a, [c.context.node_id], referral_notice())
    await refused_delivery(a, b, envelope, VerificationFailure.NOT_A_RECIPIENT)
    assert await trace(b) == EMPTY
    await accepted_delivery(a, c, envelope)
