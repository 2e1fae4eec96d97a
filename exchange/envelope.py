"""Envelopes: sign and verify the exact bytes that travel.

An envelope is three byte strings (DESIGN.md, "Wire format"):

    header          a serialized EnvelopeHeader, signed and verified as received
    sealed_payload  a serialized SealedPayload, bound by the header's payload digest
    signature       Ed25519 over encode("exchange.v1.EnvelopeHeader", header)

`check_envelope` runs the receiving node's checks in a fixed order and returns
an `EnvelopeCheck` naming the first that failed; `verify_envelope` raises
`VerificationError` for it. This module does no I/O: the trust list, the clock
reading and the TLS peer identity are parameters.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from exchange import _wire
from exchange._encoding import encode, tagged_digest
from exchange._proto.exchange.v1 import envelope_pb2 as pb
from exchange.errors import ValidationError, VerificationError, VerificationFailure
from exchange.ids import (
    message_id_bound_to,
    validate_case_reference,
    validate_message_id,
    validate_node_id,
)
from exchange.keys import ed25519_key_id
from exchange.trust import TrustedNode, TrustList

__all__ = [
    "MAX_RECIPIENTS",
    "PROTOCOL_VERSION",
    "Envelope",
    "EnvelopeCheck",
    "Handling",
    "Header",
    "ReceivePolicy",
    "check_envelope",
    "sign_envelope",
    "verify_envelope",
]

PROTOCOL_VERSION = 1
MAX_RECIPIENTS = 32
MAX_RETENTION_DAYS = 3650
_HEADER_TAG = "exchange.v1.EnvelopeHeader"
_DIGEST_TAG = "exchange.v1.SignedEnvelope"
_MAX_HEADER_BYTES = 8 * 1024
_KINDS = frozenset(pb.NoticeKind.values()) - {pb.NOTICE_KIND_UNSPECIFIED}
_SUITES = frozenset(pb.SealSuite.values()) - {pb.SEAL_SUITE_UNSPECIFIED}


@dataclasses.dataclass(frozen=True)
class Handling:
    """The handling code: onward sharing, evidence use, retention (OPSC art. 8)."""

    onward_sharing: int
    evidence_use: int
    retention_days: int

    def validate(self, field: str = "handling") -> Handling:
        if self.onward_sharing not in set(pb.OnwardSharing.values()) - {0}:
            raise ValidationError(f"{field}.onward_sharing", "is required")
        if self.evidence_use not in set(pb.EvidenceUse.values()) - {0}:
            raise ValidationError(f"{field}.evidence_use", "is required")
        if not 1 <= self.retention_days <= MAX_RETENTION_DAYS:
            raise ValidationError(
                f"{field}.retention_days", f"must be between 1 and {MAX_RETENTION_DAYS}"
            )
        return self

    def to_proto(self) -> pb.HandlingCode:
        return pb.HandlingCode(
            onward_sharing=self.onward_sharing,  # type: ignore[arg-type]
            evidence_use=self.evidence_use,  # type: ignore[arg-type]
            retention_days=self.retention_days,
        )

    @staticmethod
    def from_proto(message: pb.HandlingCode) -> Handling:
        return Handling(message.onward_sharing, message.evidence_use, message.retention_days)


@dataclasses.dataclass(frozen=True)
class Header:
    """The parsed, authenticated header of an envelope."""

    message_id: str
    sender_node_id: str
    sender_key_id: str
    recipient_node_ids: tuple[str, ...]
    created_at: dt.datetime
    expires_at: dt.datetime
    kind: int
    case_reference: str
    in_reply_to: str
    handling: Handling
    payload_digest: bytes
    seal_suite: int
    protocol_version: int = PROTOCOL_VERSION

    def to_bytes(self) -> bytes:
        """Serialize for signing; done once, by the sender."""
        return pb.EnvelopeHeader(
            protocol_version=self.protocol_version,
            message_id=self.message_id,
            sender_node_id=self.sender_node_id,
            sender_key_id=self.sender_key_id,
            recipient_node_ids=self.recipient_node_ids,
            created_at=_wire.timestamp(self.created_at),
            expires_at=_wire.timestamp(self.expires_at),
            kind=self.kind,  # type: ignore[arg-type]
            case_reference=self.case_reference,
            in_reply_to=self.in_reply_to,
            handling=self.handling.to_proto(),
            payload_digest=self.payload_digest,
            seal_suite=self.seal_suite,  # type: ignore[arg-type]
        ).SerializeToString()

    @staticmethod
    def from_bytes(data: bytes) -> Header:
        """Parse and structurally check header bytes.

        Raises:
            VerificationError: MALFORMED, naming the field.
        """
        if len(data) > _MAX_HEADER_BYTES:
            raise VerificationError(VerificationFailure.MALFORMED, "header too large")
        try:
            message = _wire.parse(pb.EnvelopeHeader, data)
            return _header_from_proto(message)
        except _wire.MalformedError:
            raise VerificationError(VerificationFailure.MALFORMED, "header") from None
        except ValidationError as exc:
            raise VerificationError(VerificationFailure.MALFORMED, f"header.{exc}") from None


def _header_from_proto(message: pb.EnvelopeHeader) -> Header:
    # The version and suite are checked by check_envelope with their own failure.
    validate_message_id(message.message_id, "message_id")
    validate_node_id(message.sender_node_id, "sender_node_id")
    if not message_id_bound_to(message.message_id, message.sender_node_id):
        raise ValidationError("message_id", "is not bound to the sender")
    if not message.sender_key_id:
        raise ValidationError("sender_key_id", "is required")
    recipients = tuple(message.recipient_node_ids)
    if not 1 <= len(recipients) <= MAX_RECIPIENTS:
        raise ValidationError("recipient_node_ids", f"must name 1 to {MAX_RECIPIENTS} nodes")
    for i, recipient in enumerate(recipients):
        validate_node_id(recipient, f"recipient_node_ids[{i}]")
    if len(set(recipients)) != len(recipients) or message.sender_node_id in recipients:
        raise ValidationError("recipient_node_ids", "must be unique and exclude the sender")
    created_at = _wire.optional_time(message, "created_at")
    expires_at = _wire.optional_time(message, "expires_at")
    if created_at is None or expires_at is None or expires_at <= created_at:
        raise ValidationError("expires_at", "created_at and a later expires_at are required")
    if message.kind not in _KINDS:
        raise ValidationError("kind", "unknown notice kind")
    validate_case_reference(message.case_reference, "case_reference")
    if message.in_reply_to:
        validate_message_id(message.in_reply_to, "in_reply_to")
    if len(message.payload_digest) != 32:
        raise ValidationError("payload_digest", "must be 32 bytes")
    return Header(
        message_id=message.message_id,
        sender_node_id=message.sender_node_id,
        sender_key_id=message.sender_key_id,
        recipient_node_ids=recipients,
        created_at=created_at,
        expires_at=expires_at,
        kind=message.kind,
        case_reference=message.case_reference,
        in_reply_to=message.in_reply_to,
        handling=Handling.from_proto(message.handling).validate(),
        payload_digest=message.payload_digest,
        seal_suite=message.seal_suite,
        protocol_version=message.protocol_version,
    )


@dataclasses.dataclass(frozen=True)
class Envelope:
    """The three byte strings of a signed envelope, exactly as sent or received."""

    header: bytes
    sealed_payload: bytes
    signature: bytes

    def digest(self) -> bytes:
        """SHA-256 over the tagged encoding of the three parts (what receipts sign).

        Independent of protobuf serialization, so sender and receiver agree.
        Computed once per envelope (payloads can be megabytes).
        """
        cached: bytes | None = self.__dict__.get("_digest")
        if cached is None:
            cached = tagged_digest(_DIGEST_TAG, self.header, self.sealed_payload, self.signature)
            # A frozen dataclass: memoize beside the fields, outside equality.
            object.__setattr__(self, "_digest", cached)
        return cached

    def to_proto(self) -> pb.SignedEnvelope:
        return pb.SignedEnvelope(
            header=self.header, sealed_payload=self.sealed_payload, signature=self.signature
        )

    @staticmethod
    def from_proto(message: pb.SignedEnvelope) -> Envelope:
        return Envelope(message.header, message.sealed_payload, message.signature)


def sign_envelope(
    header: Header, sealed_payload: bytes, key: ed25519.Ed25519PrivateKey
) -> Envelope:
    """Serialize `header` once and sign those bytes.

    Raises:
        ValueError: the header does not name this key or this payload (a bug).
    """
    if header.sender_key_id != ed25519_key_id(key.public_key()):
        raise ValueError("header names another signing key")
    if header.payload_digest != hashlib.sha256(sealed_payload).digest():
        raise ValueError("header payload digest does not match the payload")
    header_bytes = header.to_bytes()
    return Envelope(header_bytes, sealed_payload, key.sign(encode(_HEADER_TAG, header_bytes)))


@dataclasses.dataclass(frozen=True)
class ReceivePolicy:
    """Time rules for accepting envelopes.

    Attributes:
        max_clock_skew: how far in the future `created_at` may be.
        max_message_age: how old `created_at` may be. Also bounds how long a
            node must remember message ids to refuse replays.
    """

    max_clock_skew: dt.timedelta = dt.timedelta(minutes=5)
    max_message_age: dt.timedelta = dt.timedelta(days=31)


@dataclasses.dataclass(frozen=True)
class EnvelopeCheck:
    """The outcome of checking an envelope: the header, or the first failure."""

    header: Header | None
    sender: TrustedNode | None
    failure: VerificationFailure | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.failure is None

    def raise_for_failure(self) -> None:
        if self.failure is not None:
            raise VerificationError(self.failure, self.detail)


def _fail(
    failure: VerificationFailure,
    detail: str = "",
    header: Header | None = None,
    sender: TrustedNode | None = None,
) -> EnvelopeCheck:
    return EnvelopeCheck(header, sender, failure, detail)


def check_envelope(
    envelope: Envelope,
    *,
    trust: TrustList,
    recipient_node_id: str,
    peer_node_id: str | None,
    now: dt.datetime,
    policy: ReceivePolicy,
) -> EnvelopeCheck:
    """Run the receiving node's checks, in order, stopping at the first failure.

    1. The header parses and is well formed.
    2. The protocol version is one this node implements (it decides the rules below).
    3. The sender is an active node of the trust list.
    4. The sender is the authenticated TLS peer (when called from the network).
    5. The named key is the sender's signing key, valid when the envelope was made.
    6. The signature verifies over the header bytes as received; every later
       check reads only authenticated values.
    7. The seal suite is one this node implements (no fallback).
    8. The payload digest in the header matches the payload.
    9. This node is among the recipients.
    10. The envelope was not made too far in the future, nor too long ago.
    11. The envelope has not expired. Only this failure leaves an authentic
        envelope behind (the caller answers it with a signed rejection).

    Args:
        peer_node_id: node id of the TLS peer, or None when not networked.
    """
    try:
        header = Header.from_bytes(envelope.header)
    except VerificationError as exc:
        return _fail(exc.failure, exc.detail)
    if header.protocol_version != PROTOCOL_VERSION:
        return _fail(VerificationFailure.UNSUPPORTED_PROTOCOL, str(header.protocol_version))
    sender = trust.active_node(header.sender_node_id)
    if sender is None:
        return _fail(VerificationFailure.UNKNOWN_SENDER, header.sender_node_id)
    if peer_node_id is not None and peer_node_id != header.sender_node_id:
        return _fail(VerificationFailure.SENDER_MISMATCH, header.sender_node_id)
    key = sender.signing_key(header.sender_key_id, header.created_at, now=now)
    if key is None:
        return _fail(VerificationFailure.UNKNOWN_KEY, header.sender_key_id)
    try:
        key.ed25519().verify(envelope.signature, encode(_HEADER_TAG, envelope.header))
    except InvalidSignature:
        return _fail(VerificationFailure.BAD_SIGNATURE)
    # From here on the header is authentic.
    if header.seal_suite not in _SUITES:
        return _fail(VerificationFailure.UNSUPPORTED_SUITE, str(header.seal_suite), header, sender)
    if hashlib.sha256(envelope.sealed_payload).digest() != header.payload_digest:
        return _fail(VerificationFailure.PAYLOAD_DIGEST_MISMATCH, header=header, sender=sender)
    if recipient_node_id not in header.recipient_node_ids:
        return _fail(VerificationFailure.NOT_A_RECIPIENT, header=header, sender=sender)
    if header.created_at > now + policy.max_clock_skew:
        return _fail(VerificationFailure.CLOCK_SKEW, header=header, sender=sender)
    if header.created_at < now - policy.max_message_age or (
        header.expires_at > header.created_at + policy.max_message_age
    ):
        return _fail(VerificationFailure.TOO_OLD, header=header, sender=sender)
    if header.expires_at <= now:
        return _fail(VerificationFailure.EXPIRED, header=header, sender=sender)
    return EnvelopeCheck(header, sender)


def verify_envelope(
    envelope: Envelope,
    *,
    trust: TrustList,
    recipient_node_id: str,
    peer_node_id: str | None,
    now: dt.datetime,
    policy: ReceivePolicy,
) -> tuple[Header, TrustedNode]:
    """`check_envelope`, raising `VerificationError` on any failure."""
    check = check_envelope(
        envelope,
        trust=trust,
        recipient_node_id=recipient_node_id,
        peer_node_id=peer_node_id,
        now=now,
        policy=policy,
    )
    check.raise_for_failure()
    assert check.header is not None
    assert check.sender is not None
    return check.header, check.sender
