"""Acting as a node towards a peer: craft envelopes with its keys and deliver them raw;
and what the peer then holds."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from exchange import notices, pki
from exchange._proto.exchange.v1 import federation_pb2, federation_pb2_grpc, notices_pb2
from exchange.envelope import Envelope, Handling, Header, sign_envelope
from exchange.harness import samples
from exchange.ids import new_message_id
from exchange.keys import ed25519_key_id, load_ec
from exchange.layout import FederationLayout
from exchange.node import Node
from exchange.receipt import Receipt, SignedReceipt, verify_receipt
from exchange.rpc.peers import channel_options
from exchange.seal import SUITE, SealRecipient, seal
from exchange.store import audit_log, inbox


def referral_notice() -> notices_pb2.Notice:
    return samples.case_referral(["unused"], "XA-1", "A referral crafted by the test.").notice


def craft_envelope(
    sender: Node,
    recipients: list[str],
    notice: notices_pb2.Notice,
    *,
    created_at: dt.datetime | None = None,
    ttl: dt.timedelta = dt.timedelta(hours=1),
    kind: int | None = None,
    in_reply_to: str = "",
    message_id: str | None = None,
    signing_key: ed25519.Ed25519PrivateKey | None = None,
) -> Envelope:
    """An envelope exactly as `sender`'s submission path would make it.

    Args:
        signing_key: another key of the sender's (by default its newest).
    """
    signer = signing_key or sender.context.identity.signing_key
    context = sender.context
    now = created_at or context.clock.now()
    message_id = message_id or new_message_id(context.clock, context.node_id)
    sealed = seal(
        notices.encode_notice(notice),
        message_id=message_id,
        sender_node_id=context.node_id,
        recipients=[
            SealRecipient(r, key.key_id, key.x25519())
            for r in recipients
            if (key := context.trust.nodes[r].sealing_key(now)) is not None
        ],
    )
    header = Header(
        message_id=message_id,
        sender_node_id=context.node_id,
        sender_key_id=ed25519_key_id(signer.public_key()),
        recipient_node_ids=tuple(recipients),
        created_at=now,
        expires_at=now + ttl,
        kind=kind if kind is not None else notices.kind_of(notice),
        case_reference="XA-1",
        in_reply_to=in_reply_to,
        handling=Handling.from_proto(samples.handling()),
        payload_digest=hashlib.sha256(sealed).digest(),
        seal_suite=SUITE,
    )
    return sign_envelope(header, sealed, signer)


def federation_channel(caller: Node, target: Node) -> grpc.aio.Channel:
    """A federation mTLS channel to `target`, as the member node `caller`."""
    return grpc.aio.secure_channel(
        f"127.0.0.1:{target.federation_port}",
        caller.tls.channel_credentials(),
        options=channel_options(target.context.node_id),
    )


async def deliver_as(
    sender: Node, recipient: Node, envelope: Envelope
) -> federation_pb2.DeliverResponse:
    """Deliver over federation mTLS with `sender`'s certificate; raises AioRpcError."""
    async with federation_channel(sender, recipient) as channel:
        return await federation_pb2_grpc.FederationStub(channel).Deliver(
            federation_pb2.DeliverRequest(envelope=envelope.to_proto()), timeout=10
        )


async def deliver_stream_as(
    sender: Node, recipient: Node, envelopes: list[Envelope]
) -> list[federation_pb2.DeliverStreamResponse]:
    """Deliver `envelopes` over one DeliverStream call with `sender`'s certificate.

    Request i carries sequence i; returns the responses in the order they came.
    Raises AioRpcError if the call itself fails.
    """
    requests = [
        federation_pb2.DeliverStreamRequest(sequence=i, envelope=envelope.to_proto())
        for i, envelope in enumerate(envelopes)
    ]
    async with federation_channel(sender, recipient) as channel:
        call = federation_pb2_grpc.FederationStub(channel).DeliverStream(iter(requests), timeout=30)
        return [response async for response in call]


async def deliver_batches_as(
    sender: Node, recipient: Node, batches: list[list[Envelope]]
) -> list[federation_pb2.DeliverBatchesResponse]:
    """Deliver `batches` over one DeliverBatches call with `sender`'s certificate.

    Request i carries batch i as sequence i; returns the responses in the order they
    came. Raises AioRpcError if the call itself fails.
    """
    requests = [
        federation_pb2.DeliverBatchesRequest(
            sequence=i, envelopes=[envelope.to_proto() for envelope in batch]
        )
        for i, batch in enumerate(batches)
    ]
    async with federation_channel(sender, recipient) as channel:
        stub = federation_pb2_grpc.FederationStub(channel)
        return [response async for response in stub.DeliverBatches(iter(requests), timeout=30)]


def message_id_of(envelope: Envelope) -> str:
    return Header.from_bytes(envelope.header).message_id


def verified(
    answer: federation_pb2.DeliverResponse
    | federation_pb2.DeliverStreamResponse
    | federation_pb2.DeliveryOutcome,
    sender: Node,
    recipient: Node,
    envelope: Envelope,
) -> Receipt:
    """The receipt an answer carries, verified as the sender's worker verifies it."""
    assert answer.HasField("receipt"), answer
    return verify_receipt(
        SignedReceipt.from_proto(answer.receipt),
        trust=sender.context.trust,
        recipient_node_id=recipient.context.node_id,
        message_id=message_id_of(envelope),
        envelope_digest=envelope.digest(),
        now=sender.context.clock.now(),
    )


async def held(node: Node) -> list[str]:
    """Message ids of the notices `node` received and keeps visible, sorted."""
    records = await node.context.store.read(lambda c: inbox.list_inbox(c, limit=1000, before=None))
    return sorted(r.message_id for r in records)


async def audited(node: Node, action: str) -> list[str]:
    """Message ids of `node`'s audit entries of `action`, in log order."""
    entries = await node.context.store.read(lambda c: audit_log.entries_after(c, 0, 10_000))
    return [e.message_id for e in entries if e.action == action]


async def refused_trust_list_call(
    recipient: Node, credentials: grpc.ChannelCredentials
) -> grpc.aio.AioRpcError:
    """Call `recipient`'s GetTrustList with `credentials`, expecting a refusal; returns it."""
    target = recipient.context.node_id
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{recipient.federation_port}", credentials, options=channel_options(target)
    ) as channel:
        try:
            await federation_pb2_grpc.FederationStub(channel).GetTrustList(
                federation_pb2.GetTrustListRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as refused:
            return refused
    raise AssertionError(f"{target} answered GetTrustList")


def stranger_credentials(federation_directory: Path) -> grpc.ChannelCredentials:
    """mTLS credentials with a certificate of the federation's own CA naming no member."""
    layout = FederationLayout(federation_directory)
    ca = pki.load_certificate(layout.ca_certificate.read_bytes())
    key = pki.new_tls_key()
    certificate = pki.issue_node_certificate(
        node_id="zz-stranger",
        federation_id="opsc-simulation",
        public_key=key.public_key(),
        ca_certificate=ca,
        ca_key=load_ec(layout.ca_key, None),
        now=dt.datetime.now(dt.UTC),
    )
    return grpc.ssl_channel_credentials(
        root_certificates=pki.pem(ca),
        private_key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        certificate_chain=pki.pem(certificate),
    )
