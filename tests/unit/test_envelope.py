"""Envelopes: the header as bytes, the signature over them, and the receiver's checks.

The attacks each check stops are in test_envelope_attacks.py; tampering with
single bits is in test_bit_flips.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

import pytest

from exchange._encoding import encode, tagged_digest
from exchange._proto.exchange.v1 import envelope_pb2 as env_pb
from exchange.envelope import (
    MAX_RECIPIENTS,
    Envelope,
    Handling,
    Header,
    sign_envelope,
    verify_envelope,
)
from exchange.errors import ValidationError, VerificationError, VerificationFailure
from exchange.notices import validate_notice

from ._builders import (
    HANDLING,
    POLICY,
    T0,
    XA,
    XB,
    XC,
    NodeKeys,
    ed_key,
    envelope,
    federation,
    header,
    message_id,
    notice,
    receive,
    sealed_for,
    x_key,
)

F = VerificationFailure
HEADER_TAG = "exchange.v1.EnvelopeHeader"


def sign_raw(made: Header, sealed_payload: bytes, key: NodeKeys = XA) -> Envelope:
    """Sign a header without sign_envelope's consistency checks (a careless or hostile sender)."""
    header_bytes = made.to_bytes()
    return Envelope(
        header_bytes, sealed_payload, key.signing.sign(encode(HEADER_TAG, header_bytes))
    )


def test_the_sample_notice_is_valid() -> None:
    assert validate_notice(notice(), now=T0) == env_pb.NOTICE_KIND_CASE_REFERRAL


def test_header_round_trips_through_its_bytes() -> None:
    payload = sealed_for(XB, XC)
    made = header(
        payload,
        recipients=(XB, XC),
        created_at=T0 + dt.timedelta(microseconds=123_456),
        in_reply_to=message_id(9),
    )
    assert Header.from_bytes(made.to_bytes()) == made


def test_envelope_to_its_recipients_is_accepted_by_each() -> None:
    signed = envelope(recipients=(XB, XC))
    for recipient in (XB, XC):
        check = receive(signed, recipient=recipient)
        assert check.ok, check.failure
        assert check.header == Header.from_bytes(signed.header)
        assert check.sender == federation().node(XA.node_id)


def test_without_a_tls_peer_the_sender_binding_is_not_checked() -> None:
    assert receive(envelope(), peer=None).ok


def test_verify_envelope_returns_the_header_and_sender() -> None:
    signed = envelope()
    made, sender = verify_envelope(
        signed,
        trust=federation(),
        recipient_node_id=XB.node_id,
        peer_node_id=XA.node_id,
        now=T0,
        policy=POLICY,
    )
    assert made.message_id == Header.from_bytes(signed.header).message_id
    assert sender.node_id == XA.node_id


def test_verify_envelope_raises_the_failure_check_envelope_reports() -> None:
    with pytest.raises(VerificationError) as raised:
        verify_envelope(
            envelope(),
            trust=federation(),
            recipient_node_id=XC.node_id,
            peer_node_id=XA.node_id,
            now=T0,
            policy=POLICY,
        )
    assert raised.value.failure is F.NOT_A_RECIPIENT


def test_signature_covers_the_tagged_header_bytes_as_sent() -> None:
    signed = envelope()
    XA.signing.public_key().verify(signed.signature, encode(HEADER_TAG, signed.header))


def test_sign_envelope_refuses_a_header_naming_another_key() -> None:
    payload = sealed_for()
    with pytest.raises(ValueError, match="another signing key"):
        envelope(sealed_payload=payload, sender_key_id=XB.signing_key_id)


def test_sign_envelope_refuses_a_header_naming_another_payload() -> None:
    made = header(sealed_for())
    with pytest.raises(ValueError, match="payload digest"):
        sign_envelope(made, sealed_for(XC), XA.signing)


# --- Envelope.digest: what receipts sign ----------------------------------------------------


def test_digest_is_the_tagged_digest_of_the_three_parts() -> None:
    signed = envelope()
    assert signed.digest() == tagged_digest(
        "exchange.v1.SignedEnvelope", signed.header, signed.sealed_payload, signed.signature
    )


