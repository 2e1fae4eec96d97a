"""Sealing: content readable only by the addressed recipient nodes.

The notice is encrypted once under a random 256-bit content key with
AES-256-GCM; the content key is then wrapped for each recipient with HPKE base
mode (RFC 9180 section 6.1, single-shot): DHKEM(X25519, HKDF-SHA256),
HKDF-SHA256, AES-256-GCM, as provided by `cryptography`.

Bindings (DESIGN.md, "Sealing"):
- HPKE `info` = encode("exchange.v1.WrappedKey", message id, sender, recipient,
  recipient key id): a wrapped key opens only for its recipient, in its message,
  from its sender, so a payload can neither be re-attributed nor moved.
- Content associated data = encode("exchange.v1.SealedContent", message id,
  sender): the same for the content itself.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from exchange import _wire
from exchange._encoding import encode
from exchange._proto.exchange.v1 import envelope_pb2 as pb
from exchange.errors import VerificationError, VerificationFailure

__all__ = ["SUITE", "SealRecipient", "open_sealed", "seal"]

SUITE = pb.SEAL_SUITE_HPKE_X25519_SHA256_AES256GCM
_HPKE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_KEY_BYTES = 32
_NONCE_BYTES = 12


@dataclasses.dataclass(frozen=True)
class SealRecipient:
    """A recipient node and the sealing key (from the trust list) to wrap for."""

    node_id: str
    key_id: str
    public_key: x25519.X25519PublicKey


def _wrap_info(message_id: str, sender: str, recipient: str, key_id: str) -> bytes:
    return encode(
        "exchange.v1.WrappedKey",
        message_id.encode(),
        sender.encode(),
        recipient.encode(),
        key_id.encode(),
    )


def _content_aad(message_id: str, sender: str) -> bytes:
    return encode("exchange.v1.SealedContent", message_id.encode(), sender.encode())


def seal(
    plaintext: bytes,
    *,
    message_id: str,
    sender_node_id: str,
    recipients: Sequence[SealRecipient],
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """Seal `plaintext` for `recipients`; returns a serialized SealedPayload."""
    content_key = random_bytes(_KEY_BYTES)
    nonce = random_bytes(_NONCE_BYTES)
    ciphertext = AESGCM(content_key).encrypt(
        nonce, plaintext, _content_aad(message_id, sender_node_id)
    )
    wrapped = [
        pb.WrappedKey(
            recipient_node_id=r.node_id,
            recipient_key_id=r.key_id,
            sealed_key=_HPKE.encrypt(
                content_key,
                r.public_key,
                info=_wrap_info(message_id, sender_node_id, r.node_id, r.key_id),
            ),
        )
        for r in recipients
    ]
    return pb.SealedPayload(
        suite=SUITE, nonce=nonce, ciphertext=ciphertext, wrapped_keys=wrapped
    ).SerializeToString()


def open_sealed(
    sealed_payload: bytes,
    *,
    message_id: str,
    sender_node_id: str,
    recipient_node_id: str,
    keys: Mapping[str, x25519.X25519PrivateKey],
) -> bytes:
    """Open a payload sealed to `recipient_node_id` with one of its `keys`.

    Raises:
        VerificationError: UNREADABLE_PAYLOAD when the payload is malformed,
            has no key for this recipient, or fails to decrypt. The reason is
            deliberately not more specific.
    """
    unreadable = VerificationError(VerificationFailure.UNREADABLE_PAYLOAD)
    try:
        payload = _wire.parse(pb.SealedPayload, sealed_payload)
    except _wire.MalformedError:
        raise unreadable from None
    if payload.suite != SUITE or len(payload.nonce) != _NONCE_BYTES:
        raise unreadable
    for wrapped in payload.wrapped_keys:
        key = keys.get(wrapped.recipient_key_id)
        if wrapped.recipient_node_id != recipient_node_id or key is None:
            continue
        try:
            content_key = _HPKE.decrypt(
                wrapped.sealed_key,
                key,
                info=_wrap_info(
                    message_id, sender_node_id, recipient_node_id, wrapped.recipient_key_id
                ),
            )
            if len(content_key) != _KEY_BYTES:
                raise unreadable
            return AESGCM(content_key).decrypt(
                payload.nonce, payload.ciphertext, _content_aad(message_id, sender_node_id)
            )
        except (InvalidTag, ValueError):
            raise unreadable from None
    raise unreadable
