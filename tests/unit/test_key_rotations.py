"""Node key rotation and revocation, as tables of named cases (after python-tuf's
tests/test_updater_key_rotations.py).

XA rotates its signing key from OLD to NEW. Each case is XA's trust list entry
(which keys, with which windows), which key signed, when the envelope says it
was made, and when it arrives; the expectation is the receiver's verdict. A
second table asks the sending node which key it signs with under each entry,
and the re-signing of a queued envelope is checked against the receiver.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from exchange.composing import resign, resigned_copy
from exchange.envelope import Header
from exchange.errors import PreconditionError, VerificationFailure
from exchange.identity import NodeIdentity
from exchange.keys import ed25519_key_id, x25519_key_id
from exchange.seal import SealRecipient, open_sealed, seal
from exchange.trust import KeyInfo, TrustList

from ._builders import T0, XA, XB, ed_key, envelope, federation, key_info, receive, x_key

DAY, HOUR = dt.timedelta(days=1), dt.timedelta(hours=1)
F = VerificationFailure
OLD, NEW = XA.signing, ed_key(11)
PUBLISHED = T0 - 2 * DAY  # when version N+1 listed NEW
OVERLAP_END = T0 + 5 * DAY  # OLD's not_after
REVOKED = T0 - HOUR  # OLD's revocation, in the revoking cases


def old(**window: dt.datetime | None) -> KeyInfo:
    return key_info(OLD.public_key(), **window)  # type: ignore[arg-type]


def new(**window: dt.datetime | None) -> KeyInfo:
    return key_info(NEW.public_key(), not_before=PUBLISHED, **window)  # type: ignore[arg-type]


def trust_with(*keys: KeyInfo) -> TrustList:
    return federation(XA.trusted(signing_keys=keys), XB.trusted())


@dataclasses.dataclass(frozen=True)
class Arrival:
    """An envelope signed with `key`, made at `made`, checked by XB at `now`."""

    keys: tuple[KeyInfo, ...]
    key: ed25519.Ed25519PrivateKey
    made: dt.datetime = T0
    now: dt.datetime = T0


ROTATED = (old(not_after=OVERLAP_END), new())
REVOKING = (old(revoked_at=REVOKED), new())

ARRIVALS: dict[str, tuple[Arrival, VerificationFailure | None]] = {
    # Rotation with overlap: version N+1 lists NEW and gives OLD a not_after.
    "overlap: old key accepted before its not_after": (Arrival(ROTATED, OLD), None),
    "overlap: new key accepted": (Arrival(ROTATED, NEW), None),
    "old key refused for what it signs after its not_after": (
        Arrival(ROTATED, OLD, made=OVERLAP_END + HOUR, now=OVERLAP_END + HOUR),
        F.UNKNOWN_KEY,
    ),
    "old key's backlog made before its not_after still accepted after it": (
        Arrival(ROTATED, OLD, made=OVERLAP_END - HOUR, now=OVERLAP_END + HOUR),
        None,
    ),
    "new key refused before its not_before": (
        Arrival(ROTATED, NEW, made=PUBLISHED - HOUR, now=T0),
        F.UNKNOWN_KEY,
    ),
    "a key the list does not name is refused": (Arrival(ROTATED, ed_key(12)), F.UNKNOWN_KEY),
    # Revocation: from the version that revokes OLD, nothing signed with it is taken
    # after the revocation time, whatever time it claims (a thief picks `made`).
    "revoked key refused for what it signs after the revocation": (
        Arrival(REVOKING, OLD, made=T0, now=T0),
        F.UNKNOWN_KEY,
    ),
    "revoked key refused after the revocation even for a backdated envelope": (
        Arrival(REVOKING, OLD, made=REVOKED - DAY, now=T0),
        F.UNKNOWN_KEY,
    ),
    "revoked key accepted if checked before the revocation": (
        Arrival(REVOKING, OLD, made=REVOKED - 2 * HOUR, now=REVOKED - HOUR),
        None,
    ),
    "revoking the old key leaves the new one valid": (Arrival(REVOKING, NEW), None),
}


@pytest.mark.parametrize(
    ("arrival", "expected"),
    list(ARRIVALS.values()),
    ids=[name.replace(" ", "-") for name in ARRIVALS],
)
def test_arrival(arrival: Arrival, expected: VerificationFailure | None) -> None:
    made = envelope(signing_key=arrival.key, created_at=arrival.made)
    check = receive(made, trust=trust_with(*arrival.keys), now=arrival.now)
    assert check.failure is expected


def test_audit_records_signed_before_a_revocation_stay_verifiable() -> None:
    """Evidence is judged by its own time (no `now`): a later revocation does not undo it."""
    entry = trust_with(*REVOKING).nodes[XA.node_id]
    old_id = ed25519_key_id(OLD.public_key())
    assert entry.signing_key(old_id, REVOKED - DAY) is not None
    assert entry.signing_key(old_id, REVOKED + DAY) is None
    # On arrival, the same record made before the revocation is no longer taken.
    assert entry.signing_key(old_id, REVOKED - DAY, now=REVOKED + DAY) is None


# --- which key the sending node signs with --------------------------------------------------

HOLDING_BOTH = NodeIdentity(
    XA.node_id,
    signing_keys={ed25519_key_id(k.public_key()): k for k in (OLD, NEW)},
    sealing_keys=XA.opening_keys(),
)

SIGNERS: dict[str, tuple[tuple[KeyInfo, ...], ed25519.Ed25519PrivateKey | None]] = {
    "new key held but not yet published: the old one signs": ((old(),), OLD),
    "both published: the newest valid one signs": ((old(), new()), NEW),
    "new key published for later: the old one signs until then": (
        (old(), key_info(NEW.public_key(), not_before=T0 + DAY)),
        OLD,
    ),
    "old key revoked: the new one signs": (REVOKING, NEW),
    "new key revoked (compromised): back to the old one": (
        (old(), new(revoked_at=T0 - HOUR)),
        OLD,
    ),
    "old key retired past its not_after, new one alone valid": (
        (old(not_after=T0 - HOUR), new()),
        NEW,
    ),
    "every key revoked: the node cannot sign": ((old(revoked_at=REVOKED),), None),
}


@pytest.mark.parametrize(
    ("keys", "expected"),
    list(SIGNERS.values()),
    ids=[name.replace(" ", "-") for name in SIGNERS],
)
def test_signer(keys: tuple[KeyInfo, ...], expected: ed25519.Ed25519PrivateKey | None) -> None:
    trust = trust_with(*keys)
    if expected is None:
        with pytest.raises(PreconditionError, match="no signing key of node xa-node is valid"):
            HOLDING_BOTH.signer(trust, T0)
        return
    key_id, key = HOLDING_BOTH.signer(trust, T0)
    assert key_id == ed25519_key_id(expected.public_key())
    assert key is expected


# --- a queued envelope signed with a key revoked while it waited -----------------------------


def test_an_envelope_whose_key_is_still_valid_is_not_resigned() -> None:
    queued = envelope(signing_key=OLD, created_at=T0 - DAY)
    assert resign(queued, identity=HOLDING_BOTH, trust=trust_with(*ROTATED), now=T0) is None


def test_a_backlog_envelope_is_resigned_with_the_new_key_and_accepted() -> None:
    queued = envelope(signing_key=OLD, created_at=REVOKED - DAY, lifetime=3 * DAY)
    trust = trust_with(*REVOKING)
    assert receive(queued, trust=trust).failure is F.UNKNOWN_KEY

    renewed = resign(queued, identity=HOLDING_BOTH, trust=trust, now=T0)

    assert renewed is not None
    before, after = Header.from_bytes(queued.header), Header.from_bytes(renewed.header)
    assert after.sender_key_id == ed25519_key_id(NEW.public_key())
    assert after.created_at == T0
    # Everything recipients deduplicate and open by is unchanged.
    assert (
        dataclasses.replace(after, sender_key_id=before.sender_key_id, created_at=before.created_at)
        == before
    )
    assert renewed.sealed_payload == queued.sealed_payload
    assert receive(renewed, trust=trust).ok


def test_an_expired_envelope_is_not_resigned() -> None:
    queued = envelope(signing_key=OLD, created_at=REVOKED - DAY)
    assert resign(queued, identity=HOLDING_BOTH, trust=trust_with(*REVOKING), now=T0) is None


def test_a_payload_sealed_to_the_old_sealing_key_still_opens_after_rotation() -> None:
    old_sealing, new_sealing = XB.sealing, x_key(112)
    rotated = NodeIdentity(
        XB.node_id,
        signing_keys={XB.signing_key_id: XB.signing},
        sealing_keys={
            XB.sealing_key_id: old_sealing,
            x25519_key_id(new_sealing.public_key()): new_sealing,
        },
    )
    sealed = seal(
        b"sealed before the rotation",
        message_id="m-1",
        sender_node_id=XA.node_id,
        recipients=[SealRecipient(XB.node_id, XB.sealing_key_id, old_sealing.public_key())],
    )
    opened = open_sealed(
        sealed,
        message_id="m-1",
        sender_node_id=XA.node_id,
        recipient_node_id=XB.node_id,
        keys=rotated.sealing_keys,
    )
    assert opened == b"sealed before the rotation"


def test_a_resigned_envelope_is_recognised_as_the_same_message_and_nothing_else_is() -> None:
    queued = envelope(signing_key=OLD, created_at=REVOKED - DAY, lifetime=3 * DAY)
    renewed = resign(queued, identity=HOLDING_BOTH, trust=trust_with(*REVOKING), now=T0)
    assert renewed is not None
    original, offered = Header.from_bytes(queued.header), Header.from_bytes(renewed.header)
    assert resigned_copy(original, offered)
    for changed in (
        {"expires_at": original.expires_at + HOUR},
        {"payload_digest": bytes(32)},
        {"recipient_node_ids": (XB.node_id, "xc-node")},
        {"case_reference": "XA-2026-0043"},
    ):
        assert not resigned_copy(original, dataclasses.replace(offered, **changed))  # type: ignore[arg-type]
