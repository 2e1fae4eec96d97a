"""The audit log's entries and their hash chain.

Every submit, delivery, receipt, read, refusal and trust or client change is
recorded as an `AuditRecord`: ids, digests, actors and times, never content.
Entries are chained: each entry's hash covers the previous entry's hash, its
sequence number and its fields, so editing, removing or reordering an entry
breaks every later hash. (A Merkle log with signed tree heads replaces the chain
as the proof structure in a later step; the entries stay the same.)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Mapping

from exchange._encoding import tagged_digest
from exchange.clock import to_millis

__all__ = ["GENESIS_HASH", "AuditRecord", "ChainedEntry", "canonical_details", "first_broken_link"]

GENESIS_HASH = bytes(32)
_TAG = "exchange.v1.AuditEntry"


@dataclasses.dataclass(frozen=True)
class AuditRecord:
    """What happened, by whom, to which message, when.

    Attributes:
        actor: "client:<name>", "node:<node id>" or "admin".
        action: a dotted verb such as "notice.received".
        details: flat map of ids, digests (hex) and reasons; never content.
    """

    occurred_at: dt.datetime
    actor: str
    action: str
    message_id: str = ""
    peer_node_id: str = ""
    details: Mapping[str, str] = dataclasses.field(default_factory=dict)


def canonical_details(details: Mapping[str, str]) -> str:
    """The one JSON text of `details` that is hashed and stored."""
    return json.dumps(dict(details), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


@dataclasses.dataclass(frozen=True)
class ChainedEntry:
    """A stored audit entry with its place in the chain."""

    sequence: int
    occurred_at_ms: int
    actor: str
    action: str
    message_id: str
    peer_node_id: str
    details_json: str
    previous_hash: bytes
    entry_hash: bytes

    @staticmethod
    def chain(previous_hash: bytes, sequence: int, record: AuditRecord) -> ChainedEntry:
        """The entry that follows `previous_hash` at `sequence`."""
        unhashed = ChainedEntry(
            sequence=sequence,
            occurred_at_ms=to_millis(record.occurred_at),
            actor=record.actor,
            action=record.action,
            message_id=record.message_id,
            peer_node_id=record.peer_node_id,
            details_json=canonical_details(record.details),
            previous_hash=previous_hash,
            entry_hash=b"",
        )
        return dataclasses.replace(unhashed, entry_hash=unhashed.expected_hash())

    def expected_hash(self) -> bytes:
        """SHA-256 over the previous hash and every field of this entry."""
        return tagged_digest(
            _TAG,
            self.previous_hash,
            self.sequence.to_bytes(8, "big"),
            self.occurred_at_ms.to_bytes(8, "big", signed=True),
            self.actor.encode(),
            self.action.encode(),
            self.message_id.encode(),
            self.peer_node_id.encode(),
            self.details_json.encode(),
        )


def first_broken_link(entries: Iterable[ChainedEntry]) -> int | None:
    """The sequence number of the first entry that breaks the chain, or None.

    Entries must be given in sequence order starting at 1; a gap, a reordering,
    an edited field or a wrong link all break the chain at that entry.
    """
    previous = GENESIS_HASH
    expected_sequence = 1
    for entry in entries:
        if (
            entry.sequence != expected_sequence
            or entry.previous_hash != previous
            or entry.entry_hash != entry.expected_hash()
        ):
            return expected_sequence
        previous = entry.entry_hash
        expected_sequence += 1
    return None
