"""Audit entries as Merkle leaves, and replaying a log against its signed heads.

The tampering table is the issue's promise: an entry edited, removed,
reordered, or the log truncated, is found at the first bad entry, whether or
not the editor also recomputed the stored leaf hash.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable

import pytest

from exchange import merkle
from exchange.audit import AuditRecord, LoggedEntry, canonical_details, check_log
from exchange.checkpoint import TreeHead

from ._builders import T0, message_id

Log = list[LoggedEntry]
LENGTH = 12


def record(n: int) -> AuditRecord:
    return AuditRecord(
        occurred_at=T0 + dt.timedelta(seconds=n),
        actor="node:xa-node" if n % 2 else "client:case-system",
        action="notice.received" if n % 2 else "notice.read",
        message_id=message_id(n),
        peer_node_id="xa-node" if n % 2 else "",
        details={"envelope_digest": f"{n:064x}", "reason": ""},
    )


def log(length: int = LENGTH) -> Log:
    return [LoggedEntry.of(sequence, record(sequence)) for sequence in range(1, length + 1)]


def head_at(entries: Log, size: int) -> TreeHead:
    root = merkle.root_of([e.leaf_hash for e in entries[:size]])
    return TreeHead("xa-node", size, root, T0)


# Heads signed over the honest log at sizes 4, 8 and 12.
HEADS = [head_at(log(), size) for size in (4, 8, 12)]


def edit(sequence: int, **fields: object) -> Callable[[Log], Log]:
    def apply(entries: Log) -> Log:
        i = sequence - 1
        return [*entries[:i], dataclasses.replace(entries[i], **fields), *entries[i + 1 :]]  # type: ignore[arg-type]

    return apply


def edit_and_rehash(sequence: int, **fields: object) -> Callable[[Log], Log]:
    """An editor who also recomputes the edited entry's stored leaf hash."""

    def apply(entries: Log) -> Log:
        edited = edit(sequence, **fields)(entries)
        entry = edited[sequence - 1]
        edited[sequence - 1] = dataclasses.replace(entry, leaf_hash=entry.expected_leaf_hash())
        return edited

    return apply


def remove(*sequences: int) -> Callable[[Log], Log]:
    return lambda entries: [e for e in entries if e.sequence not in sequences]


def swap(first: int, second: int) -> Callable[[Log], Log]:
    def apply(entries: Log) -> Log:
        swapped = list(entries)
        swapped[first - 1], swapped[second - 1] = swapped[second - 1], swapped[first - 1]
        return swapped

    return apply


def renumber(entries: Log) -> Log:
    """Entries renumbered 1..n and rehashed after a removal, as a careful forger would."""
    return [
        LoggedEntry.of(
            i,
            AuditRecord(
                occurred_at=dt.datetime.fromtimestamp(e.occurred_at_ms / 1000, dt.UTC),
                actor=e.actor,
                action=e.action,
                message_id=e.message_id,
                peer_node_id=e.peer_node_id,
                details=json.loads(e.details_json),
            ),
        )
        for i, e in enumerate(entries, start=1)
    ]


