"""Hit/no-hit matching (Prüm step 1 for OPSC cases): tokens, buckets and key rotation.

The protocol between a querying node Q and a holding node H, for one
identifier x (already normalized, `exchange.identifiers`):

1. Q blinds x (RFC 9497 Blind) and sends the blinded element; H applies its
   OPRF key (BlindEvaluate). H learns nothing about x.
2. Q unblinds: N = k_H * HashToGroup(x), and derives the token T = `token(N)`.
3. Q asks H for the bucket of T's first `prefix_bits` bits (k-anonymity, as
   breached-password range queries do): H learns only the prefix, shared by
   many identifiers. The bucket holds, per identifier, a tag and a sealed hit
   (`seal_hit`), never the tokens themselves: a tag shows Q membership of its
   own token only, and a hit (case reference and contact point) opens only with
   the token it was sealed under, so Q learns nothing about the other
   identifiers in the bucket, not even their case references.

H indexes what its authorities register as `element` = k_H * HashToGroup(x)
and its token; the clear x is never stored. Why the element and not RFC 9497's
Finalize output: Finalize hashes x itself, so an index of Finalize outputs
could only be rebuilt under a new key from the clear values. The element can
be re-keyed alone (`ServerKey.rekeyed`), so a key rotation re-indexes without
the identifiers and without downtime (both keys answer until it is done).
The token hashes the element under its own domain tag, so tokens of one key
and of another never collide by construction.
"""

from __future__ import annotations

import dataclasses
import hashlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from exchange import oprf
from exchange._encoding import decode, encode
from exchange.identifiers import Identifier

__all__ = [
    "DEFAULT_PREFIX_BITS",
    "TOKEN_SIZE",
    "BucketEntry",
    "Hit",
    "blind_query",
    "bucket",
    "find_hit",
    "query_token",
    "seal_hit",
    "token",
]

TOKEN_SIZE = 32
# 2^16 buckets: with a million identifiers held, about 15 per bucket.
DEFAULT_PREFIX_BITS = 16
_TAG = "exchange.v1.MatchToken"


def token(element: bytes) -> bytes:
    """The match token of an OPRF element N = k * HashToGroup(x)."""
    return hashlib.sha256(encode(_TAG, element)).digest()


def bucket(value: bytes, prefix_bits: int) -> int:
    """The bucket of a token: its first `prefix_bits` bits, as an integer."""
    if not 1 <= prefix_bits <= 32:
        raise ValueError(f"prefix_bits must be 1 to 32, not {prefix_bits}")
    return int.from_bytes(value[:4], "big") >> (32 - prefix_bits)


def blind_query(identifier: Identifier) -> tuple[bytes, bytes]:
    """The querier's first step: (blind, blinded element to send)."""
    return oprf.blind(identifier.oprf_input())


def query_token(blind: bytes, evaluated: bytes) -> bytes:
    """The querier's token once the holder has evaluated the blinded element."""
    return token(oprf.unblind(blind, evaluated))


@dataclasses.dataclass(frozen=True)
class Hit:
    """What a hit discloses: where to send the AssistanceRequest (step 2), nothing more."""

    case_reference: str
    contact_point: str


@dataclasses.dataclass(frozen=True)
class BucketEntry:
    """One registered identifier as a bucket shows it: a tag and a sealed hit."""

    tag: bytes
    sealed_hit: bytes


_TAG_SIZE = 16
_NONCE = bytes(12)  # each key seals exactly one hit: the key is unique to (token, entry)


def _tag(match_token: bytes) -> bytes:
    return hashlib.sha256(encode("exchange.v1.MatchTag", match_token)).digest()[:_TAG_SIZE]


def _hit_key(match_token: bytes, salt: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=salt, info=b"exchange.v1.MatchHit"
    ).derive(match_token)


def seal_hit(match_token: bytes, hit: Hit, salt: bytes) -> BucketEntry:
    """The bucket entry of a registered identifier (`salt`: 16 random bytes per entry)."""
    plain = encode("exchange.v1.Hit", hit.case_reference.encode(), hit.contact_point.encode())
    sealed = AESGCM(_hit_key(match_token, salt)).encrypt(_NONCE, plain, None)
    return BucketEntry(_tag(match_token), salt + sealed)


def find_hit(match_token: bytes, entries: list[BucketEntry]) -> list[Hit]:
    """The hits sealed under `match_token` in a bucket (empty: no hit)."""
    tag = _tag(match_token)
    found = []
    for entry in entries:
        if entry.tag != tag or len(entry.sealed_hit) < 16:
            continue
        salt, sealed = entry.sealed_hit[:16], entry.sealed_hit[16:]
        try:
            plain = AESGCM(_hit_key(match_token, salt)).decrypt(_NONCE, sealed, None)
        except InvalidTag:
            continue  # a tag collision, or a corrupted entry: not ours
        found.append(_decode_hit(plain))
    return found


def _decode_hit(plain: bytes) -> Hit:
    case_reference, contact_point = decode("exchange.v1.Hit", plain)
    return Hit(case_reference.decode(), contact_point.decode())
