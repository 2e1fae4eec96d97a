"""Tagged, length-prefixed encoding of byte strings for signatures and digests.

Protobuf encoding is not canonical, so nothing here signs or hashes a message
object. Instead every signature, digest and HPKE `info` covers

    b"OPSC-EXCHANGE/1" || for each of (tag, part_1, ..., part_n): u64be(len(x)) || x

the same idea as DSSE's pre-authentication encoding (PAE): the tag separates
domains (an envelope signature can never be replayed as a receipt signature),
and the length prefixes make the split between parts unambiguous.
"""

from __future__ import annotations

import hashlib
import struct

__all__ = ["decode", "encode", "tagged_digest"]

_PREFIX = b"OPSC-EXCHANGE/1"


def encode(tag: str, *parts: bytes) -> bytes:
    """Encode `parts` under the domain `tag`, unambiguously."""
    chunks = [_PREFIX]
    for part in (tag.encode(), *parts):
        chunks.append(struct.pack(">Q", len(part)))
        chunks.append(part)
    return b"".join(chunks)


def tagged_digest(tag: str, *parts: bytes) -> bytes:
    """SHA-256 of `encode(tag, *parts)`."""
    return hashlib.sha256(encode(tag, *parts)).digest()


def decode(tag: str, data: bytes) -> list[bytes]:
    """The parts of `encode(tag, *parts)`; the inverse, for our own sealed records.

    Raises:
        ValueError: `data` is not an encoding under `tag`.
    """
    if not data.startswith(_PREFIX):
        raise ValueError("not an OPSC-EXCHANGE/1 encoding")
    parts, offset = [], len(_PREFIX)
    while offset < len(data):
        if offset + 8 > len(data):
            raise ValueError("truncated length prefix")
        (length,) = struct.unpack_from(">Q", data, offset)
        end = offset + 8 + length
        if end > len(data):
            raise ValueError("truncated part")
        parts.append(data[offset + 8 : end])
        offset = end
    if not parts or parts[0] != tag.encode():
        raise ValueError(f"not an encoding under {tag!r}")
    return parts[1:]
