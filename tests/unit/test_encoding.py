"""The tagged, length-prefixed encoding under every signature, digest and HPKE info.

Two different (tag, parts) inputs must never encode to the same bytes, or a
signature made for one meaning could be presented for another (DSSE PAE).
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange import _encoding
from exchange._encoding import encode, tagged_digest

PREFIX = b"OPSC-EXCHANGE/1"


def u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def decode(data: bytes) -> tuple[str, tuple[bytes, ...]]:
    """The inverse of `encode`, written from the documented layout.

    That it exists and round-trips is the proof that `encode` is injective.
    """
    assert data.startswith(PREFIX)
    rest = data[len(PREFIX) :]
    items: list[bytes] = []
    while rest:
        assert len(rest) >= 8, "truncated length prefix"
        (length,) = struct.unpack(">Q", rest[:8])
        assert len(rest) >= 8 + length, "truncated part"
        items.append(rest[8 : 8 + length])
        rest = rest[8 + length :]
    assert items, "the tag is always present"
    return items[0].decode(), tuple(items[1:])


def test_layout_is_prefix_then_length_prefixed_tag_and_parts() -> None:
    assert encode("t", b"ab", b"") == PREFIX + u64(1) + b"t" + u64(2) + b"ab" + u64(0)


def test_tag_is_encoded_as_utf8() -> None:
    assert encode("é") == PREFIX + u64(2) + "é".encode()


def test_tagged_digest_is_sha256_of_the_encoding() -> None:
    assert tagged_digest("t", b"a", b"b") == hashlib.sha256(encode("t", b"a", b"b")).digest()


# Pairs of inputs a naive concatenation would confuse.
AMBIGUOUS_UNDER_CONCATENATION = [
    pytest.param(("t", b"ab", b"c"), ("t", b"a", b"bc"), id="boundary-between-parts"),
    pytest.param(("t", b"abc"), ("t", b"ab", b"c"), id="one-part-vs-two"),
    pytest.param(("t",), ("t", b""), id="no-part-vs-empty-part"),
    pytest.param(("t", b""), ("t", b"", b""), id="one-empty-part-vs-two"),
    pytest.param(("ab", b"c"), ("a", b"bc"), id="boundary-between-tag-and-part"),
    pytest.param(("t", b"a", b"b"), ("t", b"a" + u64(1) + b"b"), id="part-embedding-a-length"),
    pytest.param(
        ("exchange.v1.EnvelopeHeader", b"x"), ("exchange.v1.ReceiptBody", b"x"), id="tag-separation"
    ),
    pytest.param(("e\u0301",), ("\u00e9",), id="unicode-tag-not-normalized"),
]


@pytest.mark.parametrize(("first", "second"), AMBIGUOUS_UNDER_CONCATENATION)
def test_different_inputs_encode_differently(
    first: tuple[str, *tuple[bytes, ...]], second: tuple[str, *tuple[bytes, ...]]
) -> None:
    assert encode(*first) != encode(*second)
    assert tagged_digest(*first) != tagged_digest(*second)


@settings(derandomize=True, database=None, max_examples=300)
@given(
    tag=st.text(st.characters(exclude_categories=["Cs"]), max_size=12),
    parts=st.lists(st.binary(max_size=24), max_size=5),
)
def test_decoding_recovers_exactly_the_tag_and_parts(tag: str, parts: list[bytes]) -> None:
    assert decode(encode(tag, *parts)) == (tag, tuple(parts))


@pytest.mark.parametrize(
    "parts", [(), (b"",), (b"a", b"", b"bc"), (bytes(300),)], ids=["none", "empty", "mixed", "long"]
)
def test_decode_inverts_encode(parts: tuple[bytes, ...]) -> None:
    assert _encoding.decode("t", encode("t", *parts)) == list(parts)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"OTHER" + encode("t", b"x")[15:], "not an OPSC"),
        (encode("t", b"xyz")[:-1], "truncated part"),
        (encode("t", b"x") + b"\x00", "truncated length"),
        (encode("u", b"x"), "not an encoding under 't'"),
    ],
    ids=["prefix", "short-part", "short-length", "other-tag"],
)
def test_decode_refuses_what_encode_did_not_make(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        _encoding.decode("t", data)
