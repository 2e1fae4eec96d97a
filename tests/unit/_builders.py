"""Deterministic test material: keys, trust lists, notices, envelopes and receipts.

Every key is derived from a small integer, every time from `T0`, and every
random byte the library lets us inject comes from `fixed_random`, so a failing
test fails the same way each run. (HPKE's ephemeral keys are drawn inside
`cryptography` and cannot be injected; nothing asserted here depends on them.)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from exchange._proto.exchange.v1 import envelope_pb2 as env_pb
from exchange._proto.exchange.v1 import notices_pb2 as pb
from exchange.clock import ManualClock
from exchange.envelope import (
    Envelope,
    EnvelopeCheck,
    Handling,
    Header,
    ReceivePolicy,
    check_envelope,
    sign_envelope,
)
from exchange.ids import new_message_id
from exchange.keys import ed25519_key_id, raw_public, x25519_key_id
from exchange.receipt import Receipt, SignedReceipt, sign_receipt
from exchange.seal import SUITE, SealRecipient, seal
from exchange.trust import (
    ED25519,
    X25519,
    KeyInfo,
    SignedTrustList,
    Steward,
    TrustedNode,
    TrustList,
    sign_trust_list,
    steward_from_key,
)

# The instant every test is set at ("now" for the receiver).
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
FEDERATION = "opsc-test-federation"
POLICY = ReceivePolicy()  # 5 minutes of skew, 31 days of age
KEYS_SINCE = T0 - dt.timedelta(days=365)


def ed_key(n: int) -> ed25519.Ed25519PrivateKey:
    """The Ed25519 key whose 32-byte seed is `n` repeated."""
    return ed25519.Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32)


def x_key(n: int) -> x25519.X25519PrivateKey:
    """The X25519 key whose 32-byte scalar is `n` repeated."""
    return x25519.X25519PrivateKey.from_private_bytes(bytes([n]) * 32)


def fixed_random(seed: bytes = b"unit") -> Callable[[int], bytes]:
    """A deterministic stand-in for os.urandom: SHA-256 in counter mode."""
    counter = 0

    def random_bytes(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
        return out[:n]

    return random_bytes


def clock(at: dt.datetime = T0) -> ManualClock:
    return ManualClock(at)


def key_info(
    public: ed25519.Ed25519PublicKey | x25519.X25519PublicKey,
    *,
    not_before: dt.datetime = KEYS_SINCE,
    not_after: dt.datetime | None = None,
    revoked_at: dt.datetime | None = None,
) -> KeyInfo:
    """The trust list entry of a public key with the given validity window."""
    if isinstance(public, ed25519.Ed25519PublicKey):
        key_id, algorithm = ed25519_key_id(public), ED25519
    else:
        key_id, algorithm = x25519_key_id(public), X25519
    return KeyInfo(key_id, algorithm, raw_public(public), not_before, not_after, revoked_at)


@dataclasses.dataclass(frozen=True)
class NodeKeys:
    """One node's private keys, as its operator holds them."""

    node_id: str
    country: str
    signing: ed25519.Ed25519PrivateKey
    sealing: x25519.X25519PrivateKey

    @property
    def signing_key_id(self) -> str:
        return ed25519_key_id(self.signing.public_key())

    @property
    def sealing_key_id(self) -> str:
        return x25519_key_id(self.sealing.public_key())

    def opening_keys(self) -> dict[str, x25519.X25519PrivateKey]:
        """The `keys` argument of `open_sealed`."""
        return {self.sealing_key_id: self.sealing}

    def seal_recipient(self) -> SealRecipient:
        return SealRecipient(self.node_id, self.sealing_key_id, self.sealing.public_key())

    def trusted(
        self,
        *,
        active: bool = True,
        signing_keys: Sequence[KeyInfo] | None = None,
        sealing_keys: Sequence[KeyInfo] | None = None,
    ) -> TrustedNode:
        """This node's trust list entry (current keys valid since KEYS_SINCE by default)."""
        return TrustedNode(
            node_id=self.node_id,
            country=self.country,
            authority_name=f"{self.country} child protection authority",
            endpoint=f"{self.node_id}.example:7443",
            active=active,
            signing_keys=tuple(signing_keys or (key_info(self.signing.public_key()),)),
            sealing_keys=tuple(sealing_keys or (key_info(self.sealing.public_key()),)),
            tls_certificate_sha256=hashlib.sha256(self.node_id.encode()).digest(),
        )


