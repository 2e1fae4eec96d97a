"""OPRF(ristretto255, SHA-512): RFC 9497's vectors byte for byte, and what must be refused.

The vectors live apart from the tests, in tests/vectors/rfc9497_oprf_ristretto255_sha512.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange import oprf
from exchange.oprf import OprfError, ServerKey

DOCUMENT: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "vectors" / "rfc9497_oprf_ristretto255_sha512.json").read_text()
)
KEY = ServerKey.derive(bytes.fromhex(DOCUMENT["seed"]), bytes.fromhex(DOCUMENT["key_info"]))
VECTORS = DOCUMENT["vectors"]


def test_the_file_names_its_source_and_suite() -> None:
    assert "RFC 9497" in DOCUMENT["comment"]
    assert (DOCUMENT["suite"], DOCUMENT["mode"], len(VECTORS)) == ("ristretto255-SHA512", 0, 2)


def test_derive_key_pair_gives_the_rfc_key() -> None:
    assert KEY.to_bytes().hex() == DOCUMENT["skSm"]


@pytest.mark.parametrize("vector", VECTORS, ids=["vector-1", "vector-2"])
def test_blind_evaluate_finalize_match_the_rfc(vector: dict[str, str]) -> None:
    data = bytes.fromhex(vector["input"])
    blind, blinded = oprf.blind(data, bytes.fromhex(vector["blind"]))
    assert blinded.hex() == vector["blinded_element"]
    evaluated = KEY.blind_evaluate(blinded)
    assert evaluated.hex() == vector["evaluation_element"]
    assert oprf.finalize(data, blind, evaluated).hex() == vector["output"]
    # The server's direct evaluation is the same PRF.
    assert KEY.evaluate(data).hex() == vector["output"]


@pytest.mark.parametrize(
    "vector", DOCUMENT["expand_message_xmd_sha512"], ids=["32-bytes", "128-bytes"]
)
def test_expand_message_xmd_matches_rfc_9380(vector: dict[str, Any]) -> None:
    expanded = oprf.expand_message_xmd(
        vector["msg"].encode(), vector["dst"].encode(), vector["len_in_bytes"]
    )
    assert expanded.hex() == vector["uniform_bytes"]


def test_the_context_string_is_the_rfcs() -> None:
    assert oprf.CONTEXT_STRING == b"OPRFV1-\x00-ristretto255-SHA512"


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=200))
def test_a_random_blind_unblinds_to_the_servers_own_evaluation(data: bytes) -> None:
    blind, blinded = oprf.blind(data)
    assert oprf.finalize(data, blind, KEY.blind_evaluate(blinded)) == KEY.evaluate(data)


def test_the_server_sees_a_fresh_element_every_time() -> None:
    # Two queries for the same identifier look unrelated to the evaluating node.
    _, first = oprf.blind(b"passport:XA:X1234567")
    _, second = oprf.blind(b"passport:XA:X1234567")
    assert first != second


def test_another_key_gives_another_function() -> None:
    other = ServerKey.generate()
    assert other.evaluate(b"x") != KEY.evaluate(b"x")
    assert ServerKey(other.to_bytes()) == other != KEY


IDENTITY = bytes(32)
# The field element p (2^255 - 19) is not a canonical encoding.
NON_CANONICAL = bytes.fromhex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")


@pytest.mark.parametrize(
    "element",
    [
        pytest.param(IDENTITY, id="identity"),
        pytest.param(NON_CANONICAL, id="non-canonical-encoding"),
        pytest.param(bytes(31), id="short"),
        pytest.param(bytes(33), id="long"),
        pytest.param(b"\xff" * 32, id="not-a-point"),
    ],
)
def test_a_malformed_blinded_element_is_refused(element: bytes) -> None:
    with pytest.raises(OprfError, match="blinded element is not a valid ristretto255 element"):
        KEY.blind_evaluate(element)


def test_a_malformed_evaluated_element_is_refused() -> None:
    blind, _ = oprf.blind(b"x")
    with pytest.raises(OprfError, match="evaluated element"):
        oprf.finalize(b"x", blind, IDENTITY)


@pytest.mark.parametrize(
    ("scalar", "message"),
    [
        pytest.param(bytes(32), "non-zero", id="zero"),
        pytest.param(bytes(31), "non-zero 32-byte", id="short"),
        pytest.param(b"\xff" * 32, "not reduced", id="above-the-order"),
    ],
)
def test_a_bad_key_or_blind_is_refused(scalar: bytes, message: str) -> None:
    with pytest.raises(OprfError, match=message):
        ServerKey(scalar)
    with pytest.raises(OprfError, match=message):
        oprf.blind(b"x", scalar)


def test_inputs_longer_than_the_length_prefix_allows_are_refused() -> None:
    with pytest.raises(OprfError, match="at most 65535"):
        KEY.evaluate(bytes(65536))


def test_the_key_does_not_show_in_its_repr() -> None:
    assert KEY.to_bytes().hex() not in repr(KEY)
    assert repr(KEY) == "ServerKey(<secret>)"
