"""The stored audit log: gapless sequences, a Merkle tree that proves, serialized appends."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading

import pytest
from sqlalchemy import delete, event, select, update

from exchange import merkle
from exchange.audit import check_log
from exchange.store import AsyncStore, audit_log
from exchange.store.engine import Store
from exchange.store.tables import AUDIT_ENTRIES, AUDIT_HEAD

from ._builders import audit_record


def append(store: Store, *numbers: int) -> list[int]:
    return store.write(lambda c: audit_log.append(c, [audit_record(n) for n in numbers]))


def stored_log_break(store: Store) -> int | None:
    return store.read(lambda c: check_log(audit_log.iter_entries(c), []).first_bad_sequence)


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
    assert stored_log_break(store) is None


def test_the_stored_chain_verifies(store):
    append(store, *range(1, 8))

    assert stored_log_break(store) is None
    # Read back across page boundaries, too.
    entries = store.read(lambda c: list(audit_log.iter_entries(c, batch=3)))
    assert [e.sequence for e in entries] == list(range(1, 8))
    assert check_log(entries, []).ok


def test_the_head_row_holds_the_size_and_the_right_edge(store):
    append(store, 1, 2, 3)

    head = store.read(lambda c: c.execute(select(AUDIT_HEAD)).one())
    leaves = [e.leaf_hash for e in store.read(lambda c: list(audit_log.iter_entries(c)))]
    assert head.sequence == 3
    frontier = merkle.Frontier.from_bytes(3, bytes(head.frontier))
    assert frontier.root() == merkle.root_of(leaves)


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
        update(AUDIT_ENTRIES).where(AUDIT_ENTRIES.c.sequence == 2).values(leaf_hash=bytes(32)),
        2,
        id="leaf-hash-replaced",
    ),
]


@pytest.mark.parametrize(("tamper", "broken_at"), TAMPERING)
def test_tampering_with_a_stored_entry_is_detected_at_that_sequence(store, tamper, broken_at):
    append(store, 1, 2, 3, 4, 5)

    store.write(lambda c: c.execute(tamper))

    assert stored_log_break(store) == broken_at


def test_an_entry_rehashed_after_editing_no_longer_gives_the_stored_root(store):
    # An editor who also recomputes the leaf hash passes the leaf check, but the
    # root the stored subtrees give (what heads were signed over) is not the replay's.
    append(store, 1, 2, 3, 4)
    root_before = store.read(lambda c: audit_log.root(c, 4))
    (entry,) = store.read(lambda c: audit_log.entries_after(c, 1, 1))
    edited = dataclasses.replace(entry, details_json='{"n":"x"}')
    store.write(
        lambda c: c.execute(
            update(AUDIT_ENTRIES)
            .where(AUDIT_ENTRIES.c.sequence == 2)
            .values(details=edited.details_json, leaf_hash=edited.expected_leaf_hash())
        )
    )
    entries = store.read(lambda c: list(audit_log.iter_entries(c)))

    assert check_log(entries, []).ok
    assert merkle.root_of([e.leaf_hash for e in entries]) != root_before


def test_stored_roots_and_proofs_match_the_tree_of_the_leaves(store):
    size = 21
    append(store, *range(1, size + 1))
    leaves = [e.leaf_hash for e in store.read(lambda c: list(audit_log.iter_entries(c)))]

    for tree_size in range(1, size + 1):
        root = store.read(lambda c, n=tree_size: audit_log.root(c, n))
        assert root == merkle.root_of(leaves[:tree_size])
        for sequence in range(1, tree_size + 1):
            path = store.read(lambda c, s=sequence, n=tree_size: audit_log.inclusion_path(c, s, n))
            merkle.verify_inclusion(leaves[sequence - 1], sequence - 1, tree_size, path, root)
        for first in range(1, tree_size + 1):
            proof = store.read(lambda c, f=first, n=tree_size: audit_log.consistency_path(c, f, n))
            merkle.verify_consistency(first, tree_size, merkle.root_of(leaves[:first]), root, proof)


def test_the_empty_log_has_the_empty_root(store):
    assert store.read(lambda c: audit_log.root(c, 0)) == merkle.EMPTY_ROOT


def test_a_rolled_back_append_leaves_no_subtrees_behind(store):
    append(store, 1)

    def append_then_fail(connection):
        audit_log.append(connection, [audit_record(2), audit_record(3), audit_record(4)])
        raise RuntimeError("the notice insert failed")

    with pytest.raises(RuntimeError):
        store.write(append_then_fail)
    append(store, 5)

    leaves = [e.leaf_hash for e in store.read(lambda c: list(audit_log.iter_entries(c)))]
    assert store.read(lambda c: audit_log.root(c, 2)) == merkle.root_of(leaves)


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
    assert check_log(entries, []).ok
    assert store.read(lambda c: audit_log.root(c, total)) == merkle.root_of(
        [e.leaf_hash for e in entries]
    )
    assert store.read(audit_log.size) == total
    assert sorted(s for mine in returned for s in mine) == list(range(1, total + 1))
    for index, mine in enumerate(returned):
        assert mine == sorted(mine), "one writer's appends are ordered"
        assert [e.actor for e in entries if e.sequence in mine] == [f"node:writer-{index}"] * len(
            mine
        )


async def test_a_group_commit_keeps_the_appends_of_the_writes_that_committed(store):
    """Appends wait for the end of the transaction; a write rolled back takes its own along."""
    async_store = AsyncStore(store, lock_first=audit_log.lock)
    gate = threading.Event()

    def append_then_fail(connection):
        audit_log.append(connection, [audit_record(3)])
        raise RuntimeError("the notice insert failed")

    try:
        held = asyncio.ensure_future(async_store.write(lambda _c: gate.wait(5)))
        await asyncio.sleep(0.05)
        writes = [
            async_store.write(lambda c: audit_log.append(c, [audit_record(1), audit_record(2)])),
            async_store.write(append_then_fail),
            async_store.write(lambda c: audit_log.append(c, [audit_record(4)])),
        ]
        gate.set()
        await held
        outcomes = await asyncio.gather(*writes, return_exceptions=True)
    finally:
        async_store.close()

    assert outcomes[0] == [1, 2]
    assert isinstance(outcomes[1], RuntimeError)
    assert outcomes[2] == [3]
    entries = store.read(lambda c: list(audit_log.iter_entries(c)))
    assert [json.loads(e.details_json)["n"] for e in entries] == ["1", "2", "4"]
    assert check_log(entries, []).ok
    assert store.read(lambda c: audit_log.root(c, 3)) == merkle.root_of(
        [e.leaf_hash for e in entries]
    )


def test_a_transaction_reads_its_own_appends(store):
    append(store, 1)

    def append_and_read(connection):
        audit_log.append(connection, [audit_record(2), audit_record(3)])
        return (
            audit_log.size(connection),
            audit_log.entry(connection, 3),
            audit_log.root(connection, 2),
            audit_log.inclusion_path(connection, 2, 3),
        )

    size, third, root_of_two, path = store.write(append_and_read)

    leaves = [e.leaf_hash for e in store.read(lambda c: list(audit_log.iter_entries(c)))]
    assert size == 3
    assert third is not None
    assert third.leaf_hash == leaves[2]
    assert root_of_two == merkle.root_of(leaves[:2])
    merkle.verify_inclusion(leaves[1], 1, 3, path, merkle.root_of(leaves))


def test_a_transaction_reads_and_writes_the_head_once_however_many_appends(store):
    append(store, 1)
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args):
        statements.append(statement)

    def many_appends(connection):
        for n in range(2, 7):
            audit_log.append(connection, [audit_record(n)])

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        store.write(many_appends)
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)

    touching_head = [s for s in statements if "audit_head" in s]
    assert len(touching_head) == 2, touching_head  # one read (locking), one update
    assert sum("INSERT INTO audit_entries" in s for s in statements) == 1
    assert stored_log_break(store) is None
    assert store.read(audit_log.size) == 6


def test_an_append_outside_a_store_transaction_is_written_at_once(store):
    with store.engine.begin() as connection:
        assert audit_log.append(connection, [audit_record(1)]) == [1]
    assert store.read(audit_log.size) == 1
    assert stored_log_break(store) is None
