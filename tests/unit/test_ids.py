"""Identifiers: UUIDv7 message ids (RFC 9562 section 5.7) and the validators."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from exchange.clock import to_millis
from exchange.errors import ValidationError
from exchange.ids import (
    message_id_bound_to,
    new_message_id,
    validate_case_reference,
    validate_country,
    validate_message_id,
    validate_node_id,
)

from ._builders import T0, clock, fixed_random

T0_MILLIS_HEX = f"{to_millis(T0):012x}"


def repeated(byte: int) -> object:
    return lambda n: bytes([byte]) * n


SENDER = "xa-node"


def test_layout_with_all_random_bits_clear() -> None:
    made = new_message_id(clock(), SENDER, repeated(0x00))  # type: ignore[arg-type]
    # Time, version 7, zero rand_a, the variant, zero random bits, then the binding.
    assert made.startswith(f"{T0_MILLIS_HEX[:8]}-{T0_MILLIS_HEX[8:]}-7000-8000-0000")
    assert message_id_bound_to(made, SENDER)


def test_version_variant_and_embedded_time() -> None:
    at = T0 + dt.timedelta(milliseconds=4321, microseconds=999)
    parsed = uuid.UUID(new_message_id(clock(at), SENDER, fixed_random()))
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    # The top 48 bits are the Unix time in whole milliseconds (truncated, not rounded).
    assert parsed.int >> 80 == to_millis(at) == to_millis(T0) + 4321


def test_randomness_fills_rand_a_and_the_top_of_rand_b() -> None:
    # 48 bits asked for, 42 used: the top 12 become rand_a, the next 30 rand_b's top.
    pattern = bytes(range(1, 7))
    value = int.from_bytes(pattern, "big") >> 6
    parsed = uuid.UUID(new_message_id(clock(), SENDER, lambda n: pattern[:n]))
    assert (parsed.int >> 64) & 0xFFF == value >> 30
    assert (parsed.int >> 32) & ((1 << 30) - 1) == value & ((1 << 30) - 1)


def test_deterministic_with_injected_clock_and_randomness() -> None:
    assert new_message_id(clock(), SENDER, fixed_random(b"a")) == new_message_id(
        clock(), SENDER, fixed_random(b"a")
    )
    assert new_message_id(clock(), SENDER, fixed_random(b"a")) != new_message_id(
        clock(), SENDER, fixed_random(b"b")
    )


def test_later_ids_sort_after_earlier_ones_whatever_the_randomness() -> None:
    earlier = new_message_id(clock(T0), SENDER, repeated(0xFF))  # type: ignore[arg-type]
    later = new_message_id(clock(T0 + dt.timedelta(milliseconds=1)), SENDER, repeated(0x00))  # type: ignore[arg-type]
    assert earlier < later


def test_generated_ids_validate() -> None:
    made = new_message_id(clock(), SENDER, fixed_random())
    assert validate_message_id(made) == made


def test_an_id_is_bound_to_its_sender_only() -> None:
    made = new_message_id(clock(), SENDER, fixed_random())
    assert message_id_bound_to(made, SENDER)
    assert not message_id_bound_to(made, "xb-node")


@pytest.mark.parametrize("bit", [0, 31, 32, 61, 64, 75, 80, 127])
def test_changing_any_bit_breaks_the_binding(bit: int) -> None:
    made = uuid.UUID(new_message_id(clock(), SENDER, fixed_random()))
    changed = str(uuid.UUID(int=made.int ^ (1 << bit)))
    assert not message_id_bound_to(changed, SENDER)


V7 = new_message_id(clock(), SENDER, fixed_random())


def _variant(value: str, bits: int) -> str:
    parsed = uuid.UUID(value)
    return str(uuid.UUID(int=(parsed.int & ~(0b11 << 62)) | (bits << 62)))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("not-a-uuid", id="not-a-uuid"),
        pytest.param(V7.upper(), id="uppercase"),
        pytest.param("{" + V7 + "}", id="braces"),
        pytest.param("urn:uuid:" + V7, id="urn"),
        pytest.param(V7.replace("-", ""), id="no-hyphens"),
        pytest.param(V7 + "\n", id="trailing-newline"),
        pytest.param(" " + V7, id="leading-space"),
        pytest.param(str(uuid.UUID(int=uuid.UUID(V7).int & ~(0xF << 76) | (4 << 76))), id="v4"),
        pytest.param(_variant(V7, 0b11), id="microsoft-variant"),
        pytest.param(_variant(V7, 0b00), id="ncs-variant"),
        pytest.param("00000000-0000-0000-0000-000000000000", id="nil"),
    ],
)
def test_message_id_refused(value: str) -> None:
    with pytest.raises(ValidationError) as raised:
        validate_message_id(value, "in_reply_to")
    assert raised.value.field == "in_reply_to"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        pytest.param("xa-node", True, id="typical"),
        pytest.param("abc", True, id="three-characters"),
        pytest.param("a" * 63, True, id="sixty-three-characters"),
        pytest.param("0a9", True, id="digits"),
        pytest.param("ab", False, id="two-characters"),
        pytest.param("a" * 64, False, id="sixty-four-characters"),
        pytest.param("", False, id="empty"),
        pytest.param("XA-node", False, id="uppercase"),
        pytest.param("-xanode", False, id="leading-hyphen"),
        pytest.param("xanode-", False, id="trailing-hyphen"),
        pytest.param("xa_node", False, id="underscore"),
        pytest.param("xa.node", False, id="dot"),
        pytest.param("xa-node\n", False, id="trailing-newline"),
        pytest.param("xä-node", False, id="non-ascii"),
    ],
)
def test_node_id(value: str, ok: bool) -> None:
    if ok:
        assert validate_node_id(value) == value
    else:
        with pytest.raises(ValidationError, match="sender_node_id"):
            validate_node_id(value, "sender_node_id")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        pytest.param("XA", True, id="user-assigned"),
        pytest.param("DE", True, id="iso"),
        pytest.param("xa", False, id="lowercase"),
        pytest.param("X", False, id="one-letter"),
        pytest.param("XAA", False, id="alpha-3"),
        pytest.param("X1", False, id="digit"),
        pytest.param("XA\n", False, id="trailing-newline"),
        pytest.param("", False, id="empty"),
    ],
)
def test_country(value: str, ok: bool) -> None:
    if ok:
        assert validate_country(value) == value
    else:
        with pytest.raises(ValidationError, match="country"):
            validate_country(value)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        pytest.param("XA-2026-0042", True, id="typical"),
        pytest.param("a", True, id="one-character"),
        pytest.param("A" * 64, True, id="sixty-four-characters"),
        pytest.param("ref:2026/01.a-b_c", True, id="punctuation"),
        pytest.param("", False, id="empty"),
        pytest.param("A" * 65, False, id="sixty-five-characters"),
        pytest.param("Jane Doe", False, id="a-name-with-a-space"),
        pytest.param("-XA-2026", False, id="leading-punctuation"),
        pytest.param("XA;2026", False, id="semicolon"),
        pytest.param("XA-2026\n", False, id="trailing-newline"),
        pytest.param("Zoë-1", False, id="non-ascii"),
    ],
)
def test_case_reference(value: str, ok: bool) -> None:
    if ok:
        assert validate_case_reference(value) == value
    else:
        with pytest.raises(ValidationError, match="case_reference"):
            validate_case_reference(value)
