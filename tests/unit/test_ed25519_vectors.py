"""RFC 8032 section 7.1 test vectors, checked byte for byte through our Ed25519 path.

The vectors live apart from the tests, in tests/vectors/rfc8032_ed25519.json.
Keys are built as the exchange builds them (`Ed25519PrivateKey.from_private_bytes`),
and public keys are used as the exchange uses them (a trust list `KeyInfo`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from exchange._encoding import encode
from exchange.envelope import check_envelope
from exchange.errors import TrustListError
from exchange.keys import ed25519_key_id, raw_public
from exchange.trust import (
    ED25519,
    KeyInfo,
    SignedTrustList,
    sign_trust_list,
    steward_from_key,
    verify_update,
)

from ._builders import (
    KEYS_SINCE,
    POLICY,
    T0,
    XA,
    XB,
    envelope,
    federation,
    signed_by,
    trust_list,
)

VECTORS_FILE = Path(__file__).parents[1] / "vectors" / "rfc8032_ed25519.json"
DOCUMENT = json.loads(VECTORS_FILE.read_text())


@dataclasses.dataclass(frozen=True)
class Vector:
    name: str
    secret_key: bytes
    public_key: bytes
    message: bytes
    signature: bytes

    @staticmethod
    def load(entry: dict[str, Any]) -> Vector:
        vector = Vector(
            name=entry["name"],
            secret_key=bytes.fromhex(entry["secret_key"]),
            public_key=bytes.fromhex(entry["public_key"]),
            message=bytes.fromhex(entry["message"]),
            signature=bytes.fromhex(entry["signature"]),
        )
        assert len(vector.message) == entry["message_length"]
        return vector

    def private(self) -> ed25519.Ed25519PrivateKey:
        return ed25519.Ed25519PrivateKey.from_private_bytes(self.secret_key)

    def key_info(self) -> KeyInfo:
        public = ed25519.Ed25519PublicKey.from_public_bytes(self.public_key)
        return KeyInfo(ed25519_key_id(public), ED25519, self.public_key, KEYS_SINCE)


VECTORS = [Vector.load(entry) for entry in DOCUMENT["vectors"]]
by_name = pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])


def test_the_file_records_its_source_and_holds_the_four_vectors() -> None:
    assert "RFC 8032" in DOCUMENT["source"]
    assert "7.1" in DOCUMENT["source"]
    assert [v.name for v in VECTORS] == ["TEST 1", "TEST 2", "TEST 3", "TEST 1024"]
    assert [len(v.message) for v in VECTORS] == [0, 1, 2, 1023]
    for vector in VECTORS:
        assert (len(vector.secret_key), len(vector.public_key), len(vector.signature)) == (
            32,
            32,
            64,
        )


@by_name
def test_secret_key_gives_the_published_public_key(vector: Vector) -> None:
    assert raw_public(vector.private().public_key()) == vector.public_key


@by_name
def test_signing_reproduces_the_published_signature(vector: Vector) -> None:
    assert vector.private().sign(vector.message) == vector.signature


@by_name
def test_trust_list_key_built_from_the_public_key_verifies_the_signature(vector: Vector) -> None:
    vector.key_info().ed25519().verify(vector.signature, vector.message)


@by_name
def test_trust_list_key_refuses_the_signature_over_another_message(vector: Vector) -> None:
    with pytest.raises(InvalidSignature):
        vector.key_info().ed25519().verify(vector.signature, vector.message + b"\x00")


@by_name
def test_envelope_signed_with_the_vector_key_is_accepted_and_deterministic(vector: Vector) -> None:
    sender = dataclasses.replace(XA, signing=vector.private())
    trust = federation(sender.trusted(signing_keys=[vector.key_info()]), XB.trusted())
    signed = envelope(sender=sender)
    check = check_envelope(
        signed,
        trust=trust,
        recipient_node_id=XB.node_id,
        peer_node_id=XA.node_id,
        now=T0,
        policy=POLICY,
    )
    assert check.ok, check.failure
    # Ed25519 is deterministic: the signature is exactly the vector key's over the tagged header.
    assert signed.signature == vector.private().sign(
        encode("exchange.v1.EnvelopeHeader", signed.header)
    )


@by_name
def test_steward_with_the_vector_key_can_sign_a_trust_anchor(vector: Vector) -> None:
    listed = dataclasses.replace(
        trust_list(threshold=1),
        stewards=(steward_from_key("vector", vector.private().public_key()),),
    )
    body = listed.to_bytes()
    anchor = SignedTrustList(body, (sign_trust_list(body, vector.private()),))
    assert verify_update(anchor, None, T0) == listed
    with pytest.raises(TrustListError, match="threshold"):
        verify_update(signed_by(listed, 1), None, T0)  # S1 is not this list's steward
