"""Attack regressions for envelopes and sealing, each named after the attack it stops.

Unless a test says otherwise: XA sends to XB, XB receives from TLS peer XA at
T0, and the trust list holds XA, XB and XC, active, with current keys.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from exchange._encoding import encode
from exchange.envelope import Envelope
from exchange.errors import VerificationError, VerificationFailure
from exchange.seal import open_sealed

from ._builders import (
    T0,
    XA,
    XB,
    XC,
    NodeKeys,
    ed_key,
    envelope,
    federation,
    header,
    key_info,
    message_id,
    notice,
    receive,
    sealed_for,
)

F = VerificationFailure
HOUR, DAY, SECOND = dt.timedelta(hours=1), dt.timedelta(days=1), dt.timedelta(seconds=1)


def open_as(
    recipient: NodeKeys,
    sealed_payload: bytes,
    *,
    msg_id: str,
    sender: NodeKeys = XA,
    claimed_recipient: NodeKeys | None = None,
) -> bytes:
    return open_sealed(
        sealed_payload,
        message_id=msg_id,
        sender_node_id=sender.node_id,
        recipient_node_id=(claimed_recipient or recipient).node_id,
        keys=recipient.opening_keys(),
    )


def assert_unreadable(
    recipient: NodeKeys,
    sealed_payload: bytes,
    *,
    msg_id: str,
    sender: NodeKeys = XA,
    claimed_recipient: NodeKeys | None = None,
) -> None:
    with pytest.raises(VerificationError) as raised:
        open_as(
            recipient,
            sealed_payload,
            msg_id=msg_id,
            sender=sender,
            claimed_recipient=claimed_recipient,
        )
    assert raised.value.failure is F.UNREADABLE_PAYLOAD


# --- splice and re-attribution: stopped by the seal's bindings -------------------------------


def test_splice_payload_of_message_a_under_header_of_message_b() -> None:
    id_a, id_b = message_id(1), message_id(2)
    payload_a = sealed_for(XB, msg_id=id_a)
    # The same sender signs message B's header over message A's payload, so every
    # envelope check passes: only the seal's binding of the message id can stop it.
    spliced = envelope(msg_id=id_b, sealed_payload=payload_a)
    assert receive(spliced).ok
    assert_unreadable(XB, payload_a, msg_id=id_b)
    assert open_as(XB, payload_a, msg_id=id_a) == notice().SerializeToString()


def test_splice_without_resigning_is_a_payload_digest_mismatch() -> None:
    a, b = envelope(msg_id=message_id(1)), envelope(msg_id=message_id(2))
    check = receive(Envelope(b.header, a.sealed_payload, b.signature))
    assert check.failure is F.PAYLOAD_DIGEST_MISMATCH


def test_reattribution_reusing_the_original_message_id_is_refused() -> None:
    msg_id = message_id()  # XA's
    payload = sealed_for(XB, sender=XA, msg_id=msg_id)
    # XC, a member in good standing, signs its own header over XA's id and payload.
    reattributed = envelope(sender=XC, msg_id=msg_id, sealed_payload=payload)
    check = receive(reattributed, peer=XC.node_id)
    assert check.failure is F.MALFORMED
    assert "not bound to the sender" in check.detail


def test_reattribution_payload_sealed_by_x_presented_as_from_y() -> None:
    msg_id = message_id()
    payload = sealed_for(XB, sender=XA, msg_id=msg_id)
    # With an id of its own, XC's header is authentic, but XA's payload never opens as XC's.
    own_id = message_id(sender=XC)
    reattributed = envelope(sender=XC, msg_id=own_id, sealed_payload=payload)
    assert receive(reattributed, peer=XC.node_id).ok
    assert_unreadable(XB, payload, msg_id=own_id, sender=XC)
    assert_unreadable(XB, payload, msg_id=msg_id, sender=XC)
    assert open_as(XB, payload, msg_id=msg_id, sender=XA) == notice().SerializeToString()


def test_reattribution_by_renaming_the_sender_of_a_signed_header() -> None:
    # XA names XC as the sender but can only sign with its own key: not one of XC's.
    renamed = envelope(sender=XC, signing_key=XA.signing)
    assert receive(renamed, peer=XC.node_id).failure is F.UNKNOWN_KEY


def test_reattribution_by_naming_the_other_senders_key_id() -> None:
    payload = sealed_for(sender=XC)
    made = header(payload, sender=XC)  # names XC's key id
    header_bytes = made.to_bytes()
    forged = Envelope(
        header_bytes,
        payload,
        XA.signing.sign(encode("exchange.v1.EnvelopeHeader", header_bytes)),
    )
    assert receive(forged, peer=XC.node_id).failure is F.BAD_SIGNATURE


# --- wrong recipient -----------------------------------------------------------------------


def test_wrong_recipient_is_not_a_recipient() -> None:
    check = receive(envelope(recipients=(XB,)), recipient=XC)
    assert check.failure is F.NOT_A_RECIPIENT
    assert check.header is not None  # authentic, just not for XC


def test_wrong_recipient_cannot_open_the_payload() -> None:
    msg_id = message_id()
    payload = sealed_for(XB, msg_id=msg_id)
    assert_unreadable(XC, payload, msg_id=msg_id)
    # Claiming to be the addressed node does not help without its key.
    assert_unreadable(XC, payload, msg_id=msg_id, claimed_recipient=XB)
    # Nor does offering its own key under the addressed node's key id.
    with pytest.raises(VerificationError) as raised:
        open_sealed(
            payload,
            message_id=msg_id,
            sender_node_id=XA.node_id,
            recipient_node_id=XB.node_id,
            keys={XB.sealing_key_id: XC.sealing},
        )
    assert raised.value.failure is F.UNREADABLE_PAYLOAD


# --- time ----------------------------------------------------------------------------------


def test_expired_envelope_is_refused() -> None:
    check = receive(envelope(created_at=T0 - 2 * HOUR, lifetime=HOUR))
    assert check.failure is F.EXPIRED


def test_envelope_created_in_the_future_beyond_the_skew_is_refused() -> None:
    check = receive(envelope(created_at=T0 + 6 * dt.timedelta(minutes=1)))
    assert check.failure is F.CLOCK_SKEW


def test_envelope_older_than_the_max_age_is_refused() -> None:
    # A replay long after the fact: the receiver no longer remembers the message id.
    check = receive(envelope(created_at=T0 - 40 * DAY, lifetime=DAY), now=T0)
    assert check.failure is F.TOO_OLD


def test_envelope_outliving_the_max_age_is_refused() -> None:
    # A lifetime beyond the replay window would let a replay arrive after the id is forgotten.
    check = receive(envelope(lifetime=60 * DAY))
    assert check.failure is F.TOO_OLD


# --- keys ----------------------------------------------------------------------------------


def test_unknown_key_is_refused() -> None:
    check = receive(envelope(signing_key=ed_key(99)))
    assert check.failure is F.UNKNOWN_KEY
    assert check.header is None


REVOKED_AT = T0 - HOUR


@pytest.mark.parametrize(
    ("created_at", "now", "failure"),
    [
        pytest.param(
            REVOKED_AT - 2 * SECOND,
            REVOKED_AT - SECOND,
            None,
            id="made-and-arrived-before-revocation-accepted",
        ),
        # Whoever holds a stolen key chooses created_at: a backdated envelope
        # arriving after the revocation must be refused too.
        pytest.param(
            REVOKED_AT - SECOND, T0, F.UNKNOWN_KEY, id="backdated-arriving-after-revocation-refused"
        ),
        pytest.param(REVOKED_AT, T0, F.UNKNOWN_KEY, id="made-at-revocation-refused"),
        pytest.param(T0, T0, F.UNKNOWN_KEY, id="made-after-revocation-refused"),
    ],
)
def test_revoked_key(
    created_at: dt.datetime, now: dt.datetime, failure: VerificationFailure | None
) -> None:
    revoked = XA.trusted(signing_keys=[key_info(XA.signing.public_key(), revoked_at=REVOKED_AT)])
    trust = federation(revoked, XB.trusted())
    check = receive(envelope(created_at=created_at), trust=trust, now=now)
    assert check.failure is failure


def test_key_not_yet_valid_is_refused() -> None:
    early = XA.trusted(signing_keys=[key_info(XA.signing.public_key(), not_before=T0 + DAY)])
    check = receive(envelope(), trust=federation(early, XB.trusted()))
    assert check.failure is F.UNKNOWN_KEY


def test_key_past_its_not_after_is_refused() -> None:
    retired = XA.trusted(signing_keys=[key_info(XA.signing.public_key(), not_after=T0 - SECOND)])
    check = receive(envelope(), trust=federation(retired, XB.trusted()))
    assert check.failure is F.UNKNOWN_KEY


def test_rotation_old_and_new_keys_both_sign_during_the_overlap() -> None:
    new_key = ed_key(11)
    rotating = XA.trusted(
        signing_keys=[
            key_info(XA.signing.public_key(), not_after=T0 + DAY),
            key_info(new_key.public_key(), not_before=T0 - DAY),
        ]
    )
    trust = federation(rotating, XB.trusted())
    assert receive(envelope(), trust=trust).ok
    assert receive(envelope(signing_key=new_key), trust=trust).ok


# --- the sender ----------------------------------------------------------------------------


def test_unknown_sender_is_refused() -> None:
    check = receive(envelope(), trust=federation(XB.trusted(), XC.trusted()))
    assert check.failure is F.UNKNOWN_SENDER


def test_suspended_sender_is_refused() -> None:
    check = receive(envelope(), trust=federation(XA.trusted(active=False), XB.trusted()))
    assert check.failure is F.UNKNOWN_SENDER


def test_sender_other_than_the_tls_peer_is_refused() -> None:
    # XC relays (or forges the transport of) an envelope signed by XA.
    check = receive(envelope(), peer=XC.node_id)
    assert check.failure is F.SENDER_MISMATCH
    assert check.header is None


# --- versions and suites: no downgrade, no fallback ----------------------------------------


@pytest.mark.parametrize("version", [0, 2], ids=["version-0", "version-2"])
def test_unsupported_protocol_version_is_refused(version: int) -> None:
    check = receive(envelope(protocol_version=version))
    assert check.failure is F.UNSUPPORTED_PROTOCOL


@pytest.mark.parametrize("suite", [0, 2], ids=["suite-unspecified", "suite-unknown"])
def test_unsupported_seal_suite_is_refused(suite: int) -> None:
    check = receive(envelope(seal_suite=suite))
    assert check.failure is F.UNSUPPORTED_SUITE


# --- the payload ---------------------------------------------------------------------------


def test_payload_swapped_under_a_signed_header_is_a_digest_mismatch() -> None:
    signed = envelope()
    other_payload = sealed_for(XB, plaintext=b"something else")
    check = receive(dataclasses.replace(signed, sealed_payload=other_payload))
    assert check.failure is F.PAYLOAD_DIGEST_MISMATCH


def test_truncated_payload_is_a_digest_mismatch() -> None:
    signed = envelope()
    check = receive(dataclasses.replace(signed, sealed_payload=signed.sealed_payload[:-1]))
    assert check.failure is F.PAYLOAD_DIGEST_MISMATCH


# --- the signature -------------------------------------------------------------------------

# The order of the Ed25519 base point (RFC 8032 section 5.1).
L = 2**252 + 27742317777372353535851937790883648493


def test_malleated_signature_is_refused() -> None:
    # (R, S + L) verifies under a lax verifier and would give the same envelope a second
    # digest; RFC 8032 section 5.1.7 requires S < L.
    signed = envelope()
    r, s = signed.signature[:32], int.from_bytes(signed.signature[32:], "little")
    malleated = r + (s + L).to_bytes(32, "little")
    check = receive(dataclasses.replace(signed, signature=malleated))
    assert check.failure is F.BAD_SIGNATURE


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(lambda s: b"", id="empty"),
        pytest.param(lambda s: s[:63], id="truncated"),
        pytest.param(lambda s: s + b"\x00", id="extended"),
        pytest.param(lambda s: bytes(64), id="all-zero"),
    ],
)
def test_signature_of_the_wrong_shape_is_a_bad_signature(signature: object) -> None:
    signed = envelope()
    tampered = dataclasses.replace(signed, signature=signature(signed.signature))  # type: ignore[operator]
    assert receive(tampered).failure is F.BAD_SIGNATURE
