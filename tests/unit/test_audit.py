"""The audit chain: editing, removing or reordering an entry is found, at the first bad one."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import pytest

from exchange.audit import (
    GENESIS_HASH,
    AuditRecord,
    ChainedEntry,
    canonical_details,
    first_broken_link,
)

from ._builders import T0, message_id

Chain = list[ChainedEntry]


def record(n: int) -> AuditRecord:
    return AuditRecord(
        occurred_at=T0 + dt.timedelta(seconds=n),
        actor="node:xa-node" if n % 2 else "client:case-system",
        action="notice.received" if n % 2 else "notice.read",
        message_id=message_id(n),
        peer_node_id="xa-node" if n % 2 else "",
        details={"envelope_digest": f"{n:064x}", "reason": ""},
    )


def chain(length: int = 6) -> Chain:
    entries: Chain = []
    previous = GENESIS_HASH
    for sequence in range(1, length + 1):
        entry = ChainedEntry.chain(previous, sequence, record(sequence))
        entries.append(entry)
        previous = entry.entry_hash
    return entries


def edit(sequence: int, **fields: object) -> Callable[[Chain], Chain]:
    def apply(entries: Chain) -> Chain:
        i = sequence - 1
        return [*entries[:i], dataclasses.replace(entries[i], **fields), *entries[i + 1 :]]  # type: ignore[arg-type]

    return apply


def edit_and_rehash(sequence: int, **fields: object) -> Callable[[Chain], Chain]:
    """An editor who also recomputes the edited entry's own hash."""

    def apply(entries: Chain) -> Chain:
        edited = edit(sequence, **fields)(entries)
        entry = edited[sequence - 1]
        edited[sequence - 1] = dataclasses.replace(entry, entry_hash=entry.expected_hash())
        return edited

    return apply


def remove(*sequences: int) -> Callable[[Chain], Chain]:
    return lambda entries: [e for e in entries if e.sequence not in sequences]


def swap(first: int, second: int) -> Callable[[Chain], Chain]:
    def apply(entries: Chain) -> Chain:
        swapped = list(entries)
        swapped[first - 1], swapped[second - 1] = swapped[second - 1], swapped[first - 1]
        return swapped

    return apply


def renumber(entries: Chain) -> Chain:
    """Entries renumbered 1..n after a removal, as a careless editor would."""
    return [dataclasses.replace(e, sequence=i) for i, e in enumerate(entries, start=1)]


TAMPERING = [
    pytest.param(edit(3, actor="admin"), 3, id="edited-actor"),
    pytest.param(edit(3, action="notice.purged"), 3, id="edited-action"),
    pytest.param(edit(3, message_id=message_id(99)), 3, id="edited-message-id"),
    pytest.param(edit(3, peer_node_id="xc-node"), 3, id="edited-peer"),
    pytest.param(edit(3, details_json='{"reason":"x"}'), 3, id="edited-details"),
    pytest.param(edit(3, occurred_at_ms=0), 3, id="edited-time"),
    pytest.param(edit(3, entry_hash=bytes(32)), 3, id="edited-hash"),
    pytest.param(edit(3, previous_hash=bytes(32)), 3, id="edited-link"),
    pytest.param(edit(1, actor="admin"), 1, id="edited-first"),
    pytest.param(edit(6, actor="admin"), 6, id="edited-last"),
    pytest.param(edit_and_rehash(3, actor="admin"), 4, id="edited-and-rehashed"),
    pytest.param(remove(3), 3, id="removed"),
    pytest.param(remove(1), 1, id="removed-first"),
    pytest.param(lambda c: renumber(remove(3)(c)), 3, id="removed-and-renumbered"),
    pytest.param(swap(2, 3), 2, id="reordered"),
    pytest.param(swap(1, 6), 1, id="first-and-last-swapped"),
    pytest.param(remove(3, 4), 3, id="truncated-in-the-middle"),
    pytest.param(lambda c: [*c[:3], c[2], *c[3:]], 4, id="entry-duplicated"),
    pytest.param(
        lambda c: [dataclasses.replace(e, sequence=e.sequence - 1) for e in c],
        1,
        id="numbered-from-zero",
    ),
]


@pytest.mark.parametrize(("tamper", "first_bad"), TAMPERING)
def test_first_broken_link_names_the_first_bad_sequence(
    tamper: Callable[[Chain], Chain], first_bad: int
) -> None:
    assert first_broken_link(tamper(chain())) == first_bad


def test_intact_chain_has_no_broken_link() -> None:
    assert first_broken_link(chain()) is None


def test_empty_chain_has_no_broken_link() -> None:
    assert first_broken_link([]) is None


def test_chain_not_starting_at_the_genesis_hash_is_broken_at_one() -> None:
    rooted_elsewhere = ChainedEntry.chain(bytes([1]) * 32, 1, record(1))
    assert first_broken_link([rooted_elsewhere]) == 1


def test_entry_hash_covers_the_previous_hash() -> None:
    assert (
        ChainedEntry.chain(GENESIS_HASH, 1, record(1)).entry_hash
        != ChainedEntry.chain(bytes([1]) * 32, 1, record(1)).entry_hash
    )


def test_entry_hash_covers_the_sequence() -> None:
    assert (
        ChainedEntry.chain(GENESIS_HASH, 1, record(1)).entry_hash
        != ChainedEntry.chain(GENESIS_HASH, 2, record(1)).entry_hash
    )


def test_field_boundaries_are_unambiguous() -> None:
    # Moving characters from the actor into the action changes the hash.
    a = dataclasses.replace(record(1), actor="node:xa", action="-node.x")
    b = dataclasses.replace(record(1), actor="node:xa-node", action=".x")
    assert (
        ChainedEntry.chain(GENESIS_HASH, 1, a).entry_hash
        != ChainedEntry.chain(GENESIS_HASH, 1, b).entry_hash
    )


def test_details_are_hashed_in_one_canonical_form() -> None:
    forward = dataclasses.replace(record(1), details={"a": "1", "b": "2"})
    backward = dataclasses.replace(record(1), details={"b": "2", "a": "1"})
    assert ChainedEntry.chain(GENESIS_HASH, 1, forward) == ChainedEntry.chain(
        GENESIS_HASH, 1, backward
    )
    assert canonical_details({"b": "2", "a": "é"}) == '{"a":"\\u00e9","b":"2"}'


def test_times_before_the_epoch_are_chained() -> None:
    old = dataclasses.replace(record(1), occurred_at=dt.datetime(1969, 12, 31, tzinfo=dt.UTC))
    entry = ChainedEntry.chain(GENESIS_HASH, 1, old)
    assert entry.occurred_at_ms < 0
    assert first_broken_link([entry]) is None
