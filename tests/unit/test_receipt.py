"""Receipts: the recipient's signed statement about exactly one envelope.

XA sent CAPTURED to XB; XA verifies the receipt that comes back. Forged
receipts are named after the forgery they stop.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from exchange._encoding import encode
from exchange._proto.exchange.v1 import envelope_pb2 as pb
from exchange.envelope import Header
from exchange.errors import VerificationError, VerificationFailure
from exchange.receipt import Receipt, SignedReceipt, sign_receipt, verify_receipt
from exchange.trust import TrustList

from ._builders import (
    T0,
    XA,
    XB,
    XC,
    ed_key,
    envelope,
    federation,
    key_info,
    message_id,
    receipt,
    signed_receipt,
)

F = VerificationFailure
CAPTURED = envelope()
MESSAGE_ID = Header.from_bytes(CAPTURED.header).message_id
RECEIPT_TAG = "exchange.v1.ReceiptBody"


def verify(
    signed: SignedReceipt,
    *,
    trust: TrustList | None = None,
    recipient: str = XB.node_id,
    msg_id: str = MESSAGE_ID,
    digest: bytes | None = None,
    now: dt.datetime | None = None,
) -> Receipt:
    return verify_receipt(
        signed,
        trust=trust or federation(),
        recipient_node_id=recipient,
        message_id=msg_id,
        envelope_digest=CAPTURED.digest() if digest is None else digest,
        now=now or T0 + dt.timedelta(seconds=1),
    )


def refused(signed: SignedReceipt, **arguments: object) -> VerificationFailure:
    with pytest.raises(VerificationError) as raised:
        verify(signed, **arguments)  # type: ignore[arg-type]
    return raised.value.failure


def forged(body: Receipt, key: ed25519.Ed25519PrivateKey) -> SignedReceipt:
    """A receipt body signed with any key, bypassing sign_receipt's check."""
    body_bytes = body.to_bytes()
    return SignedReceipt(body_bytes, key.sign(encode(RECEIPT_TAG, body_bytes)))


def test_acceptance_receipt_round_trips() -> None:
    stated = receipt(CAPTURED, received_at=T0 + dt.timedelta(microseconds=250))
    assert verify(sign_receipt(stated, XB.signing)) == stated


def test_rejection_receipt_round_trips_with_its_reason() -> None:
    stated = receipt(CAPTURED, accepted=False, rejection=pb.REJECTION_REASON_EXPIRED)
    verified = verify(sign_receipt(stated, XB.signing))
    assert verified == stated
    assert not verified.accepted
    assert verified.rejection_name == "REJECTION_REASON_EXPIRED"


def test_receipt_survives_the_protobuf_round_trip() -> None:
    signed = signed_receipt(CAPTURED)
    wire = pb.SignedReceipt.FromString(signed.to_proto().SerializeToString())
    assert SignedReceipt.from_proto(wire) == signed


def test_sign_receipt_refuses_a_body_naming_another_key() -> None:
    with pytest.raises(ValueError, match="another signing key"):
        sign_receipt(receipt(CAPTURED), XC.signing)


# --- forged receipts -----------------------------------------------------------------------


def test_forged_receipt_signed_by_another_nodes_key() -> None:
    # XC signs a body that claims to be XB's, naming XB's key.
    assert refused(forged(receipt(CAPTURED), XC.signing)) is F.BAD_SIGNATURE


def test_forged_receipt_naming_another_nodes_key() -> None:
    # XC signs a body claiming XB as the recipient, naming XC's own key.
    body = receipt(CAPTURED, recipient_key_id=XC.signing_key_id)
    assert refused(forged(body, XC.signing)) is F.UNKNOWN_KEY


def test_forged_receipt_by_another_recipient_in_its_own_name() -> None:
    # A genuine receipt from XC is no receipt from XB.
    assert refused(signed_receipt(CAPTURED, recipient=XC)) is F.RECEIPT_MISMATCH


def test_forged_receipt_signed_by_an_unknown_key() -> None:
    outsider = ed_key(99)
    body = receipt(CAPTURED, recipient_key_id=XA.signing_key_id)  # any listed id but XB's
    assert refused(forged(body, outsider)) is F.UNKNOWN_KEY


def test_forged_receipt_over_another_digest() -> None:
    other = envelope(msg_id=MESSAGE_ID, lifetime=dt.timedelta(hours=2))  # same id, other bytes
    assert other.digest() != CAPTURED.digest()
    assert refused(signed_receipt(other)) is F.RECEIPT_MISMATCH


def test_forged_receipt_for_another_message_id() -> None:
    body = receipt(CAPTURED, message_id=message_id(5))
    assert refused(sign_receipt(body, XB.signing)) is F.RECEIPT_MISMATCH


