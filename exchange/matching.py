"""Hit/no-hit matching (Prüm step 1 for OPSC cases): tokens, buckets and key rotation.

The protocol between a querying node Q and a holding node H, for one
identifier x (already normalized, `exchange.identifiers`):

1. Q blinds x (RFC 9497 Blind) and sends the blinded element; H applies its
   OPRF key (BlindEvaluate). H learns nothing about x.
2. Q unblinds: N = k_H * HashToGroup(x), and derives the token T = `token(N)`.
3. Q asks H for the bucket of tokens sharing T's first `prefix_bits` bits
   (k-anonymity, as breached-password range queries do): H learns only the
   prefix, shared by many identifiers; Q learns whether T is in the bucket and,
   on a hit, only the case reference and contact point H attached to it.

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

import hashlib

from exchange import oprf
from exchange._encoding import encode
from exchange.identifiers import Identifier

__all__ = [
    "DEFAULT_PREFIX_BITS",
    "TOKEN_SIZE",
    "blind_query",
    "bucket",
    "holder_token",
    "query_token",
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


def holder_token(key: oprf.ServerKey, identifier: Identifier) -> tuple[bytes, bytes]:
    """What the holding node indexes for a registered identifier: (element, token)."""
    element = key.evaluate_element(identifier.oprf_input())
    return element, token(element)


def blind_query(identifier: Identifier) -> tuple[bytes, bytes]:
    """The querier's first step: (blind, blinded element to send)."""
    return oprf.blind(identifier.oprf_input())


def query_token(blind: bytes, evaluated: bytes) -> bytes:
    """The querier's token once the holder has evaluated the blinded element."""
    return token(oprf.unblind(blind, evaluated))
