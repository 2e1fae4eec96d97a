"""The stored audit log: gapless sequences, a verifiable hash chain, serialized appends."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from sqlalchemy import delete, select, update

from exchange.audit import first_broken_link
from exchange.store import audit_log
from exchange.store.engine import Store
from exchange.store.tables import AUDIT_ENTRIES, AUDIT_HEAD

from ._builders import audit_record


def append(store: Store, *numbers: int) -> list[int]:
    return store.write(lambda c: audit_log.append(c, [audit_record(n) for n in numbers]))


def stored_chain_break(store: Store) -> int | None:
    return store.read(lambda c: first_broken_link(audit_log.iter_entries(c)))


def test_sequences_are_gapless_from_one(store):
    assert append(store, 1) == [1]
    assert append(store, 2, 3, 4) == [2, 3, 4]
    assert append(store) == []
    assert append(store, 5, 6) == [5, 6]

    assert store.read(audit_log.size) == 6
    assert [e.sequence for e in store.read(lambda c: list(audit_log.iter_entries(c)))] == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]


def test_a_rolled_back_append_takes_no_sequence_number(store):
    append(store, 1)

    def append_then_fail(connection):
        audit_log.append(connection, [audit_record(2)])
        raise RuntimeError("the notice insert failed")

    with pytest.raises(RuntimeError):
        store.write(append_then_fail)

    assert append(store, 3) == [2]
    assert stored_chain_break(store) is None


def test_the_stored_chain_verifies(store):
    append(store, *range(1, 8))

    assert stored_chain_break(store) is None
    # Read back across page boundaries, too.
    entries = store.read(lambda c: list(audit_log.iter_entries(c, batch=3)))
    assert [e.sequence for e in entries] == list(range(1, 8))
    assert first_broken_link(entries) is None


def test_the_head_row_names_the_last_entry(store):
    append(store, 1, 2, 3)

    head = store.read(lambda c: c.execute(select(AUDIT_HEAD)).one())
    (last,) = store.read(lambda c: audit_log.entries_after(c, 2, 10))
    assert (head.sequence, bytes(head.entry_hash)) == (3, last.entry_hash)


def test_entries_after_pages_by_sequence(store):
    append(store, 1, 2, 3, 4)

    def sequences(after, limit):
        return [e.sequence for e in store.read(lambda c: audit_log.entries_after(c, after, limit))]

    assert sequences(0, 2) == [1, 2]
    assert sequences(2, 10) == [3, 4]
    assert sequences(4, 10) == []


TAMPERING = [
    # (what is done to the stored log, the sequence at which the chain breaks)
    pytest.param(
        update(AUDIT_ENTRIES).where(AUDIT_ENTRIES.c.sequence == 3).values(details='{"n":"x"}'),
        3,
        id="details-edited",
    ),
    pytest.param(
        update(AUDIT_ENTRIES).where(AUDIT_ENTRIES.c.sequence == 1).values(actor="admin"),
        1,
        id="first-entry-actor-edited",
    ),
    pytest.param(
        update(AUDIT_ENTRIES)
        .where(AUDIT_ENTRIES.c.sequence == 5)
        .values(occurred_at=AUDIT_ENTRIES.c.occurred_at + 1),
        5,
        id="last-entry-time-edited",
    ),
    pytest.param(
        update(AUDIT_ENTRIES).where(AUDIT_ENTRIES.c.sequence == 2).values(message_id="other"),
        2,
        id="message-id-edited",
    ),
    pytest.param(
        delete(AUDIT_ENTRIES).where(AUDIT_ENTRIES.c.sequence == 4),
        4,
        id="entry-removed",
    ),
    pytest.param(
        update(AUDIT_ENTRIES).where(AUDIT_ENTRIES.c.sequence == 2).values(entry_hash=bytes(32)),
        2,
        id="entry-hash-replaced",
    ),
]


@pytest.mark.parametrize(("tamper", "broken_at"), TAMPERING)
def test_tampering_with_a_stored_entry_is_detected_at_that_sequence(store, tamper, broken_at):
    append(store, 1, 2, 3, 4, 5)

    store.write(lambda c: c.execute(tamper))

    assert stored_chain_break(store) == broken_at


def test_an_entry_rehashed_after_editing_breaks_the_next_link(store):
    # An editor who also recomputes the edited entry's own hash is caught by its successor.
    append(store, 1, 2, 3, 4)
    (entry,) = store.read(lambda c: audit_log.entries_after(c, 1, 1))
    edited = dataclasses.replace(entry, details_json='{"n":"x"}')
    rehashed = edited.expected_hash()
    store.write(
        lambda c: c.execute(
            update(AUDIT_ENTRIES)
            .where(AUDIT_ENTRIES.c.sequence == 2)
            .values(details=edited.details_json, entry_hash=rehashed)
        )
    )

    assert stored_chain_break(store) == 3


THREADS = 6
APPENDS_PER_THREAD = 8


def test_appends_from_several_threads_at_once_keep_the_chain_gapless_and_valid(store):
    # Each append is its own write transaction; the audit_head row lock (PostgreSQL)
    # or the database write lock (SQLite) must serialize them.
    start = threading.Barrier(THREADS)
    returned: list[list[int]] = [[] for _ in range(THREADS)]
    errors: list[BaseException] = []

    def appender(index: int) -> None:
        try:
            start.wait()
            for n in range(APPENDS_PER_THREAD):
                record = audit_record(n, actor=f"node:writer-{index}")
                returned[index] += store.write(lambda c, r=record: audit_log.append(c, [r]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=appender, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    total = THREADS * APPENDS_PER_THREAD
    entries = store.read(lambda c: list(audit_log.iter_entries(c)))
    assert [e.sequence for e in entries] == list(range(1, total + 1))
    assert first_broken_link(entries) is None
    assert store.read(audit_log.size) == total
    assert sorted(s for mine in returned for s in mine) == list(range(1, total + 1))
    for index, mine in enumerate(returned):
        assert mine == sorted(mine), "one writer's appends are ordered"
        assert [e.actor for e in entries if e.sequence in mine] == [f"node:writer-{index}"] * len(
            mine
        )
