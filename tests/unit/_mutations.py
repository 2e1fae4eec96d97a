"""Mutations of valid notices, for the catalogue's rule tables.

A mutation returns the notice to validate: most edit it in place by dotted
field path ("case_referral.victims[0].age_band"); some re-parse it from bytes
with raw wire bytes appended, as a peer's opened content would arrive.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from exchange._proto.exchange.v1 import notices_pb2 as pb
from exchange.notices import decode_notice, encode_notice

Mutation = Callable[[pb.Notice], pb.Notice]


def field_at(notice: pb.Notice, dotted: str) -> tuple[Any, str]:
    """The message holding the last component of `dotted` (indexes allowed), and its name."""
    *parents, name = dotted.split(".")
    message: Any = notice
    for part in parents:
        if part.endswith("]"):
            field, index = part[:-1].split("[")
            message = getattr(message, field)[int(index)]
        else:
            message = getattr(message, part)
    return message, name


def setting(dotted: str, value: Any) -> Mutation:
    """Assign `value` to the field at `dotted` (enum numbers need not be defined codes)."""

    def mutate(notice: pb.Notice) -> pb.Notice:
        message, name = field_at(notice, dotted)
        setattr(message, name, value)
        return notice

    return mutate


def replacing(dotted: str, values: list[Any]) -> Mutation:
    """Replace the repeated field at `dotted` with `values`."""

    def mutate(notice: pb.Notice) -> pb.Notice:
        message, name = field_at(notice, dotted)
        del getattr(message, name)[:]
        getattr(message, name).extend(values)
        return notice

    return mutate


def clearing(dotted: str) -> Mutation:
    def mutate(notice: pb.Notice) -> pb.Notice:
        message, name = field_at(notice, dotted)
        message.ClearField(name)
        return notice

    return mutate


def combined(*mutations: Mutation) -> Mutation:
    def mutate(notice: pb.Notice) -> pb.Notice:
        for mutation in mutations:
            notice = mutation(notice)
        return notice

    return mutate


# --- raw wire bytes ----------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def varint_field(number: int, value: int) -> bytes:
    """The wire bytes of a varint field (wire type 0)."""
    return _varint(number << 3) + _varint(value)


def message_field(number: int, payload: bytes) -> bytes:
    """The wire bytes of a length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def in_body(body: str, inner: bytes) -> bytes:
    """Wire bytes that merge `inner` into the notice's `body` field."""
    return message_field(pb.Notice.DESCRIPTOR.fields_by_name[body].number, inner)


# A varint field 99, defined by no message here.
UNKNOWN = varint_field(99, 1)


def appending(extra: bytes) -> Mutation:
    """Serialize, append raw wire bytes, parse again: what a peer could send."""

    def mutate(notice: pb.Notice) -> pb.Notice:
        return decode_notice(encode_notice(notice) + extra)

    return mutate


def appending_in_body(body: str, inner: bytes) -> Mutation:
    """Serialize, append `inner` merged into the body, parse again."""
    return appending(in_body(body, inner))


# --- refusal cases as data ---------------------------------------------------------------------


@dataclasses.dataclass
class RefusalCase:
    """A notice the catalogue refuses, for tests that put the unit cases through running nodes.

    Attributes:
        case_id: the unit test's node id under tests/unit, to rerun it there.
        body: the type of the valid notice that was mutated (its header kind).
        notice: the mutated notice.
        field: the field path the ValidationError names.
        reason: a fragment of its reason; "" where the unit test checks none.
    """

    case_id: str
    body: str
    notice: pb.Notice
    field: str
    reason: str = ""


def refusal_case(
    test: Callable[..., object],
    param_id: str,
    body: str,
    notice: pb.Notice,
    field: str,
    reason: str = "",
) -> RefusalCase:
    """The case that `test[param_id]` checks (`param_id` "" for a test without parameters)."""
    file = test.__module__.rpartition(".")[2]
    node_id = f"{file}.py::{test.__name__}" + (f"[{param_id}]" if param_id else "")
    return RefusalCase(node_id, body, notice, field, reason)


def table_cases(
    test: Callable[..., object],
    body: str,
    make: Callable[[], pb.Notice],
    table: Iterable[Any],
    id_suffix: str = "",
) -> list[RefusalCase]:
    """The cases of `test`'s table of pytest.param(mutation, field[, reason], id=...).

    Each mutation is applied to a fresh valid notice from `make`; `id_suffix` is
    what pytest appends to the row's id when `test` has another parameter.
    """
    return [
        refusal_case(test, f"{row.id}{id_suffix}", body, row.values[0](make()), *row.values[1:])
        for row in table
    ]
