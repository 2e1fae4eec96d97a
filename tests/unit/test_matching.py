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


def holder_token(key: ServerKey, identifier) -> tuple[bytes, bytes]:
    """What the holder indexes (registering.py): the element, and the token it gives."""
    element = key.evaluate_element(identifier.oprf_input())
    return element, matching.token(element)


def query(identifier, key: ServerKey = HOLDER) -> bytes:
    blind, blinded = matching.blind_query(identifier)
    return matching.query_token(blind, key.blind_evaluate(blinded))


def test_the_querier_derives_the_token_the_holder_indexed() -> None:
    _, indexed = holder_token(HOLDER, PASSPORT)
    assert query(SAME_PASSPORT_WRITTEN_OTHERWISE) == indexed


def test_another_identifier_or_another_holder_gives_another_token() -> None:
    _, indexed = holder_token(HOLDER, PASSPORT)
    assert query(OTHER) != indexed
    assert query(PASSPORT, ServerKey.generate()) != indexed


def test_a_rotated_key_reindexes_from_the_elements_alone() -> None:
    new = ServerKey.generate()
    element, _ = holder_token(HOLDER, PASSPORT)
    rekeyed = HOLDER.rekeyed(element, new)
    assert rekeyed == holder_token(new, PASSPORT)[0]
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
        holder_token(HOLDER, normalize(IdentifierType.PHONE, f"+4420790{n:05d}"))[1]
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


# --- buckets: membership for the querier's own token only ---------------------------------------

HIT = matching.Hit("XB-2026-0042", "xb-prosecution duty desk")


def _bucket_with(token: bytes, others: int) -> list[matching.BucketEntry]:
    entries = [
        matching.seal_hit(bytes([n]) * 32, matching.Hit(f"XB-{n}", "desk"), bytes([n]) * 16)
        for n in range(others)
    ]
    entries.insert(others // 2, matching.seal_hit(token, HIT, b"\x99" * 16))
    return entries


def test_the_querier_opens_its_own_hit_and_only_that() -> None:
    _, indexed = holder_token(HOLDER, PASSPORT)
    entries = _bucket_with(indexed, others=20)
    assert matching.find_hit(query(PASSPORT), entries) == [HIT]
    assert matching.find_hit(query(OTHER), entries) == []


def test_a_bucket_entry_shows_neither_the_token_nor_the_case_reference() -> None:
    _, indexed = holder_token(HOLDER, PASSPORT)
    entry = matching.seal_hit(indexed, HIT, b"\x01" * 16)
    assert indexed not in entry.tag + entry.sealed_hit
    assert b"XB-2026-0042" not in entry.sealed_hit


def test_a_tampered_sealed_hit_is_no_hit() -> None:
    token = bytes(32)
    entry = matching.seal_hit(token, HIT, b"\x02" * 16)
    flipped = bytearray(entry.sealed_hit)
    flipped[-1] ^= 1
    assert matching.find_hit(token, [matching.BucketEntry(entry.tag, bytes(flipped))]) == []


def test_two_cases_registering_one_identifier_are_both_found() -> None:
    token = bytes(32)
    second = matching.Hit("XB-2026-0099", "desk")
    entries = [
        matching.seal_hit(token, HIT, b"\x03" * 16),
        matching.seal_hit(token, second, b"\x04" * 16),
    ]
    assert matching.find_hit(token, entries) == [HIT, second]
