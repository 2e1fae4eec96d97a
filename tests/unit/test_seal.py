"""Sealing: content readable only by the addressed recipients, in its own message.

The splice, re-attribution and wrong-recipient attacks are in
test_envelope_attacks.py; these are the properties of `seal` and `open_sealed`.
"""

from __future__ import annotations

import pytest

from exchange._proto.exchange.v1 import envelope_pb2 as pb
from exchange.errors import VerificationError, VerificationFailure
from exchange.keys import x25519_key_id
from exchange.seal import SUITE, SealRecipient, open_sealed, seal

from ._builders import XA, XB, XC, NodeKeys, bit_flips, fixed_random, message_id, x_key

PLAINTEXT = b"a small serialized notice"
MSG = message_id()


def sealed(*recipients: NodeKeys, plaintext: bytes = PLAINTEXT, seed: bytes = b"unit") -> bytes:
    return seal(
        plaintext,
        message_id=MSG,
        sender_node_id=XA.node_id,
        recipients=[r.seal_recipient() for r in recipients],
        random_bytes=fixed_random(seed),
    )


def open_as(recipient: NodeKeys, payload: bytes, **changes: str) -> bytes:
    arguments = {
        "message_id": MSG,
        "sender_node_id": XA.node_id,
        "recipient_node_id": recipient.node_id,
    }
    arguments.update(changes)
    return open_sealed(payload, keys=recipient.opening_keys(), **arguments)


def assert_unreadable(recipient: NodeKeys, payload: bytes, **changes: str) -> None:
    with pytest.raises(VerificationError) as raised:
        open_as(recipient, payload, **changes)
    assert raised.value.failure is VerificationFailure.UNREADABLE_PAYLOAD
    # Errors disclose nothing useful to an attacker: not which step failed.
    assert raised.value.detail == ""


def test_every_recipient_opens_the_same_content() -> None:
    payload = sealed(XB, XC)
    assert open_as(XB, payload) == PLAINTEXT
    assert open_as(XC, payload) == PLAINTEXT


def test_payload_names_the_suite_each_recipient_and_its_key() -> None:
    payload = pb.SealedPayload.FromString(sealed(XB, XC))
    assert payload.suite == SUITE
    assert [(w.recipient_node_id, w.recipient_key_id) for w in payload.wrapped_keys] == [
        (XB.node_id, XB.sealing_key_id),
        (XC.node_id, XC.sealing_key_id),
    ]


def test_content_encryption_uses_only_the_injected_randomness() -> None:
    # HPKE's ephemeral keys differ each time, but the content key and nonce are injected.
    first, second = (pb.SealedPayload.FromString(sealed(XB)) for _ in range(2))
    assert first.nonce == second.nonce == fixed_random()(44)[32:]
    assert first.ciphertext == second.ciphertext
    other = pb.SealedPayload.FromString(sealed(XB, seed=b"other"))
    assert other.ciphertext != first.ciphertext


def test_content_is_not_in_the_clear() -> None:
    assert PLAINTEXT not in sealed(XB)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"message_id": message_id(7)}, id="other-message-id"),
        pytest.param({"sender_node_id": XC.node_id}, id="other-sender"),
        pytest.param({"recipient_node_id": XC.node_id}, id="other-recipient-name"),
    ],
)
def test_payload_opens_only_in_its_own_message_from_its_own_sender(
    changes: dict[str, str],
) -> None:
    assert_unreadable(XB, sealed(XB), **changes)


def test_a_recipient_with_several_sealing_keys_opens_with_the_one_named() -> None:
    # Key rotation: the sender sealed to the old key; the recipient holds old and new.
    new_key = x_key(77)
    payload = sealed(XB)
    keys = {XB.sealing_key_id: XB.sealing, x25519_key_id(new_key.public_key()): new_key}
    assert (
        open_sealed(
            payload,
            message_id=MSG,
            sender_node_id=XA.node_id,
            recipient_node_id=XB.node_id,
            keys=keys,
        )
        == PLAINTEXT
    )


def test_a_recipient_without_the_named_key_cannot_open() -> None:
    payload = sealed(XB)
    with pytest.raises(VerificationError):
        open_sealed(
            payload,
            message_id=MSG,
            sender_node_id=XA.node_id,
            recipient_node_id=XB.node_id,
            keys={},
        )


def test_wrapped_key_relabelled_for_another_recipient_does_not_open() -> None:
    # XB's wrapped key entry relabelled as XC's: XC's key cannot unwrap it, and the
    # info binding refuses it even to a holder of XB's key under XC's name.
    payload = pb.SealedPayload.FromString(sealed(XB))
    payload.wrapped_keys[0].recipient_node_id = XC.node_id
    relabelled = payload.SerializeToString()
    assert_unreadable(XC, relabelled)
    impostor = NodeKeys(XC.node_id, "XC", XB.signing, XB.sealing)
    assert_unreadable(impostor, relabelled)


MALFORMED = [
    pytest.param(b"\xff\xff", id="not-protobuf"),
    pytest.param(b"", id="empty"),
]


@pytest.mark.parametrize("payload", MALFORMED)
def test_malformed_payload_is_unreadable(payload: bytes) -> None:
    assert_unreadable(XB, payload)


def _edited(**fields: object) -> bytes:
    payload = pb.SealedPayload.FromString(sealed(XB))
    for name, value in fields.items():
        setattr(payload, name, value)
    return payload.SerializeToString()


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(lambda: _edited(suite=pb.SEAL_SUITE_UNSPECIFIED), id="suite-unspecified"),
        pytest.param(lambda: _edited(suite=2), id="suite-unknown"),
        pytest.param(lambda: _edited(nonce=bytes(11)), id="short-nonce"),
        pytest.param(lambda: _edited(nonce=bytes(12)), id="other-nonce"),
        pytest.param(
            lambda: _edited(ciphertext=pb.SealedPayload.FromString(sealed(XB)).ciphertext[:-1]),
            id="truncated-ciphertext",
        ),
    ],
)
def test_edited_payload_is_unreadable(payload: object) -> None:
    assert_unreadable(XB, payload())  # type: ignore[operator]


def test_content_key_wrapped_for_another_length_is_refused() -> None:
    # A sender whose content key is not 256 bits (a bug or a downgrade) is refused.
    short_key = seal(
        PLAINTEXT,
        message_id=MSG,
        sender_node_id=XA.node_id,
        recipients=[SealRecipient(XB.node_id, XB.sealing_key_id, XB.sealing.public_key())],
        random_bytes=lambda n: bytes(16) if n == 32 else bytes(n),
    )
    assert_unreadable(XB, short_key)


def test_every_bit_flip_is_unreadable_or_harmless() -> None:
    # The envelope's payload digest already refuses these; open_sealed must still
    # never raise anything else, and never return other content.
    payload = sealed(XB)
    wrong: dict[int, str] = {}
    for bit, flipped in bit_flips(payload):
        try:
            opened = open_as(XB, flipped)
        except VerificationError as exc:
            if exc.failure is not VerificationFailure.UNREADABLE_PAYLOAD:
                wrong[bit] = exc.failure.name
        except Exception as exc:  # any other exception is the bug we look for
            wrong[bit] = repr(exc)
        else:
            if opened != PLAINTEXT:
                wrong[bit] = "opened to other content"
    assert wrong == {}
