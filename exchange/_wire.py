"""Small helpers shared by the modules that parse signed protobuf bytes.

Parsing untrusted bytes happens in few places (envelope headers, receipts,
trust lists, sealed payloads); each goes through `parse`, which turns every
decoder failure into one error the caller maps to its own.
"""

from __future__ import annotations

import datetime as dt
from typing import TypeVar

from google.protobuf import message as _message
from google.protobuf.timestamp_pb2 import Timestamp

from exchange.clock import utc
from exchange.errors import ValidationError

__all__ = [
    "MalformedError",
    "checked_time",
    "entries",
    "from_timestamp",
    "optional_time",
    "parse",
    "timestamp",
]

M = TypeVar("M", bound=_message.Message)


class MalformedError(ValueError):
    """Bytes that do not decode as the expected message."""


def parse(message_type: type[M], data: bytes) -> M:
    """Decode `data` as `message_type`, or raise MalformedError."""
    message = message_type()
    try:
        message.ParseFromString(data)
    except _message.DecodeError as exc:
        raise MalformedError(f"not a valid {message_type.DESCRIPTOR.full_name}") from exc
    return message


# Top-level fields besides the counted entries that `entries` reads through: a
# batch has one or two; a message of millions (repeats of one field, unknown
# fields) would take the Python scan seconds, for bytes the parser reads in
# milliseconds.
OTHER_FIELDS = 16


def entries(data: bytes, field_number: int, most: int) -> int:
    """How many entries of the repeated message (or bytes) field `field_number` the
    encoded message `data` holds, counting no further than `most` + 1.

    Read off the wire without parsing anything: a parsed entry costs far more
    than its bytes (24 MiB of empty entries parse to about 2 GiB), so a field's
    entries are bounded before a message from a peer is parsed. Every other
    top-level field counts against OTHER_FIELDS, so the scan is short whatever
    the bytes.

    Raises:
        MalformedError: `data` is not a sequence of well-formed top-level fields,
            holds a group (proto3 has none), or more than OTHER_FIELDS other
            fields: the parser is not asked.
    """
    count = others = position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, position = _varint(data, position)
        elif wire_type == 1:
            position += 8
        elif wire_type == 2:
            length, position = _varint(data, position)
            position += length
        elif wire_type == 5:
            position += 4
        else:
            raise MalformedError(f"wire type {wire_type} at byte {position}")
        if position > len(data):
            raise MalformedError("a field runs past the end of the message")
        if number == field_number and wire_type == 2:
            count += 1
            if count > most:
                return count
        else:
            others += 1
            if others > OTHER_FIELDS:
                raise MalformedError(f"more than {OTHER_FIELDS} fields besides the entries")
    return count


def _varint(data: bytes, position: int) -> tuple[int, int]:
    """The base-128 varint at `position`, and the position after it."""
    value = shift = 0
    for index in range(position, min(position + 10, len(data))):
        value |= (data[index] & 0x7F) << shift
        if data[index] < 0x80:
            return value, index + 1
        shift += 7
    raise MalformedError(f"no valid varint at byte {position}")


def timestamp(when: dt.datetime) -> Timestamp:
    """A protobuf Timestamp for an aware datetime."""
    value = Timestamp()
    value.FromDatetime(utc(when))
    return value


def from_timestamp(value: Timestamp) -> dt.datetime:
    """An aware UTC datetime for a protobuf Timestamp."""
    return value.ToDatetime(tzinfo=dt.UTC)


def optional_time(parent: _message.Message, field: str, path: str = "") -> dt.datetime | None:
    """The datetime of message field `field` of `parent`, or None when unset.

    Args:
        path: the field's path for the error message (default: `field`).

    Raises:
        ValidationError: the seconds or nanos are outside what a datetime can
            hold; protobuf parses any values, so untrusted bytes can carry them.
    """
    if not parent.HasField(field):
        return None
    value = getattr(parent, field)
    assert isinstance(value, Timestamp)
    return checked_time(value, path or field)


def checked_time(value: Timestamp, path: str) -> dt.datetime:
    """The datetime of `value`, or ValidationError naming `path` if it holds none."""
    try:
        return from_timestamp(value)
    except (ValueError, OverflowError):
        raise ValidationError(path, "is not a valid timestamp") from None
