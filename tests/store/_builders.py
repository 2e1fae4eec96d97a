"""Real envelopes, receipts and audit records for the store tests.

Everything is deterministic: Ed25519 keys from fixed seeds, message ids from a
manual clock and a seeded random source, payloads derived from the message id.
Nothing here touches the database; the tests decide what is stored and when.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import random
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from exchange._proto.exchange.v1 import envelope_pb2 as pb
from exchange.audit import AuditRecord
from exchange.clock import ManualClock, to_millis
from exchange.envelope import Envelope, Handling, Header, sign_envelope
from exchange.ids import new_message_id
from exchange.keys import ed25519_key_id
from exchange.receipt import Receipt, SignedReceipt, sign_receipt
from exchange.store.engine import Store
from exchange.store.tables import metadata

START = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
TTL = dt.timedelta(days=7)

# Node ids are DNS labels; the sender is "xa", the recipients "xb" and "xc".
NODE_XA = "node-xa"
NODE_XB = "node-xb"
NODE_XC = "node-xc"


def ed25519_key(seed: int) -> Ed25519PrivateKey:
    """The Ed25519 key whose 32-byte seed is `seed` repeated."""
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


NODE_KEYS = {NODE_XA: ed25519_key(1), NODE_XB: ed25519_key(2), NODE_XC: ed25519_key(3)}

HANDLING = Handling(
    onward_sharing=pb.ONWARD_SHARING_NONE,
    evidence_use=pb.EVIDENCE_USE_INTELLIGENCE_ONLY,
    retention_days=365,
)


def millis(when: dt.datetime) -> int:
    return to_millis(when)


@dataclasses.dataclass(frozen=True)
class Signed:
    """A header and the envelope signed over it."""

    header: Header
    envelope: Envelope

    @property
    def message_id(self) -> str:
        return self.header.message_id


class Notices:
    """Makes signed envelopes from one sender, at the time of a shared manual clock."""

    def __init__(self, clock: ManualClock | None = None, *, seed: int = 7) -> None:
        self.clock = clock or ManualClock(START)
        self._random: Callable[[int], bytes] = random.Random(seed).randbytes

    def envelope(
        self,
        *,
        sender: str = NODE_XA,
        recipients: tuple[str, ...] = (NODE_XB,),
        kind: int = pb.NOTICE_KIND_CASE_REFERRAL,
        case_reference: str = "XA-2030-0001",
        in_reply_to: str = "",
        ttl: dt.timedelta = TTL,
    ) -> Signed:
        """A notice from `sender` to `recipients`, created now, signed with the sender's key."""
        key = NODE_KEYS[sender]
        message_id = new_message_id(self.clock, sender, self._random)
        created_at = self.clock.now()
        # The store never opens content: any bytes stand for the sealed payload.
        sealed_payload = b"sealed:" + message_id.encode()
        header = Header(
            message_id=message_id,
            sender_node_id=sender,
            sender_key_id=ed25519_key_id(key.public_key()),
            recipient_node_ids=recipients,
            created_at=created_at,
            expires_at=created_at + ttl,
            kind=kind,
            case_reference=case_reference,
            in_reply_to=in_reply_to,
            handling=HANDLING,
            payload_digest=hashlib.sha256(sealed_payload).digest(),
            seal_suite=pb.SEAL_SUITE_HPKE_X25519_SHA256_AES256GCM,
        )
        return Signed(header, sign_envelope(header, sealed_payload, key))


def receipt_for(
    signed: Signed,
    recipient: str,
    *,
    received_at: dt.datetime,
    accepted: bool = True,
) -> SignedReceipt:
    """The receipt `recipient` signs for `signed` (accepted, or rejected as expired)."""
    key = NODE_KEYS[recipient]
    return sign_receipt(
        Receipt(
            message_id=signed.message_id,
            envelope_digest=signed.envelope.digest(),
            recipient_node_id=recipient,
            recipient_key_id=ed25519_key_id(key.public_key()),
            received_at=received_at,
            accepted=accepted,
            rejection=0 if accepted else pb.REJECTION_REASON_EXPIRED,
        ),
        key,
    )


def audit_record(n: int, *, actor: str = "node:node-xa", message_id: str = "") -> AuditRecord:
    """The `n`-th audit record of a test: distinct details, times one second apart."""
    return AuditRecord(
        occurred_at=START + dt.timedelta(seconds=n),
        actor=actor,
        action="notice.submitted",
        message_id=message_id,
        peer_node_id=NODE_XB,
        details={"n": str(n), "digest": hashlib.sha256(str(n).encode()).hexdigest()},
    )


def count_rows(store: Store, table_name: str) -> int:
    """Rows in `table_name`, read in a fresh transaction."""
    table = metadata.tables[table_name]
    return store.read(lambda c: c.execute(select(func.count()).select_from(table)).scalar_one())