XA = NodeKeys("xa-node", "XA", ed_key(1), x_key(101))
XB = NodeKeys("xb-node", "XB", ed_key(2), x_key(102))
XC = NodeKeys("xc-node", "XC", ed_key(3), x_key(103))
STEWARD_KEYS = {n: ed_key(200 + n) for n in range(1, 6)}  # stewards S1..S5


def stewards(*numbers: int) -> tuple[Steward, ...]:
    return tuple(steward_from_key(f"S{n}", STEWARD_KEYS[n].public_key()) for n in numbers)


def trust_list(
    nodes: Iterable[TrustedNode] = (),
    *,
    version: int = 1,
    steward_numbers: Sequence[int] = (1, 2, 3),
    threshold: int = 2,
    issued_at: dt.datetime = T0 - dt.timedelta(days=1),
    expires_at: dt.datetime = T0 + dt.timedelta(days=90),
    federation_id: str = FEDERATION,
) -> TrustList:
    return TrustList(
        federation_id=federation_id,
        version=version,
        issued_at=issued_at,
        expires_at=expires_at,
        stewards=stewards(*steward_numbers),
        threshold=threshold,
        nodes={node.node_id: node for node in nodes},
    )


def federation(*nodes: TrustedNode) -> TrustList:
    """The trust list of XA, XB and XC (or of `nodes`), all active with current keys."""
    return trust_list(nodes or (XA.trusted(), XB.trusted(), XC.trusted()))


def signed_by(listed: TrustList, *steward_numbers: int) -> SignedTrustList:
    """`listed` signed by the stewards numbered `steward_numbers` (in that order)."""
    body = listed.to_bytes()
    return SignedTrustList(
        body, tuple(sign_trust_list(body, STEWARD_KEYS[n]) for n in steward_numbers)
    )


def notice() -> pb.Notice:
    """A small, valid case referral (no person is named in any notice type)."""
    return pb.Notice(
        protection=pb.ChildProtectionFlags(
            identity_protected=True,
            victim_identification=pb.VICTIM_IDENTIFICATION_NOT_IDENTIFIED,
        ),
        case_referral=pb.CaseReferral(
            offence_categories=[pb.OFFENCE_CATEGORY_CHILD_SEXUAL_ABUSE_MATERIAL],
            participation=pb.OFFENCE_PARTICIPATION_COMMITTED,
            jurisdiction_links=[pb.JURISDICTION_LINK_SUSPECT_NATIONAL_OR_RESIDENT],
            victim_count=1,
            victim_age_bands=[pb.AGE_BAND_12_TO_14],
            suspect_tokens=[bytes(range(32))],
            urgency=pb.URGENCY_PRIORITY,
            contact_point=pb.ContactPoint(unit="National child protection unit"),
            requested_actions=[pb.REQUESTED_ACTION_OPEN_INVESTIGATION],
            summary="Material traced to a service hosted in the recipient's jurisdiction.",
        ),
    )


HANDLING = Handling(
    onward_sharing=env_pb.ONWARD_SHARING_NONE,
    evidence_use=env_pb.EVIDENCE_USE_INTELLIGENCE_ONLY,
    retention_days=365,
)


def message_id(n: int = 0, at: dt.datetime = T0, sender: NodeKeys = XA) -> str:
    """A deterministic UUIDv7 of `sender` made at `at`; `n` picks its random bits."""
    return new_message_id(clock(at), sender.node_id, fixed_random(f"message-{n}".encode()))