def test_digest_survives_the_protobuf_round_trip() -> None:
    signed = envelope()
    wire = env_pb.SignedEnvelope.FromString(signed.to_proto().SerializeToString())
    assert Envelope.from_proto(wire).digest() == signed.digest()


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda e: dataclasses.replace(e, header=e.header + b"\x00"), id="header"),
        pytest.param(
            lambda e: dataclasses.replace(e, sealed_payload=e.sealed_payload + b"\x00"),
            id="payload",
        ),
        pytest.param(
            # Flipped, not set: a last byte that already was 0x00 would change nothing.
            lambda e: dataclasses.replace(
                e, signature=e.signature[:-1] + bytes([e.signature[-1] ^ 1])
            ),
            id="signature",
        ),
        pytest.param(
            lambda e: Envelope(e.header[:-1], e.header[-1:] + e.sealed_payload, e.signature),
            id="byte-moved-between-parts",
        ),
    ],
)
def test_digest_changes_with_any_part(change: object) -> None:
    signed = envelope()
    assert change(signed).digest() != signed.digest()  # type: ignore[operator]


# --- structure: a well-signed but ill-formed header is MALFORMED ------------------------------


def _recipients(n: int) -> tuple[NodeKeys, ...]:
    return tuple(NodeKeys(f"n{i:02d}-node", "XA", ed_key(50), x_key(50)) for i in range(n))


MALFORMED_HEADERS = [
    pytest.param({"recipient_node_ids": ()}, "recipient_node_ids", id="no-recipients"),
    pytest.param(
        {"recipient_node_ids": tuple(r.node_id for r in _recipients(MAX_RECIPIENTS + 1))},
        "recipient_node_ids",
        id="too-many-recipients",
    ),
    pytest.param(
        {"recipient_node_ids": (XB.node_id, XB.node_id)},
        "recipient_node_ids",
        id="duplicate-recipient",
    ),
    pytest.param(
        {"recipient_node_ids": (XB.node_id, XA.node_id)},
        "recipient_node_ids",
        id="sender-among-recipients",
    ),
    pytest.param({"recipient_node_ids": ("XB_NODE",)}, "recipient_node_ids[0]", id="bad-node-id"),
    pytest.param({"message_id": "not-a-uuid"}, "message_id", id="message-id-not-a-uuid"),
    pytest.param(
        {"message_id": "9b2d3c4e-5f60-4a7b-8c9d-0e1f2a3b4c5d"}, "message_id", id="uuid-v4"
    ),
    pytest.param({"sender_node_id": "XA"}, "sender_node_id", id="bad-sender-id"),
    pytest.param({"sender_key_id": ""}, "sender_key_id", id="no-key-id"),
    pytest.param({"expires_at": T0}, "expires_at", id="expires-when-created"),
    pytest.param(
        {"expires_at": T0 - dt.timedelta(seconds=1)}, "expires_at", id="expires-before-created"
    ),
    pytest.param({"kind": env_pb.NOTICE_KIND_UNSPECIFIED}, "kind", id="kind-unspecified"),
    pytest.param({"kind": 99}, "kind", id="kind-unknown"),
    pytest.param({"case_reference": "Jane Doe"}, "case_reference", id="case-reference-a-name"),
    pytest.param({"case_reference": ""}, "case_reference", id="no-case-reference"),
    pytest.param({"in_reply_to": "42"}, "in_reply_to", id="in-reply-to-not-a-uuid"),
    pytest.param({"payload_digest": bytes(31)}, "payload_digest", id="short-digest"),
    pytest.param(
        {"handling": dataclasses.replace(HANDLING, retention_days=0)},
        "handling.retention_days",
        id="no-retention",
    ),
    pytest.param(
        {"handling": dataclasses.replace(HANDLING, onward_sharing=0)},
        "handling.onward_sharing",
        id="no-onward-sharing-rule",
    ),
]


@pytest.mark.parametrize(("fields", "named_field"), MALFORMED_HEADERS)
def test_ill_formed_header_is_malformed_even_when_signed(
    fields: dict[str, object], named_field: str
) -> None:
    payload = sealed_for()
    made = dataclasses.replace(header(payload), **fields)  # type: ignore[arg-type]
    check = receive(sign_raw(made, payload))
    assert check.failure is F.MALFORMED
    assert check.detail.startswith(f"header.{named_field}:")
    assert check.header is None


