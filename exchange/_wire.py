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
