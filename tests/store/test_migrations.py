"""Migrations: Alembic brings a fresh database to the schema the tables declare."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import inspect, select, text

from exchange import merkle
from exchange.audit import check_log
from exchange.store import audit_log, migrate
from exchange.store.engine import Store
from exchange.store.tables import AUDIT_HEAD, metadata

from ._builders import START, audit_record, count_rows, millis


def test_a_fresh_database_has_no_revision_until_upgraded(databases):
    store = Store.open(databases.new_url(), sqlite_synchronous="NORMAL")
    try:
        assert migrate.current_revision(store) is None
        migrate.upgrade(store)
        assert migrate.current_revision(store) == migrate.head_revision()
    finally:
        store.dispose()


def test_the_migrated_schema_equals_the_declared_tables(store):
    assert migrate.schema_differences(store) == []
    tables = set(store.read(lambda c: inspect(c).get_table_names()))
    assert set(metadata.tables) <= tables


def test_schema_differences_notices_a_missing_index(store):
    # The comparison is not vacuous: a schema that drifted from the declarations is reported.
    store.write(lambda c: c.execute(text("DROP INDEX ix_outbox_due")))
    differences = migrate.schema_differences(store)
    assert any("ix_outbox_due" in repr(difference) for difference in differences)


def test_upgrading_twice_changes_nothing(store):
    store.write(lambda c: audit_log.append(c, [audit_record(1)]))

    migrate.upgrade(store)

    assert migrate.current_revision(store) == migrate.head_revision()
    assert migrate.schema_differences(store) == []
    assert count_rows(store, "audit_head") == 1
    assert store.read(audit_log.size) == 1


def test_the_audit_head_row_is_seeded_at_the_empty_tree(store):
    head = store.read(lambda c: c.execute(select(AUDIT_HEAD)).all())
    assert [(row.id, row.sequence, bytes(row.frontier)) for row in head] == [(1, 0, b"")]
    assert store.read(audit_log.size) == 0
    assert store.read(lambda c: audit_log.root(c, 0)) == merkle.EMPTY_ROOT


def test_the_first_append_continues_from_the_seeded_head(store):
    (sequence,) = store.write(lambda c: audit_log.append(c, [audit_record(1)]))
    (entry,) = store.read(lambda c: audit_log.entries_after(c, 0, 10))
    assert sequence == 1
    assert entry.leaf_hash == entry.expected_leaf_hash()
    assert entry.occurred_at_ms == millis(START) + 1000


def _migration_0004():  # type: ignore[no-untyped-def]
    path = Path(migrate.__file__).parent / "migrations" / "versions" / "0004_merkle_audit_log.py"
    spec = importlib.util.spec_from_file_location("migration_0004", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _old_chain(store: Store, count: int) -> None:
    """Entries as revisions 0001 to 0003 wrote them: a hash chain."""
    chained_hash = _migration_0004().chained_hash
    previous = bytes(32)
    columns = "sequence, occurred_at, actor, action, message_id, peer_node_id, details"
    for n in range(1, count + 1):
        row = SimpleNamespace(
            sequence=n,
            occurred_at=1_700_000_000_000 + n,
            actor="node:xa-police",
            action="notice.received",
            message_id=f"m{n}",
            peer_node_id="xb-prosecution",
            details=f'{{"n":"{n}"}}',
        )
        entry_hash = chained_hash(previous, row)
        store.write(
            lambda c, r=row, p=previous, e=entry_hash: c.execute(
                text(
                    f"INSERT INTO audit_entries ({columns}, previous_hash, entry_hash) "
                    "VALUES (:s, :t, :a, :ac, :m, :p, :d, :ph, :eh)"
                ),
                {
                    "s": r.sequence,
                    "t": r.occurred_at,
                    "a": r.actor,
                    "ac": r.action,
                    "m": r.message_id,
                    "p": r.peer_node_id,
                    "d": r.details,
                    "ph": p,
                    "eh": e,
                },
            )
        )
        previous = entry_hash
    store.write(
        lambda c: c.execute(
            text("UPDATE audit_head SET sequence = :s, entry_hash = :h"),
            {"s": count, "h": previous},
        )
    )


def test_an_intact_hash_chain_becomes_a_merkle_log(databases):
    store = Store.open(databases.new_url(), sqlite_synchronous="NORMAL")
    try:
        migrate.upgrade(store, "0003")
        _old_chain(store, 5)
        migrate.upgrade(store)
        entries = store.read(lambda c: list(audit_log.iter_entries(c)))
        assert [e.sequence for e in entries] == [1, 2, 3, 4, 5]
        assert check_log(entries, []).ok
        assert store.read(lambda c: audit_log.root(c, 5)) == merkle.root_of(
            [e.leaf_hash for e in entries]
        )
        # And it goes on growing from there.
        assert store.write(lambda c: audit_log.append(c, [audit_record(6)])) == [6]
    finally:
        store.dispose()


def test_a_chain_altered_before_the_upgrade_stops_it_and_changes_nothing(databases):
    store = Store.open(databases.new_url(), sqlite_synchronous="NORMAL")
    try:
        migrate.upgrade(store, "0003")
        _old_chain(store, 5)
        store.write(
            lambda c: c.execute(text("UPDATE audit_entries SET actor = 'admin' WHERE sequence = 3"))
        )
        with pytest.raises(RuntimeError, match="audit chain broken at entry 3"):
            migrate.upgrade(store)
        assert migrate.current_revision(store) == "0003"
    finally:
        store.dispose()


def test_notices_stored_before_0009_get_the_end_of_their_retention(databases):
    """The purge scanner reads retain_until: a notice stored before it existed is still purged."""
    store = Store.open(databases.new_url(), sqlite_synchronous="NORMAL")
    columns = (
        "message_id, direction, kind, sender_node_id, recipient_node_ids, case_reference,"
        " created_at, expires_at, received_at, onward_sharing, evidence_use, retention_days,"
        " state"
    )
    day = 86_400_000
    # (message id, direction, received_at, retention_days, state)
    old = [
        ("m-in", "incoming", T_OLD + 5_000, 30, "received"),
        ("m-out", "outgoing", None, 400, "sent"),
        ("m-purged", "incoming", T_OLD, 1, "purged"),
    ]
    try:
        migrate.upgrade(store, "0008")
        for message_id, direction, received_at, days, state in old:
            store.write(
                lambda c, m=message_id, d=direction, r=received_at, n=days, s=state: c.execute(
                    text(
                        f"INSERT INTO notices ({columns}) VALUES "
                        "(:m, :d, 1, 'xa-police', 'xb-police', 'XA-1', :t, :t, :r, 1, 1, :n, :s)"
                    ),
                    {"m": m, "d": d, "t": T_OLD, "r": r, "n": n, "s": s},
                )
            )
        migrate.upgrade(store)
        kept = dict(
            store.read(
                lambda c: c.execute(text("SELECT message_id, retain_until FROM notices")).all()
            )
        )
        # 400 days in milliseconds is past 2^31: the backfill computes in BIGINT.
        assert kept == {
            "m-in": T_OLD + 5_000 + 30 * day,
            "m-out": T_OLD + 400 * day,
            "m-purged": None,
        }
    finally:
        store.dispose()


T_OLD = 1_700_000_000_000
