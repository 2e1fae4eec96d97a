"""Counting a repeated field's entries on the wire, before a peer's message is parsed,
and the sender's split of a backlog into batches."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange import _wire
from exchange._proto.exchange.v1 import envelope_pb2, federation_pb2
from exchange.envelope import Envelope
from exchange.rpc import peers


def _request(sizes: list[int], sequence: int = 7) -> bytes:
    envelopes = [envelope_pb2.SignedEnvelope(header=b"h" * n, signature=b"s") for n in sizes]
    return federation_pb2.DeliverBatchesRequest(
        sequence=sequence, envelopes=envelopes
    ).SerializeToString()


@given(st.lists(st.integers(0, 300), max_size=40), st.integers(0, 2**64 - 1))
def test_the_count_is_the_parsers_count(sizes: list[int], sequence: int) -> None:
    data = _request(sizes, sequence)
    assert _wire.entries(data, 2, 1000) == len(sizes)
    assert _wire.entries(data, 1, 1000) == 0  # a varint field holds no entries


def test_counting_stops_one_past_the_bound() -> None:
    assert _wire.entries(b"\x12\x00" * 10_000_000, 2, 256) == 257


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