@pytest.mark.parametrize(
    "header_bytes",
    [
        pytest.param(b"\xff\xff\xff", id="not-protobuf"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\x0a" + b"\x00" * (8 * 1024), id="over-8-KiB"),
    ],
)
def test_undecodable_header_is_malformed(header_bytes: bytes) -> None:
    signed = envelope()
    check = receive(dataclasses.replace(signed, header=header_bytes))
    assert check.failure is F.MALFORMED
    assert check.header is None


@pytest.mark.parametrize(
    ("field", "seconds", "nanos"),
    [
        pytest.param("created_at", int(T0.timestamp()), 1_500_000_000, id="nanos-too-large"),
        pytest.param("created_at", int(T0.timestamp()), -1, id="nanos-negative"),
        pytest.param("expires_at", 10**12, 0, id="after-year-9999"),
        pytest.param("created_at", -(10**12), 0, id="before-year-1"),
    ],
)
def test_header_time_out_of_datetime_range_is_malformed(
    field: str, seconds: int, nanos: int
) -> None:
    # Protobuf parses any Timestamp; a datetime cannot hold these. Found by bit flips.
    payload = sealed_for()
    message = env_pb.EnvelopeHeader.FromString(header(payload).to_bytes())
    getattr(message, field).seconds = seconds
    getattr(message, field).nanos = nanos
    header_bytes = message.SerializeToString()
    signed = Envelope(header_bytes, payload, XA.signing.sign(encode(HEADER_TAG, header_bytes)))
    check = receive(signed)
    assert check.failure is F.MALFORMED
    assert check.detail.startswith(f"header.{field}:")


# --- time rules: boundaries (ReceivePolicy: 5 minutes of skew, 31 days of age) ---------------

MINUTE, DAY, SECOND = dt.timedelta(minutes=1), dt.timedelta(days=1), dt.timedelta(seconds=1)

TIME_RULES = [
    pytest.param(T0, DAY, None, id="created-now"),
    pytest.param(T0 + 5 * MINUTE, DAY, None, id="created-at-the-skew-limit"),
    pytest.param(T0 + 5 * MINUTE + SECOND, DAY, F.CLOCK_SKEW, id="created-beyond-the-skew"),
    pytest.param(T0, 31 * DAY, None, id="lifetime-of-max-age"),
    pytest.param(T0, 31 * DAY + SECOND, F.TOO_OLD, id="lifetime-beyond-max-age"),
    pytest.param(T0 - 31 * DAY - SECOND, 31 * DAY, F.TOO_OLD, id="created-beyond-max-age"),
    pytest.param(T0 - DAY - SECOND, DAY + 2 * SECOND, None, id="expires-in-one-second"),
    pytest.param(T0 - DAY, DAY, F.EXPIRED, id="expires-exactly-now"),
    pytest.param(T0 - 2 * DAY, DAY, F.EXPIRED, id="expired-a-day-ago"),
]


@pytest.mark.parametrize(("created_at", "lifetime", "failure"), TIME_RULES)
def test_time_rules(
    created_at: dt.datetime, lifetime: dt.timedelta, failure: VerificationFailure | None
) -> None:
    check = receive(envelope(created_at=created_at, lifetime=lifetime))
    assert check.failure is failure
    # Time failures come after the signature: the header is authentic and returned.
    assert check.header is not None


# --- the handling code ---------------------------------------------------------------------

HANDLING_CASES = [
    pytest.param(HANDLING, None, id="valid"),
    pytest.param(dataclasses.replace(HANDLING, retention_days=1), None, id="one-day"),
    pytest.param(dataclasses.replace(HANDLING, retention_days=3650), None, id="ten-years"),
    pytest.param(
        dataclasses.replace(HANDLING, retention_days=3651), "retention_days", id="over-ten-years"
    ),
    pytest.param(dataclasses.replace(HANDLING, retention_days=0), "retention_days", id="no-days"),
    pytest.param(
        dataclasses.replace(HANDLING, onward_sharing=0), "onward_sharing", id="no-sharing-rule"
    ),
    pytest.param(
        dataclasses.replace(HANDLING, onward_sharing=9), "onward_sharing", id="unknown-sharing"
    ),
    pytest.param(dataclasses.replace(HANDLING, evidence_use=0), "evidence_use", id="no-evidence"),
]


@pytest.mark.parametrize(("handling", "bad_field"), HANDLING_CASES)
def test_handling_code(handling: Handling, bad_field: str | None) -> None:
    if bad_field is None:
        assert handling.validate() is handling
        assert Handling.from_proto(handling.to_proto()) == handling
    else:
        with pytest.raises(ValidationError) as raised:
            handling.validate()
        assert raised.value.field == f"handling.{bad_field}"


def test_payload_digest_in_the_header_is_the_sha256_of_the_sealed_payload() -> None:
    signed = envelope()
    assert (
        Header.from_bytes(signed.header).payload_digest
        == hashlib.sha256(signed.sealed_payload).digest()
    )
