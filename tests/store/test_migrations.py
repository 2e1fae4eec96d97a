"""Migrations: Alembic brings a fresh database to the schema the tables declare."""

from __future__ import annotations

from sqlalchemy import inspect, select, text

from exchange import merkle
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
