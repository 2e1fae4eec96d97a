"""Counting a repeated field's entries on the wire, before a peer's message is parsed,
and the sender's split of a backlog into batches."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange import _wire
from exchange._proto.exchange.v1 import envelope_pb2, federation_pb2
from exchange.envelope import Envelope
from exchange.rpc import federation, peers


def _request(sizes: list[int], sequence: int = 7) -> bytes:
    envelopes = [envelope_pb2.SignedEnvelope(header=b"h" * n, signature=b"s") for n in sizes]
    return federation_pb2.DeliverBatchesRequest(
        sequence=sequence, envelopes=envelopes
    ).SerializeToString()


@given(st.lists(st.integers(0, 300), max_size=40), st.integers(0, 2**64 - 1))
def test_the_count_is_the_parsers_count(sizes: list[int], sequence: int) -> None:
    data = _request(sizes, sequence)
    assert _wire.entries(data, 2, 1000) == len(sizes)


def test_counting_stops_one_past_the_bound() -> None:
    assert _wire.entries(b"\x12\x00" * 10_000_000, 2, 256) == 257


def test_more_other_fields_than_a_batch_has_are_not_read_through() -> None:
    """Repeats of `sequence` or unknown fields: refused after OTHER_FIELDS, not scanned."""
    others = b"\x08\x00" * (_wire.OTHER_FIELDS + 1)
    assert _wire.entries(b"\x12\x00" * 3 + others[:-2], 2, 256) == 3
    for data in (others, b"\x1a\x00" * 10_000_000, b"\x12\x00" + others):
        with pytest.raises(_wire.MalformedError, match="fields besides the entries"):
            _wire.entries(data, 2, 256)


# Top-level fields, mostly well-formed: any field number (0 and the counted 2
# included) with any wire type, varints short and overlong, groups; and now and then
# raw bytes that break the framing.


def _varint(value: int, overlong: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value or overlong:
            out.append(byte | 0x80)
            if not value:
                overlong -= 1
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire_type: int, value: int, payload: bytes, overlong: int) -> bytes:
    key = _varint((number << 3) | wire_type, overlong)
    body = {
        0: _varint(value, overlong),
        1: payload.ljust(8, b"\0")[:8],
        2: _varint(len(payload), overlong) + payload,
        5: payload.ljust(4, b"\0")[:4],
    }.get(wire_type, b"")
    return key + body


# A payload: empty, a small SignedEnvelope (header only), or any bytes.
_PAYLOAD = st.one_of(
    st.just(b""),
    st.binary(max_size=5).map(lambda h: b"\x0a" + bytes([len(h)]) + h),
    st.binary(max_size=12),
)
_PIECE = st.one_of(
    st.builds(
        _field,
        st.sampled_from([0, 1, 2, 2, 2, 3, 15, 16, 2**29 - 1]),
        st.sampled_from([0, 1, 2, 2, 2, 5]),
        st.integers(0, 2**64 - 1),
        _PAYLOAD,
        st.integers(0, 2),
    ),
    st.builds(
        _field, st.integers(0, 3), st.sampled_from([3, 4, 6, 7]), st.just(0), _PAYLOAD, st.just(0)
    ),
    st.binary(max_size=3),
)


@settings(max_examples=2000)
@given(st.lists(_PIECE, max_size=8).map(b"".join))
def test_the_count_never_falls_short_of_what_the_parser_makes(data: bytes) -> None:
    """Whatever the bytes: if upb parses them, `entries` counts its entries, or refuses."""
    try:
        parsed = federation_pb2.DeliverBatchesRequest.FromString(data)
    except Exception:
        return
    try:
        counted = _wire.entries(data, 2, 1000)
    except _wire.MalformedError:
        return  # refused, never parsed
    assert counted == len(parsed.envelopes)


def test_entries_of_other_fields_and_unknown_fields_are_skipped() -> None:
    # field 9 (unknown, length-delimited), a fixed64, a fixed32, then two entries
    data = b"\x4a\x03abc" + b"\x49" + bytes(8) + b"\x4d" + bytes(4) + b"\x12\x00" * 2
    assert _wire.entries(data, 2, 256) == 2


@pytest.mark.parametrize(
    "data",
    [
        b"\x12\x05abc",  # runs past the end
        b"\x13\x00",  # a group: proto3 has none
        b"\x14",  # an end of group
        b"\x16\x00",  # wire type 6 does not exist
        b"\x12" + b"\xff" * 10,  # a length that is no varint
        b"\x08",  # a key with no value
    ],
    ids=["past-end", "group", "end-group", "wire-type-6", "bad-varint", "truncated"],
)
def test_bytes_that_are_no_message_are_malformed(data: bytes) -> None:
    with pytest.raises(_wire.MalformedError):
        _wire.entries(data, 2, 256)


def _envelope(size: int) -> Envelope:
    return Envelope(header=b"h" * size, sealed_payload=b"", signature=b"")


def test_a_backlog_is_split_by_count_and_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "BATCH_ENVELOPES", 3)
    monkeypatch.setattr(peers, "BATCH_REQUEST_BYTES", 100)
    sizes = [10, 10, 10, 10, 60, 30, 150, 10]
    groups = peers._batches([_envelope(n) for n in sizes])
    # 3 by count; 10 + 60 + 30 fits 100; 150 goes alone, over the bound; the rest.
    assert [list(g) for g in groups] == [[0, 1, 2], [3, 4, 5], [6], [7]]
    assert peers._batches([]) == []


def test_an_answer_of_more_outcomes_than_a_batch_may_hold_is_not_parsed() -> None:
    outcome = b"\x12\x00"
    most = peers.BATCH_ENVELOPES
    answer = peers._batch_response(b"\x08\x01" + outcome * most)
    assert answer is not None
    assert (answer.sequence, len(answer.outcomes)) == (1, most)
    assert peers._batch_response(b"\x08\x01" + outcome * (most + 1)) is None
    assert peers._batch_response(b"\x08\x01\x13") is None  # malformed


def test_an_answer_larger_than_a_batchs_answer_can_be_is_not_parsed() -> None:
    """One outcome nesting millions of alternating oneof members parses to many times
    its size: past BATCH_ANSWER_BYTES an answer is dropped unread."""
    nested = b"\x0a\x00\x12\x00" * (peers.BATCH_ANSWER_BYTES // 4)
    outcome = b"\x12" + _varint(len(nested), 0) + nested
    assert peers._batch_response(b"\x08\x01" + outcome) is None
    small = b"\x0a\x00\x12\x00" * 8
    answer = peers._batch_response(b"\x08\x01\x12" + _varint(len(small), 0) + small)
    assert answer is not None
    assert answer.outcomes[0].HasField("refusal")  # the last member set wins


def test_a_request_weighs_its_whole_encoding_unknown_fields_included() -> None:
    request = federation_pb2.DeliverBatchesRequest.FromString(
        _request([10]) + b"\x1a" + _varint(100_000, 0) + bytes(100_000)
    )
    assert federation._batch_weight(request) == (1, request.ByteSize())
    assert request.ByteSize() > 100_000
