"""The matching core: a querier's token equals the holder's, buckets hide the rest, keys rotate."""

from __future__ import annotations

import pytest

from exchange import matching, oprf
from exchange.identifiers import IdentifierType, normalize
from exchange.oprf import OprfError, ServerKey

HOLDER = ServerKey.generate()
PASSPORT = normalize(IdentifierType.PASSPORT, "X 123 4567", "XA")
SAME_PASSPORT_WRITTEN_OTHERWISE = normalize(IdentifierType.PASSPORT, "x-1234567", "xa")
OTHER = normalize(IdentifierType.PASSPORT, "X1234568", "XA")


def query(identifier, key: ServerKey = HOLDER) -> bytes:
    blind, blinded = matching.blind_query(identifier)
    return matching.query_token(blind, key.blind_evaluate(blinded))


def test_the_querier_derives_the_token_the_holder_indexed() -> None:
    _, indexed = matching.holder_token(HOLDER, PASSPORT)
    assert query(SAME_PASSPORT_WRITTEN_OTHERWISE) == indexed


def test_another_identifier_or_another_holder_gives_another_token() -> None:
    _, indexed = matching.holder_token(HOLDER, PASSPORT)
    assert query(OTHER) != indexed
    assert query(PASSPORT, ServerKey.generate()) != indexed


def test_a_rotated_key_reindexes_from_the_elements_alone() -> None:
    new = ServerKey.generate()
    element, _ = matching.holder_token(HOLDER, PASSPORT)
    rekeyed = HOLDER.rekeyed(element, new)
    assert rekeyed == matching.holder_token(new, PASSPORT)[0]
    assert matching.token(rekeyed) == query(PASSPORT, new)


def test_rekeying_refuses_what_is_not_an_element() -> None:
    with pytest.raises(OprfError, match="element"):
        HOLDER.rekeyed(bytes(32), ServerKey.generate())


@pytest.mark.parametrize(
    ("token", "bits", "expected"),
    [
        (bytes.fromhex("abcd") + bytes(30), 16, 0xABCD),
        (bytes.fromhex("abcd") + bytes(30), 8, 0xAB),
        (bytes.fromhex("ffffffff") + bytes(28), 32, 0xFFFFFFFF),
        (bytes.fromhex("80") + bytes(31), 1, 1),
    ],
)
def test_a_bucket_is_the_tokens_leading_bits(token: bytes, bits: int, expected: int) -> None:
    assert matching.bucket(token, bits) == expected


@pytest.mark.parametrize("bits", [0, 33])
def test_a_bucket_width_out_of_range_is_refused(bits: int) -> None:
    with pytest.raises(ValueError, match="prefix_bits"):
        matching.bucket(bytes(32), bits)


def test_buckets_spread_tokens_evenly_enough_to_hide_in() -> None:
    tokens = [
        matching.holder_token(HOLDER, normalize(IdentifierType.PHONE, f"+4420790{n:05d}"))[1]
        for n in range(2000)
    ]
    counts: dict[int, int] = {}
    for value in tokens:
        counts[matching.bucket(value, 4)] = counts.get(matching.bucket(value, 4), 0) + 1
    # 16 buckets, 125 expected each: none empty, none holding a quarter of all.
    assert len(counts) == 16
    assert max(counts.values()) < 500


def test_the_holder_never_sees_the_same_blinded_element_twice() -> None:
    assert matching.blind_query(PASSPORT)[1] != matching.blind_query(PASSPORT)[1]


def test_unblinding_checks_the_blind() -> None:
    with pytest.raises(OprfError, match="blind"):
        oprf.unblind(bytes(32), HOLDER.evaluate_element(b"x"))
