"""What an attack on Federation.Deliver may and may not leave on the receiving node.

`refused_delivery` sends a crafted envelope and checks the issue's standard for
a refusal: the status code the failure maps to, a message naming the failure,
no trace of the message in any table that holds notices (notice row, envelope,
receipt, inbox event, outbox), and one new "envelope.refused" audit entry that
names the reason and the envelope's digest.

`rejected_delivery` is the other outcome: an authentic envelope that is expired
or cannot be opened or read is answered with a signed rejection (DESIGN.md),
so that its sender stops retrying. It is kept as evidence in state "rejected"
(so a repeat gets the same rejection), never shown to the authority, and
audited as "notice.rejected".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import Connection, Table, func, select

from exchange.envelope import Envelope, Header, sign_envelope
from exchange.errors import VerificationFailure
from exchange.node import Node
from exchange.receipt import Receipt, SignedReceipt, verify_receipt
from exchange.store import audit_log, inbox
from exchange.store.notices import find_notice, load_envelope
from exchange.store.tables import ENVELOPES, INBOX_EVENTS, NOTICES, OUTBOX, RECEIPTS
from tests.peers import deliver_as

__all__ = [
    "Trace",
    "accepted_delivery",
    "audit_size",
    "audited",
    "message_id",
    "refused_delivery",
    "rejected_delivery",
    "resigned",
    "trace",
    "verified",
]


def message_id(envelope: Envelope) -> str:
    return Header.from_bytes(envelope.header).message_id


def resigned(
    envelope: Envelope,
    key: ed25519.Ed25519PrivateKey,
    *,
    sealed_payload: bytes | None = None,
    **changes: Any,
) -> Envelope:
    """`envelope` with header fields changed (and a payload swapped in), signed by `key`.

    What a node holding `key` can make; the payload digest follows the payload.
    """
    payload = envelope.sealed_payload if sealed_payload is None else sealed_payload
    header = dataclasses.replace(
        Header.from_bytes(envelope.header),
        payload_digest=hashlib.sha256(payload).digest(),
        **changes,
    )
    return sign_envelope(header, payload, key)


def verified(signed: SignedReceipt, sender: Node, recipient: Node, envelope: Envelope) -> Receipt:
    """The receipt verified as the sender's delivery worker does."""
    return verify_receipt(
        signed,
        trust=sender.context.trust,
        recipient_node_id=recipient.context.node_id,
        message_id=message_id(envelope),
        envelope_digest=envelope.digest(),
        now=sender.context.clock.now(),
    )


@dataclass(frozen=True)
class Trace:
    """How many rows of each notice-holding table a node has (all messages)."""

    notices: int
    envelopes: int
    receipts: int
    inbox_events: int
    outbox: int


async def trace(node: Node) -> Trace:
    def count(connection: Connection) -> Trace:
        def rows(table: Table) -> int:
            return int(connection.execute(select(func.count()).select_from(table)).scalar_one())

        tables = (NOTICES, ENVELOPES, RECEIPTS, INBOX_EVENTS, OUTBOX)
        return Trace(*(rows(table) for table in tables))

    return await node.context.store.read(count)


async def audited(node: Node, action: str, after: int = 0) -> list[dict[str, str]]:
    """The details of `node`'s audit entries of `action` after sequence `after`."""
    entries = await node.context.store.read(lambda c: audit_log.entries_after(c, after, 100_000))
    return [
        {**json.loads(e.details_json), "peer_node_id": e.peer_node_id}
        for e in entries
        if e.action == action
    ]


async def audit_size(node: Node) -> int:
    return await node.context.store.read(audit_log.size)