def test_receipt_for_another_message_is_not_accepted_for_this_one() -> None:
    other = envelope(msg_id=message_id(6))
    assert refused(signed_receipt(other)) is F.RECEIPT_MISMATCH


def test_envelope_signature_replayed_as_a_receipt_signature() -> None:
    # Domain separation: XB's signature over an envelope header it sent can never
    # stand as its signature over a receipt body, even over the same bytes.
    sent_by_xb = envelope(sender=XB, recipients=(XA,))
    replayed = SignedReceipt(receipt(CAPTURED).to_bytes(), sent_by_xb.signature)
    assert refused(replayed) is F.BAD_SIGNATURE
    with pytest.raises(VerificationError):
        verify(SignedReceipt(sent_by_xb.header, sent_by_xb.signature))


# --- the recipient and its key in the trust list --------------------------------------------


def test_receipt_from_a_node_not_in_the_trust_list() -> None:
    trust = federation(XA.trusted(), XC.trusted())
    assert refused(signed_receipt(CAPTURED), trust=trust) is F.UNKNOWN_SENDER


def test_receipt_from_a_suspended_node() -> None:
    trust = federation(XA.trusted(), XB.trusted(active=False))
    assert refused(signed_receipt(CAPTURED), trust=trust) is F.UNKNOWN_SENDER


@pytest.mark.parametrize(
    ("received_at", "now", "failure"),
    [
        pytest.param(
            T0 - dt.timedelta(seconds=2), T0 - dt.timedelta(seconds=1), None, id="before-revocation"
        ),
        # The signer chooses received_at: a backdated receipt arriving after the
        # revocation proves nothing.
        pytest.param(
            T0 - dt.timedelta(seconds=1), T0, F.UNKNOWN_KEY, id="backdated-after-revocation"
        ),
        pytest.param(T0, T0, F.UNKNOWN_KEY, id="at-revocation"),
    ],
)
def test_receipt_signed_with_a_revoked_key(
    received_at: dt.datetime, now: dt.datetime, failure: VerificationFailure | None
) -> None:
    revoked = XB.trusted(signing_keys=[key_info(XB.signing.public_key(), revoked_at=T0)])
    trust = federation(XA.trusted(), revoked)
    signed = signed_receipt(CAPTURED, received_at=received_at)
    if failure is None:
        assert verify(signed, trust=trust, now=now).received_at == received_at
    else:
        assert refused(signed, trust=trust, now=now) is failure


# --- malformed bodies ----------------------------------------------------------------------


def _body(**fields: object) -> bytes:
    message = pb.ReceiptBody.FromString(receipt(CAPTURED).to_bytes())
    for name, value in fields.items():
        if value is None:
            message.ClearField(name)
        else:
            setattr(message, name, value)
    return message.SerializeToString()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xff\xff", id="not-protobuf"),
        pytest.param(b"", id="empty"),
        pytest.param(_body(received_at=None), id="no-time"),
        pytest.param(_body(status=pb.RECEIPT_STATUS_UNSPECIFIED), id="no-status"),
        pytest.param(_body(status=7), id="unknown-status"),
        pytest.param(
            _body(rejection_reason=pb.REJECTION_REASON_EXPIRED), id="accepted-with-a-reason"
        ),
        pytest.param(
            _body(status=pb.RECEIPT_STATUS_REJECTED, rejection_reason=0),
            id="rejected-without-a-reason",
        ),
        pytest.param(
            _body(status=pb.RECEIPT_STATUS_REJECTED, rejection_reason=999),
            id="rejected-for-an-unknown-reason",
        ),
    ],
)
def test_malformed_receipt_body(body: bytes) -> None:
    signed = SignedReceipt(body, XB.signing.sign(encode(RECEIPT_TAG, body)))
    assert refused(signed) is F.MALFORMED


def test_receipt_time_out_of_datetime_range_is_malformed() -> None:
    message = pb.ReceiptBody.FromString(receipt(CAPTURED).to_bytes())
    message.received_at.nanos = 1_500_000_000  # parses as protobuf, is no valid time
    body = message.SerializeToString()
    signed = SignedReceipt(body, XB.signing.sign(encode(RECEIPT_TAG, body)))
    assert refused(signed) is F.MALFORMED


def test_unknown_field_appended_to_a_signed_body_is_caught_by_the_signature() -> None:
    # Field 15, varint 1: parses (and would be ignored), but the body is verified as received.
    signed = signed_receipt(CAPTURED)
    extended = dataclasses.replace(signed, body=signed.body + b"\x78\x01")
    assert Receipt.from_bytes(extended.body) == Receipt.from_bytes(signed.body)
    assert refused(extended) is F.BAD_SIGNATURE
