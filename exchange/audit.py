"""The audit log's entries, and checking a whole log against its signed heads.

Every submit, send attempt, delivery, receipt, read, disclosure, refusal,
withdrawal, purge and trust or client change is recorded as an `AuditRecord`:
ids, digests, actors and times, never content. Stored, a record becomes a
`LoggedEntry` and a leaf of the node's Merkle log (RFC 9162, `exchange.merkle`):
its leaf input is the tagged, length-prefixed encoding of every field,
sequence number included, so an entry cannot be edited or moved unnoticed.

The log's tamper evidence is its signed tree heads (`exchange.checkpoint`):
once a head is signed, and more so once a peer holds it, no entry below its
size can change without the root changing. `check_log` replays a whole log
and names the first bad entry.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence

from exchange import merkle
from exchange._encoding import encode
from exchange.checkpoint import TreeHead
from exchange.clock import to_millis

__all__ = ["AuditRecord", "LogCheck", "LoggedEntry", "canonical_details", "check_log"]

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
class LoggedEntry:
    """A stored audit entry: leaf number `sequence - 1` of the Merkle log.

    Attributes:
        sequence: 1 for the first entry; gapless.
        leaf_hash: the leaf hash as stored (recomputed by `expected_leaf_hash`).
    """

    sequence: int
    occurred_at_ms: int
    actor: str
    action: str
    message_id: str
    peer_node_id: str
    details_json: str
    leaf_hash: bytes

    @property
    def index(self) -> int:
        """The entry's leaf index in the Merkle tree."""
        return self.sequence - 1

    @staticmethod
    def of(sequence: int, record: AuditRecord) -> LoggedEntry:
        """The entry `record` becomes at `sequence`."""
        unhashed = LoggedEntry(
            sequence=sequence,
            occurred_at_ms=to_millis(record.occurred_at),
            actor=record.actor,
            action=record.action,
            message_id=record.message_id,
            peer_node_id=record.peer_node_id,
            details_json=canonical_details(record.details),
            leaf_hash=b"",
        )
        return dataclasses.replace(unhashed, leaf_hash=unhashed.expected_leaf_hash())

    def leaf_input(self) -> bytes:
        """The bytes this entry contributes to the tree: d(sequence - 1) of RFC 9162."""
        return encode(
            _TAG,
            self.sequence.to_bytes(8, "big"),
            self.occurred_at_ms.to_bytes(8, "big", signed=True),
            self.actor.encode(),
            self.action.encode(),
            self.message_id.encode(),
            self.peer_node_id.encode(),
            self.details_json.encode(),
        )

    def expected_leaf_hash(self) -> bytes:
        return merkle.leaf_hash(self.leaf_input())


@dataclasses.dataclass(frozen=True)
class LogCheck:
    """The outcome of replaying a whole log against its signed heads.

    Attributes:
        entries: how many entries were read.
        heads: how many signed heads were compared with the replayed tree.
        first_bad_sequence: the first entry that cannot be trusted, or None.
        problem: what was wrong there, in words.
    """

    entries: int
    heads: int
    first_bad_sequence: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.first_bad_sequence is None


def check_log(entries: Iterable[LoggedEntry], heads: Sequence[TreeHead]) -> LogCheck:
    """Replay `entries` (in stored order) and compare the tree with every signed head.

    Finds, at the first bad entry: a gap, a duplicate or a reordering (the
    sequence is not the next one), an edit (the fields no longer give the
    stored leaf hash), and an edit whose leaf hash was recomputed too (the
    replayed root differs from the first signed head that covers it: the bad
    entry is then the first one after the last head that still matches).
    A head larger than the log means the log was truncated.

    Args:
        heads: the node's signed heads, already verified as signed by it.
    """
    by_size = sorted(heads, key=lambda head: head.size)
    pending = list(reversed(by_size))
    frontier = merkle.Frontier.empty()
    last_matching = 0
    checked = 0
    for entry in entries:
        expected = frontier.size + 1
        if entry.sequence != expected:
            return LogCheck(
                frontier.size,
                checked,
                expected,
                f"entry {expected} is missing or out of order (found {entry.sequence})",
            )
        if entry.leaf_hash != entry.expected_leaf_hash():
            return LogCheck(frontier.size, checked, expected, f"entry {expected} was edited")
        frontier, _ = frontier.append(entry.leaf_hash)
        while pending and pending[-1].size == frontier.size:
            head = pending.pop()
            checked += 1
            if head.root != frontier.root():
                return LogCheck(
                    frontier.size,
                    checked,
                    last_matching + 1,
                    f"entries {last_matching + 1} to {head.size} do not give the root "
                    f"signed at size {head.size}",
                )
            last_matching = head.size
    if pending:
        largest = by_size[-1]
        return LogCheck(
            frontier.size,
            checked,
            frontier.size + 1,
            f"log truncated: a head was signed at size {largest.size}, "
            f"only {frontier.size} entries remain",
        )
    return LogCheck(frontier.size, checked)
