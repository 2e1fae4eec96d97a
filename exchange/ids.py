"""Identifiers: message ids (UUIDv7), node ids, country codes, case references.

Each validator returns the value or raises `ValidationError` naming the field,
so callers can use them directly on request fields.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Callable

from exchange._encoding import tagged_digest
from exchange.clock import Clock, to_millis
from exchange.errors import ValidationError

__all__ = [
    "message_id_bound_to",
    "new_message_id",
    "validate_case_reference",
    "validate_country",
    "validate_message_id",
    "validate_node_id",
]

# A node id is also the DNS subject alternative name of its TLS certificate,
# so it must be a valid lowercase DNS label.
_NODE_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])$")
# ISO 3166-1 alpha-2; the simulation uses the user-assigned codes XA..XZ.
_COUNTRY = re.compile(r"^[A-Z]{2}$")
# An opaque reference in the sender's own numbering, never a name: no spaces.
_CASE_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")


_BINDING_TAG = "exchange.v1.MessageId"
_BINDING_BITS = 32
_BINDING_MASK = (1 << _BINDING_BITS) - 1


def _binding(sender_node_id: str, unbound: int) -> int:
    digest = tagged_digest(_BINDING_TAG, sender_node_id.encode(), unbound.to_bytes(16, "big"))
    return int.from_bytes(digest[: _BINDING_BITS // 8], "big")


def new_message_id(
    clock: Clock,
    sender_node_id: str,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> str:
    """A UUIDv7 (RFC 9562 section 5.7) bound to its sender.

    Layout: 48-bit Unix milliseconds, version 7, 12 random bits (rand_a), the
    variant, then rand_b: 30 random bits and a 32-bit binding, the first bits
    of a tagged SHA-256 of the sender's node id and the rest of the UUID.
    Receivers refuse an id not bound to the envelope's sender, so no node can
    claim a message id that another node chose (for instance to make a
    recipient refuse the genuine envelope as a duplicate). Time-ordered ids
    keep the store's indexes append-mostly.
    """
    millis = to_millis(clock.now()) & ((1 << 48) - 1)
    rand = int.from_bytes(random_bytes(6), "big") >> 6  # 42 bits
    rand_a = rand >> 30
    rand_b_high = rand & ((1 << 30) - 1)
    unbound = (millis << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | (rand_b_high << 32)
    return str(uuid.UUID(int=unbound | _binding(sender_node_id, unbound)))


def message_id_bound_to(message_id: str, sender_node_id: str) -> bool:
    """Whether `message_id` (already validated as a UUIDv7) was made for `sender_node_id`."""
    value = uuid.UUID(message_id).int
    unbound = value & ~_BINDING_MASK
    return value & _BINDING_MASK == _binding(sender_node_id, unbound)


def validate_message_id(value: str, field: str = "message_id") -> str:
    """`value` if it is a UUIDv7 in canonical lowercase text form."""
    try:
        parsed = uuid.UUID(value)
    except (ValueError, TypeError):
        raise ValidationError(field, "must be a UUID") from None
    if str(parsed) != value or parsed.version != 7 or parsed.variant != uuid.RFC_4122:
        raise ValidationError(field, "must be a UUIDv7 in canonical lowercase form")
    return value


def validate_node_id(value: str, field: str = "node_id") -> str:
    """`value` if it is a lowercase DNS label of 3 to 63 characters."""
    if not _NODE_ID.fullmatch(value):
        raise ValidationError(field, "must be 3 to 63 characters of a-z, 0-9 and '-'")
    return value


def validate_country(value: str, field: str = "country") -> str:
    """`value` if it is an ISO 3166-1 alpha-2 code in capitals."""
    if not _COUNTRY.fullmatch(value):
        raise ValidationError(field, "must be an ISO 3166-1 alpha-2 code such as XA")
    return value


def validate_case_reference(value: str, field: str = "case_reference") -> str:
    """`value` if it is an opaque reference of 1 to 64 characters."""
    if not _CASE_REFERENCE.fullmatch(value):
        raise ValidationError(
            field, "must be 1 to 64 characters of letters, digits and '._:/-', no spaces"
        )
    return value