TAMPERING = [
    pytest.param(edit(3, actor="admin"), 3, id="edited-actor"),
    pytest.param(edit(3, action="notice.purged"), 3, id="edited-action"),
    pytest.param(edit(3, message_id=message_id(99)), 3, id="edited-message-id"),
    pytest.param(edit(3, peer_node_id="xc-node"), 3, id="edited-peer"),
    pytest.param(edit(3, details_json='{"reason":"x"}'), 3, id="edited-details"),
    pytest.param(edit(3, occurred_at_ms=0), 3, id="edited-time"),
    pytest.param(edit(3, leaf_hash=bytes(32)), 3, id="edited-leaf-hash"),
    pytest.param(edit(1, actor="admin"), 1, id="edited-first"),
    pytest.param(edit(12, actor="admin"), 12, id="edited-last"),
    # Rehashed edits pass the leaf check; the first signed head over them does not.
    pytest.param(
        edit_and_rehash(3, actor="admin"), 1, id="edited-and-rehashed-under-the-first-head"
    ),
    pytest.param(
        edit_and_rehash(6, actor="admin"), 5, id="edited-and-rehashed-under-the-second-head"
    ),
    pytest.param(remove(3), 3, id="removed"),
    pytest.param(remove(1), 1, id="removed-first"),
    pytest.param(lambda c: renumber(remove(6)(c)), 5, id="removed-renumbered-and-rehashed"),
    pytest.param(swap(2, 3), 2, id="reordered"),
    pytest.param(swap(1, 12), 1, id="first-and-last-swapped"),
    pytest.param(remove(3, 4), 3, id="removed-in-the-middle"),
    pytest.param(lambda c: [*c[:3], c[2], *c[3:]], 4, id="entry-duplicated"),
    pytest.param(lambda c: c[:10], 11, id="truncated"),
    pytest.param(lambda c: c[:4], 5, id="truncated-to-a-head"),
    pytest.param(lambda c: [], 1, id="emptied"),
    pytest.param(
        lambda c: [dataclasses.replace(e, sequence=e.sequence - 1) for e in c],
        1,
        id="numbered-from-zero",
    ),
]


@pytest.mark.parametrize(("tamper", "first_bad"), TAMPERING)
def test_check_log_names_the_first_bad_entry(tamper: Callable[[Log], Log], first_bad: int) -> None:
    outcome = check_log(tamper(log()), HEADS)
    assert not outcome.ok
    assert outcome.first_bad_sequence == first_bad, outcome.problem


def test_an_intact_log_matches_every_head() -> None:
    outcome = check_log(log(), HEADS)
    assert outcome.ok, outcome.problem
    assert (outcome.entries, outcome.heads) == (LENGTH, 3)


def test_an_empty_log_without_heads_is_intact() -> None:
    assert check_log([], []).ok


def test_entries_after_the_last_head_are_checked_leaf_by_leaf() -> None:
    longer = log(LENGTH + 3)
    assert check_log(longer, HEADS).ok
    assert check_log(edit(14, actor="admin")(longer), HEADS).first_bad_sequence == 14


def test_a_head_signed_over_another_history_is_a_mismatch_at_its_range() -> None:
    foreign = [LoggedEntry.of(i, dataclasses.replace(record(i), actor="x")) for i in range(1, 9)]
    heads = [HEADS[0], head_at(foreign, 8)]
    outcome = check_log(log(), heads)
    assert outcome.first_bad_sequence == 5
    assert "signed at size 8" in outcome.problem


def test_leaf_input_covers_the_sequence() -> None:
    assert LoggedEntry.of(1, record(1)).leaf_hash != LoggedEntry.of(2, record(1)).leaf_hash


def test_leaf_hash_is_the_rfc_9162_leaf_of_the_input() -> None:
    entry = LoggedEntry.of(1, record(1))
    assert entry.leaf_hash == merkle.leaf_hash(entry.leaf_input())
    assert entry.index == 0


def test_field_boundaries_are_unambiguous() -> None:
    # Moving characters from the actor into the action changes the hash.
    a = dataclasses.replace(record(1), actor="node:xa", action="-node.x")
    b = dataclasses.replace(record(1), actor="node:xa-node", action=".x")
    assert LoggedEntry.of(1, a).leaf_hash != LoggedEntry.of(1, b).leaf_hash


def test_details_are_hashed_in_one_canonical_form() -> None:
    forward = dataclasses.replace(record(1), details={"a": "1", "b": "2"})
    backward = dataclasses.replace(record(1), details={"b": "2", "a": "1"})
    assert LoggedEntry.of(1, forward) == LoggedEntry.of(1, backward)
    assert canonical_details({"b": "2", "a": "é"}) == '{"a":"\\u00e9","b":"2"}'


def test_times_before_the_epoch_are_logged() -> None:
    old = dataclasses.replace(record(1), occurred_at=dt.datetime(1969, 12, 31, tzinfo=dt.UTC))
    entry = LoggedEntry.of(1, old)
    assert entry.occurred_at_ms < 0
    assert check_log([entry], []).ok