def sealed_for(
    *recipients: NodeKeys,
    sender: NodeKeys = XA,
    msg_id: str | None = None,
    plaintext: bytes | None = None,
) -> bytes:
    """A SealedPayload for `recipients` (XB by default) in message `msg_id`."""
    return seal(
        notice().SerializeToString() if plaintext is None else plaintext,
        message_id=msg_id or message_id(sender=sender),
        sender_node_id=sender.node_id,
        recipients=[r.seal_recipient() for r in recipients or (XB,)],
        random_bytes=fixed_random(),
    )


def header(
    sealed_payload: bytes,
    *,
    sender: NodeKeys = XA,
    recipients: Sequence[NodeKeys] = (XB,),
    msg_id: str | None = None,
    created_at: dt.datetime = T0,
    lifetime: dt.timedelta = dt.timedelta(days=1),
    signing_key: ed25519.Ed25519PrivateKey | None = None,
    **overrides: object,
) -> Header:
    """A header for `sealed_payload`, naming the key that will sign it."""
    key = signing_key or sender.signing
    made = Header(
        message_id=msg_id or message_id(sender=sender),
        sender_node_id=sender.node_id,
        sender_key_id=ed25519_key_id(key.public_key()),
        recipient_node_ids=tuple(r.node_id for r in recipients),
        created_at=created_at,
        expires_at=created_at + lifetime,
        kind=env_pb.NOTICE_KIND_CASE_REFERRAL,
        case_reference="XA-2026-0042",
        in_reply_to="",
        handling=HANDLING,
        payload_digest=hashlib.sha256(sealed_payload).digest(),
        seal_suite=SUITE,
    )
    return dataclasses.replace(made, **overrides)  # type: ignore[arg-type]


def envelope(
    *,
    sender: NodeKeys = XA,
    recipients: Sequence[NodeKeys] = (XB,),
    msg_id: str | None = None,
    sealed_payload: bytes | None = None,
    signing_key: ed25519.Ed25519PrivateKey | None = None,
    **header_fields: object,
) -> Envelope:
    """A signed envelope from `sender` to `recipients`, sealed and signed as a node does."""
    msg_id = msg_id or message_id(sender=sender)
    if sealed_payload is None:
        sealed_payload = sealed_for(*recipients, sender=sender, msg_id=msg_id)
    made = header(
        sealed_payload,
        sender=sender,
        recipients=recipients,
        msg_id=msg_id,
        signing_key=signing_key,
        **header_fields,  # type: ignore[arg-type]
    )
    return sign_envelope(made, sealed_payload, signing_key or sender.signing)


def receive(
    env: Envelope,
    *,
    trust: TrustList | None = None,
    recipient: NodeKeys = XB,
    peer: str | None = XA.node_id,
    now: dt.datetime = T0,
    policy: ReceivePolicy = POLICY,
) -> EnvelopeCheck:
    """`check_envelope` as `recipient` runs it on a delivery from TLS peer `peer`."""
    return check_envelope(
        env,
        trust=trust or federation(),
        recipient_node_id=recipient.node_id,
        peer_node_id=peer,
        now=now,
        policy=policy,
    )


def receipt(
    env: Envelope,
    *,
    recipient: NodeKeys = XB,
    received_at: dt.datetime = T0,
    accepted: bool = True,
    rejection: int = 0,
    **overrides: object,
) -> Receipt:
    """What `recipient` states about `env`."""
    made = Receipt(
        message_id=Header.from_bytes(env.header).message_id,
        envelope_digest=env.digest(),
        recipient_node_id=recipient.node_id,
        recipient_key_id=recipient.signing_key_id,
        received_at=received_at,
        accepted=accepted,
        rejection=rejection,
    )
    return dataclasses.replace(made, **overrides)  # type: ignore[arg-type]


def signed_receipt(env: Envelope, *, recipient: NodeKeys = XB, **fields: object) -> SignedReceipt:
    return sign_receipt(receipt(env, recipient=recipient, **fields), recipient.signing)  # type: ignore[arg-type]


def bit_flips(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Every copy of `data` with exactly one bit flipped, with the bit's index."""
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 0x80 >> (bit % 8)
        yield bit, bytes(flipped)
