"""Receipts: a recipient node's signed statement about one envelope.

A receipt names the message id and the digest of the whole envelope, so the
sender can prove what exactly was delivered; it is signed (tagged encoding of
the body bytes) with the recipient's Ed25519 key from the trust list. A receipt
that is not signed by the expected recipient, or that names another digest, is
refused, and the message stays pending.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from exchange import _wire
from exchange._encoding import encode
from exchange._proto.exchange.v1 import envelope_pb2 as pb
from exchange.errors import ValidationError, VerificationError, VerificationFailure
from exchange.keys import ed25519_key_id
from exchange.trust import TrustList

__all__ = ["Receipt", "SignedReceipt", "sign_receipt", "verify_receipt"]

_TAG = "exchange.v1.ReceiptBody"
REJECTION_REASONS = {
    VerificationFailure.EXPIRED: pb.REJECTION_REASON_EXPIRED,
    VerificationFailure.UNREADABLE_PAYLOAD: pb.REJECTION_REASON_UNREADABLE_PAYLOAD,
    VerificationFailure.INVALID_NOTICE: pb.REJECTION_REASON_INVALID_NOTICE,
}
_KNOWN_REASONS = frozenset(REJECTION_REASONS.values())


@dataclasses.dataclass(frozen=True)
class Receipt:
    """What a receipt states.

    Attributes:
        rejection: a `RejectionReason` value; 0 when accepted.
    """

    message_id: str
    envelope_digest: bytes
    recipient_node_id: str
    recipient_key_id: str
    received_at: dt.datetime
    accepted: bool
    rejection: int = 0

    def to_bytes(self) -> bytes:
        return pb.ReceiptBody(
            message_id=self.message_id,
            envelope_digest=self.envelope_digest,
            recipient_node_id=self.recipient_node_id,
            recipient_key_id=self.recipient_key_id,
            received_at=_wire.timestamp(self.received_at),
            status=pb.RECEIPT_STATUS_ACCEPTED if self.accepted else pb.RECEIPT_STATUS_REJECTED,
            rejection_reason=self.rejection,  # type: ignore[arg-type]
        ).SerializeToString()

    @staticmethod
    def from_bytes(data: bytes) -> Receipt:
        try:
            message = _wire.parse(pb.ReceiptBody, data)
        except _wire.MalformedError:
            raise VerificationError(VerificationFailure.MALFORMED, "receipt") from None
        try:
            received_at = _wire.optional_time(message, "received_at")
        except ValidationError as exc:
            raise VerificationError(VerificationFailure.MALFORMED, f"receipt.{exc}") from None
        if received_at is None:
            raise VerificationError(VerificationFailure.MALFORMED, "receipt.received_at missing")
        # Only the two statuses, and a known reason exactly when rejected: a receipt
        # must not be read as something its signer did not say.
        if message.status == pb.RECEIPT_STATUS_ACCEPTED:
            if message.rejection_reason != pb.REJECTION_REASON_UNSPECIFIED:
                raise VerificationError(VerificationFailure.MALFORMED, "accepted with a reason")
        elif message.status == pb.RECEIPT_STATUS_REJECTED:
            if message.rejection_reason not in _KNOWN_REASONS:
                raise VerificationError(VerificationFailure.MALFORMED, "unknown rejection reason")
        else:
            raise VerificationError(VerificationFailure.MALFORMED, "unknown receipt status")
        return Receipt(
            message_id=message.message_id,
            envelope_digest=message.envelope_digest,
            recipient_node_id=message.recipient_node_id,
            recipient_key_id=message.recipient_key_id,
            received_at=received_at,
            accepted=message.status == pb.RECEIPT_STATUS_ACCEPTED,
            rejection=message.rejection_reason,
        )

    @property
    def rejection_name(self) -> str:
        return pb.RejectionReason.Name(self.rejection)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class SignedReceipt:
    """The exact body bytes of a receipt and the signature over them."""

    body: bytes
    signature: bytes

    def to_proto(self) -> pb.SignedReceipt:
        return pb.SignedReceipt(body=self.body, signature=self.signature)

    @staticmethod
    def from_proto(message: pb.SignedReceipt) -> SignedReceipt:
        return SignedReceipt(message.body, message.signature)


def sign_receipt(receipt: Receipt, key: ed25519.Ed25519PrivateKey) -> SignedReceipt:
    if receipt.recipient_key_id != ed25519_key_id(key.public_key()):
        raise ValueError("receipt names another signing key")
    body = receipt.to_bytes()
    return SignedReceipt(body, key.sign(encode(_TAG, body)))


def verify_receipt(
    signed: SignedReceipt,
    *,
    trust: TrustList,
    recipient_node_id: str,
    message_id: str,
    envelope_digest: bytes,
    now: dt.datetime,
) -> Receipt:
    """Verify that `recipient_node_id` signed a receipt for exactly this envelope.

    Args:
        now: when the receipt arrived; a key revoked by then is refused.

    Raises:
        VerificationError: MALFORMED, UNKNOWN_SENDER, UNKNOWN_KEY, BAD_SIGNATURE
            or RECEIPT_MISMATCH.
    """
    receipt = Receipt.from_bytes(signed.body)
    node = trust.active_node(recipient_node_id)
    if node is None:
        raise VerificationError(VerificationFailure.UNKNOWN_SENDER, recipient_node_id)
    if receipt.recipient_node_id != recipient_node_id:
        raise VerificationError(VerificationFailure.RECEIPT_MISMATCH, "recipient")
    key = node.signing_key(receipt.recipient_key_id, receipt.received_at, now=now)
    if key is None:
        raise VerificationError(VerificationFailure.UNKNOWN_KEY, receipt.recipient_key_id)
    try:
        key.ed25519().verify(signed.signature, encode(_TAG, signed.body))
    except InvalidSignature:
        raise VerificationError(VerificationFailure.BAD_SIGNATURE, "receipt") from None
    if receipt.message_id != message_id or receipt.envelope_digest != envelope_digest:
        raise VerificationError(VerificationFailure.RECEIPT_MISMATCH, "message or digest")
    return receipt