CODES = {
    VerificationFailure.MALFORMED: grpc.StatusCode.INVALID_ARGUMENT,
    VerificationFailure.UNSUPPORTED_PROTOCOL: grpc.StatusCode.INVALID_ARGUMENT,
    VerificationFailure.UNSUPPORTED_SUITE: grpc.StatusCode.INVALID_ARGUMENT,
    VerificationFailure.UNKNOWN_SENDER: grpc.StatusCode.UNAUTHENTICATED,
    VerificationFailure.UNKNOWN_KEY: grpc.StatusCode.UNAUTHENTICATED,
    VerificationFailure.BAD_SIGNATURE: grpc.StatusCode.UNAUTHENTICATED,
    VerificationFailure.PAYLOAD_DIGEST_MISMATCH: grpc.StatusCode.UNAUTHENTICATED,
    VerificationFailure.SENDER_MISMATCH: grpc.StatusCode.PERMISSION_DENIED,
    VerificationFailure.NOT_A_RECIPIENT: grpc.StatusCode.PERMISSION_DENIED,
    VerificationFailure.CLOCK_SKEW: grpc.StatusCode.FAILED_PRECONDITION,
    VerificationFailure.TOO_OLD: grpc.StatusCode.FAILED_PRECONDITION,
}


async def accepted_delivery(sender: Node, recipient: Node, envelope: Envelope) -> Receipt:
    """Deliver `envelope`; the recipient must accept it with a receipt the sender verifies."""
    response = await deliver_as(sender, recipient, envelope)
    receipt = verified(SignedReceipt.from_proto(response.receipt), sender, recipient, envelope)
    assert receipt.accepted
    return receipt


async def refused_delivery(
    sender: Node,
    recipient: Node,
    envelope: Envelope,
    failure: VerificationFailure | None,
    *,
    detail: str = "",
) -> VerificationFailure:
    """Deliver `envelope` as `sender` and check that `recipient` refused it cleanly.

    Args:
        failure: the failure expected, or None for any verification failure
            (the status code must still be the one that failure maps to).
        detail: text the status message must also contain.

    Returns:
        The failure the recipient named.
    """
    before, size = await trace(recipient), await audit_size(recipient)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await deliver_as(sender, recipient, envelope)
    after = await trace(recipient)
    assert after == before, f"a refusal left rows behind: {before} -> {after}"
    details = refused.value.details() or ""
    named = next((f for f in CODES if details.startswith(f.value)), None)
    assert named is not None, f"{refused.value.code().name}: {details!r} names no failure"
    if failure is not None:
        assert named == failure, details
    assert refused.value.code() == CODES[named], (refused.value.code(), details)
    assert detail in details
    (entry,) = await audited(recipient, "envelope.refused", size)
    assert entry["reason"] == named.value
    assert entry["envelope_digest"] == envelope.digest().hex()
    assert entry["peer_node_id"] == sender.context.node_id
    return named


async def rejected_delivery(
    sender: Node, recipient: Node, envelope: Envelope, failure: VerificationFailure
) -> Receipt:
    """Deliver `envelope` and check that `recipient` answered with a signed rejection.

    Returns:
        The rejection receipt, verified as the sender verifies it.
    """
    before, size = await trace(recipient), await audit_size(recipient)
    response = await deliver_as(sender, recipient, envelope)
    receipt = verified(SignedReceipt.from_proto(response.receipt), sender, recipient, envelope)
    assert not receipt.accepted
    assert receipt.rejection_name == f"REJECTION_REASON_{failure.name}"
    after = await trace(recipient)
    # Kept as evidence with its rejection receipt; no inbox event, nothing to deliver.
    assert after == dataclasses.replace(
        before,
        notices=before.notices + 1,
        envelopes=before.envelopes + 1,
        receipts=before.receipts + 1,
    )
    record = await recipient.context.store.read(lambda c: find_notice(c, receipt.message_id))
    assert record is not None
    assert record.state == inbox.REJECTED
    # Its header and signature stay as evidence; the content it refused is not kept.
    kept = await recipient.context.store.read(lambda c: load_envelope(c, receipt.message_id))
    assert kept == dataclasses.replace(envelope, sealed_payload=b"")
    listed = await recipient.context.store.read(
        lambda c: inbox.list_inbox(c, limit=100, before=None)
    )
    assert receipt.message_id not in [n.message_id for n in listed]
    (entry,) = await audited(recipient, "notice.rejected", size)
    assert entry["reason"] == failure.value
    assert entry["envelope_digest"] == envelope.digest().hex()
    assert await audited(recipient, "envelope.refused", size) == []
    # A repeat gets the same rejection and stores nothing more.
    again = await deliver_as(sender, recipient, envelope)
    assert again.receipt == response.receipt
    assert await trace(recipient) == after
    return receipt
