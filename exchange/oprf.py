"""OPRF(ristretto255, SHA-512) in OPRF mode, as RFC 9497 specifies it.

An oblivious PRF lets a client learn F(k, x) from a server holding k without
the server learning x. Here it keeps identifiers private in hit/no-hit
queries: the querying node blinds an identifier, the holding node evaluates it
with its key, and only the querier can unblind the result.

The group operations are libsodium's ristretto255 (through `rbcl`); this
module adds only what RFC 9497 defines on top of them, step for step:

    contextString  "OPRFV1-" || I2OSP(0x00, 1) || "-" || "ristretto255-SHA512"
    HashToGroup    ristretto255 one-way map of expand_message_xmd(x, 64 bytes)
                   (RFC 9380 5.3.1 with SHA-512; DST "HashToGroup-" || contextString)
    HashToScalar   64 bytes of expand_message_xmd reduced mod the group order
    DeriveKeyPair  RFC 9497 3.2.1
    Blind, BlindEvaluate, Finalize, Evaluate   RFC 9497 3.3.1

Scalars are 32 bytes little-endian, elements 32 bytes (ristretto255
encoding). Every element received is checked to be a valid encoding and not
the identity (RFC 9497 4.1, DeserializeElement); every failure raises
`OprfError`, saying what was wrong and nothing more.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import rbcl

__all__ = [
    "CONTEXT_STRING",
    "ELEMENT_SIZE",
    "OUTPUT_SIZE",
    "SCALAR_SIZE",
    "OprfError",
    "ServerKey",
    "blind",
    "expand_message_xmd",
    "finalize",
    "hash_to_group",
    "hash_to_scalar",
    "unblind",
]

ELEMENT_SIZE = 32
SCALAR_SIZE = 32
OUTPUT_SIZE = 64  # Nh of SHA-512
_MODE_OPRF = 0x00
CONTEXT_STRING = b"OPRFV1-" + bytes([_MODE_OPRF]) + b"-ristretto255-SHA512"
_HASH_TO_GROUP_DST = b"HashToGroup-" + CONTEXT_STRING
_HASH_TO_SCALAR_DST = b"HashToScalar-" + CONTEXT_STRING
_DERIVE_KEY_PAIR_DST = b"DeriveKeyPair" + CONTEXT_STRING
_MAX_INPUT = 2**16 - 1  # I2OSP(len(input), 2)
_IDENTITY = bytes(ELEMENT_SIZE)


class OprfError(ValueError):
    """An OPRF input, key or element is not acceptable."""


def _i2osp(value: int, length: int) -> bytes:
    return value.to_bytes(length, "big")


def expand_message_xmd(msg: bytes, dst: bytes, length: int) -> bytes:
    """RFC 9380 5.3.1 with SHA-512 (b_in_bytes 64, s_in_bytes 128)."""
    if len(dst) > 255:
        raise OprfError("domain separation tag longer than 255 bytes")
    ell = -(-length // 64)
    if ell > 255 or length > 65535:
        raise OprfError(f"cannot expand to {length} bytes")
    dst_prime = dst + _i2osp(len(dst), 1)
    b0 = hashlib.sha512(bytes(128) + msg + _i2osp(length, 2) + b"\x00" + dst_prime).digest()
    blocks = [hashlib.sha512(b0 + b"\x01" + dst_prime).digest()]
    for i in range(2, ell + 1):
        mixed = bytes(x ^ y for x, y in zip(b0, blocks[-1], strict=True))
        blocks.append(hashlib.sha512(mixed + _i2osp(i, 1) + dst_prime).digest())
    return b"".join(blocks)[:length]


def hash_to_group(data: bytes) -> bytes:
    """HashToGroup: the ristretto255 element for `data` (never the identity in practice)."""
    return bytes(
        rbcl.crypto_core_ristretto255_from_hash(expand_message_xmd(data, _HASH_TO_GROUP_DST, 64))
    )


def hash_to_scalar(data: bytes, dst: bytes = _HASH_TO_SCALAR_DST) -> bytes:
    """HashToScalar: 64 uniform bytes reduced modulo the group order."""
    return bytes(rbcl.crypto_core_ristretto255_scalar_reduce(expand_message_xmd(data, dst, 64)))


def _check_input(data: bytes) -> None:
    if len(data) > _MAX_INPUT:
        raise OprfError(f"input is {len(data)} bytes; at most {_MAX_INPUT}")


def _check_element(element: bytes, what: str) -> None:
    # DeserializeElement (RFC 9497 4.1): a canonical encoding, and not the identity
    # (whose encoding is all zeros; libsodium's validity check lets it through).
    if (
        len(element) != ELEMENT_SIZE
        or element == _IDENTITY
        or not rbcl.crypto_core_ristretto255_is_valid_point(element)
    ):
        raise OprfError(f"{what} is not a valid ristretto255 element")


def _check_scalar(scalar: bytes, what: str) -> None:
    if len(scalar) != SCALAR_SIZE or not any(scalar):
        raise OprfError(f"{what} must be a non-zero 32-byte scalar")
    if bytes(rbcl.crypto_core_ristretto255_scalar_reduce(scalar + bytes(32))) != scalar:
        raise OprfError(f"{what} is not reduced modulo the group order")


def _input_element(data: bytes) -> bytes:
    # The one-way map always yields a valid encoding, so only RFC 9497's identity check
    # applies here (Blind: "if inputElement == G.Identity(): raise InvalidInputError").
    element = hash_to_group(data)
    if element == _IDENTITY:
        raise OprfError("the input maps to the identity element")
    return element


def _mult(scalar: bytes, element: bytes) -> bytes:
    try:
        return bytes(rbcl.crypto_scalarmult_ristretto255(scalar, element))
    except Exception:
        # libsodium refuses a product that is the identity.
        raise OprfError("scalar multiplication gave the identity element") from None


def _finalize_hash(data: bytes, element: bytes) -> bytes:
    return hashlib.sha512(
        _i2osp(len(data), 2) + data + _i2osp(len(element), 2) + element + b"Finalize"
    ).digest()


def blind(data: bytes, blind_scalar: bytes | None = None) -> tuple[bytes, bytes]:
    """Blind(input): the client's blind and the blinded element to send.

    Args:
        blind_scalar: for test vectors only; a fresh random scalar otherwise.

    Returns:
        (blind, blindedElement).
    """
    _check_input(data)
    scalar = (
        bytes(rbcl.crypto_core_ristretto255_scalar_random())
        if blind_scalar is None
        else blind_scalar
    )
    _check_scalar(scalar, "blind")
    return scalar, _mult(scalar, _input_element(data))


def unblind(blind_scalar: bytes, evaluated: bytes) -> bytes:
    """The first step of Finalize: N = blind^-1 * evaluatedElement, serialized.

    N is skS * HashToGroup(input), the server's key applied to the input.
    """
    _check_scalar(blind_scalar, "blind")
    _check_element(evaluated, "evaluated element")
    inverse = bytes(rbcl.crypto_core_ristretto255_scalar_invert(blind_scalar))
    return _mult(inverse, evaluated)


def finalize(data: bytes, blind_scalar: bytes, evaluated: bytes) -> bytes:
    """Finalize(input, blind, evaluatedElement): the 64-byte PRF output."""
    _check_input(data)
    return _finalize_hash(data, unblind(blind_scalar, evaluated))


class ServerKey:
    """The holding node's OPRF private key (skS)."""

    def __init__(self, scalar: bytes) -> None:
        _check_scalar(scalar, "OPRF key")
        self._scalar = scalar

    @staticmethod
    def generate() -> ServerKey:
        return ServerKey.derive(secrets.token_bytes(32), b"exchange hit/no-hit key")

    @staticmethod
    def derive(seed: bytes, info: bytes) -> ServerKey:
        """DeriveKeyPair(seed, info) of RFC 9497 3.2.1 (the private half)."""
        if len(seed) != 32:
            raise OprfError("seed must be 32 bytes")
        derive_input = seed + _i2osp(len(info), 2) + info
        for counter in range(256):
            scalar = hash_to_scalar(derive_input + _i2osp(counter, 1), _DERIVE_KEY_PAIR_DST)
            if any(scalar):
                return ServerKey(scalar)
        raise OprfError("DeriveKeyPair found no non-zero scalar")

    def to_bytes(self) -> bytes:
        return self._scalar

    def public_key(self) -> bytes:
        """pkS = ScalarMultGen(skS) (published for verifiable mode; unused in OPRF mode)."""
        return bytes(rbcl.crypto_scalarmult_ristretto255_base(self._scalar))

    def blind_evaluate(self, blinded: bytes) -> bytes:
        """BlindEvaluate(skS, blindedElement): what the server returns to the client."""
        _check_element(blinded, "blinded element")
        return _mult(self._scalar, blinded)

    def evaluate(self, data: bytes) -> bytes:
        """Evaluate(skS, input): the PRF output computed directly (RFC 9497 3.3.1)."""
        _check_input(data)
        return _finalize_hash(data, self.evaluate_element(data))

    def evaluate_element(self, data: bytes) -> bytes:
        """skS * HashToGroup(input): what a client's `unblind` yields for the same input."""
        _check_input(data)
        return _mult(self._scalar, _input_element(data))

    def rekeyed(self, element: bytes, new: ServerKey) -> bytes:
        """`element` (this key applied to some input) as `new` would have made it.

        (new / old) * (old * P) = new * P: a key is rotated without the inputs.
        """
        _check_element(element, "element")
        inverse = bytes(rbcl.crypto_core_ristretto255_scalar_invert(self._scalar))
        factor = bytes(rbcl.crypto_core_ristretto255_scalar_mul(new._scalar, inverse))
        return _mult(factor, element)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServerKey) and hmac.compare_digest(self._scalar, other._scalar)

    def __hash__(self) -> int:
        return hash(self.public_key())

    def __repr__(self) -> str:
        return "ServerKey(<secret>)"
