"""Hypothesis strategies for hostile requests, built from the contract's message descriptors.

Two kinds: structurally valid messages whose fields hold hostile values
(boundary integers, unknown enum numbers, empty, huge and control-character
strings, ids that almost parse, deep and empty nested messages), and raw bytes:
noise, and valid encodings cut, flipped or spliced.
"""

from __future__ import annotations

import os
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

# Examples per RPC and kind (raw bytes, hostile messages). `scripts/fuzz` raises it.
EXAMPLES = int(os.environ.get("EXCHANGE_FUZZ_EXAMPLES", "50"))
MAX_DEPTH = 5
MAX_REPEATED = 4

F = FieldDescriptor
_INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
    F.TYPE_ENUM: (-(2**31), 2**31 - 1),
}

# Values that almost pass a check: ids, references, node ids, times and tokens.
_NEAR_MISSES = [
    "",
    " ",
    "01890a5d-ac96-7abc-8def-0123456789ab",
    "01890A5D-AC96-7ABC-8DEF-0123456789AB",
    "00000000-0000-0000-0000-000000000000",
    "xa-police",
    "xb-prosecution",
    "xz-nowhere",
    "XA-2026-0001",
    "a" * 65,
    "\x00",
    "\u202e\u200b",
    "../../etc/passwd",
    "'; DROP TABLE notices; --",
    "%s%n",
    "exn_" + "0" * 32 + "_" + "A" * 43,
    "12/03/2013",
    "jane.roe@example.org",
    "+44 20 7946 0958",
]


def _strings() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(_NEAR_MISSES),
        st.text(max_size=40),
        st.text(alphabet=st.characters(codec="utf-8"), min_size=500, max_size=3000),
    )


def _integers(field_type: int) -> st.SearchStrategy[int]:
    low, high = _INT_RANGES[field_type]
    return st.one_of(
        st.sampled_from(sorted({low, high, 0, 1, max(low, -1), min(high, 2**31 - 1)})),
        st.integers(low, high),
        st.integers(max(low, -3), min(high, 30)),
    )


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type == F.TYPE_STRING:
        return _strings()
    if field.type == F.TYPE_BYTES:
        return st.one_of(
            st.binary(max_size=64), st.sampled_from([b"", bytes(32), b"\xff" * 32, bytes(64)])
        )
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if field.type == F.TYPE_ENUM:
        known = [value.number for value in field.enum_type.values]
        return st.one_of(st.sampled_from(known), _integers(F.TYPE_ENUM))
    return _integers(field.type)


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of `descriptor` with hostile values in any subset of fields."""
    cls = message_factory.GetMessageClass(descriptor)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        for field in descriptor.fields:
            if not draw(st.booleans()):
                continue
            _fill(draw, message, field, depth)
        return message

    return build()


def _fill(draw: st.DrawFn, message: Message, field: FieldDescriptor, depth: int) -> None:
    target = getattr(message, field.name)
    nested = field.type == F.TYPE_MESSAGE
    if nested and field.message_type.GetOptions().map_entry:
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        for _ in range(draw(st.integers(0, MAX_REPEATED))):
            key = draw(_scalar(key_field))
            if value_field.type == F.TYPE_MESSAGE:
                if depth < MAX_DEPTH:
                    target[key].CopyFrom(draw(messages(value_field.message_type, depth + 1)))
            else:
                target[key] = draw(_scalar(value_field))
        return
    if nested and depth >= MAX_DEPTH:
        return
    if field.is_repeated:
        count = draw(st.integers(0, MAX_REPEATED))
        if nested:
            for _ in range(count):
                target.add().CopyFrom(draw(messages(field.message_type, depth + 1)))
        else:
            target.extend(draw(_scalar(field)) for _ in range(count))
    elif nested:
        target.CopyFrom(draw(messages(field.message_type, depth + 1)))
    else:
        setattr(message, field.name, draw(_scalar(field)))


def _mutated(encoded: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(encoded))
        for _ in range(draw(st.integers(1, 4))):
            how = draw(st.sampled_from(["flip", "cut", "insert", "splice"]))
            at = draw(st.integers(0, len(data)))
            if how == "flip" and data:
                index = min(at, len(data) - 1)
                data[index] ^= 1 << draw(st.integers(0, 7))
            elif how == "cut":
                data = data[:at]
            elif how == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=12))
            else:
                data = data + draw(encoded)
        return bytes(data)

    return mutate()


def raw_requests(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """Bytes for a method whose request is `descriptor`: noise, and damaged encodings of it."""
    encoded = messages(descriptor).map(lambda m: m.SerializeToString())
    return st.one_of(
        st.binary(max_size=256),
        _mutated(encoded),
        # A field number and wire type the message does not have, or a length past the end.
        st.sampled_from([b"\x0a\xff\xff\xff\xff\x0f", b"\x0f", b"\xf8\xff\xff\xff\x0f\x01"]),
    )
