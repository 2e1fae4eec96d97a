"""Opening the store and running transactions: refusals, locks, rollbacks."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Connection, event, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError

from exchange.errors import ConfigError, StoreUnavailableError
from exchange.store import AsyncStore, migrate, registry
from exchange.store.engine import Store, _unavailable
from exchange.store.tables import ENVELOPES, TRUST_LISTS
from tests.conftest import terminate_backends

from ._builders import count_rows

REFUSED_URLS = [
    pytest.param("mysql://user@localhost/exchange", "unsupported engine", id="mysql"),
    pytest.param("oracle://user@localhost/exchange", "unsupported engine", id="oracle"),
    pytest.param("not a database url", "not a database URL", id="garbage"),
    pytest.param("sqlite://", "not memory", id="sqlite-without-a-file"),
    pytest.param("sqlite:///:memory:", "not memory", id="sqlite-in-memory"),
]


@pytest.mark.parametrize(("url", "message"), REFUSED_URLS)
def test_open_refuses_unknown_engines_and_in_memory_sqlite(url, message):
    with pytest.raises(ConfigError, match=message):
        Store.open(url)


def test_a_plain_postgresql_url_is_opened_with_psycopg():
    # Opening does not connect: no server is needed to check the driver choice.
    store = Store.open("postgresql://postgres@127.0.0.1:5432/test")
    try:
        assert (store.engine.dialect.name, store.engine.dialect.driver) == (
            "postgresql",
            "psycopg",
        )
        assert not store.is_sqlite
    finally:
        store.dispose()


def test_an_unreachable_postgresql_server_is_store_unavailable():
    # Port 1 on loopback refuses connections at once.
    store = Store.open("postgresql+psycopg://postgres@127.0.0.1:1/test")
    try:
        with pytest.raises(StoreUnavailableError, match="retry"):
            store.read(lambda c: None)
    finally:
        store.dispose()


def _url(store: Store) -> str:
    return store.engine.url.render_as_string(hide_password=False)


@pytest.fixture
def impatient(store: Store) -> Iterator[Store]:
    """A second Store on the same database whose writers give up after 100 ms."""
    opened = Store.open(_url(store), lock_timeout_ms=100)
    try:
        yield opened
    finally:
        opened.dispose()


def trust_list(version: int):
    def insert_it(connection):
        registry.insert_trust_list(
            connection, version=version, signed=b"v%d" % version, expires_at=2, installed_at=1
        )
        return version

    return insert_it


SQLITE_PRAGMAS = [
    pytest.param("journal_mode", "wal", id="write-ahead-log"),
    pytest.param("foreign_keys", 1, id="foreign-keys-enforced"),
    pytest.param("synchronous", 1, id="synchronous-as-opened-NORMAL"),
    pytest.param("busy_timeout", 10_000, id="default-busy-timeout-10s"),
]


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("pragma", "value"), SQLITE_PRAGMAS)
def test_sqlite_connections_are_configured(store, pragma, value):
    assert store.read(lambda c: c.exec_driver_sql(f"PRAGMA {pragma}").scalar()) == value


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
def test_sqlite_busy_timeout_is_a_parameter(impatient):
    assert impatient.read(lambda c: c.exec_driver_sql("PRAGMA busy_timeout").scalar()) == 100


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
def test_a_locked_sqlite_database_makes_a_write_unavailable_and_commits_nothing(store, impatient):
    called = threading.Event()

    def write(connection):
        called.set()
        return trust_list(1)(connection)

    # Another process holds the write lock in an open transaction.
    other = sqlite3.connect(store.engine.url.database, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailableError, match="database is locked; retry"):
            impatient.write(write)
        # WAL: readers are not blocked by the writer.
        assert impatient.read(registry.latest_trust_list) is None
        other.execute("ROLLBACK")
    finally:
        other.close()

    assert not called.is_set(), "the lock is taken before the function runs"
    assert count_rows(store, "trust_lists") == 0
    assert impatient.write(trust_list(1)) == 1


def test_write_returns_what_the_function_returns(store):
    assert store.write(trust_list(5)) == 5
    assert store.read(registry.latest_trust_list) == b"v5"


def test_a_function_raising_inside_write_rolls_everything_back(store):
    store.write(trust_list(1))

    def two_inserts_then_fail(connection):
        trust_list(2)(connection)
        trust_list(3)(connection)
        raise LookupError("the function's own error")

    with pytest.raises(LookupError, match="the function's own error"):
        store.write(two_inserts_then_fail)

    assert count_rows(store, "trust_lists") == 1
    assert store.read(registry.latest_trust_list) == b"v1"


def test_a_constraint_violation_is_not_mistaken_for_unavailability(store):
    # An envelope without its notice breaks the foreign key on both engines.
    orphan = {
        "message_id": "0190a0a0-0000-7000-8000-000000000000",
        "header": b"h",
        "sealed_payload": b"p",
        "signature": b"s",
        "digest": b"d",
    }

    with pytest.raises(IntegrityError):
        store.write(lambda c: c.execute(insert(ENVELOPES).values(**orphan)))

    assert count_rows(store, "envelopes") == 0


async def test_async_store_runs_calls_off_the_event_loop(store):
    async_store = AsyncStore(store, readers=2)
    try:
        written = await async_store.write(lambda c: (trust_list(4)(c), threading.current_thread()))
        read = await async_store.read(
            lambda c: (registry.latest_trust_list(c), threading.current_thread())
        )
    finally:
        async_store.close()

    assert written[0] == 4
    assert read[0] == b"v4"
    assert written[1].name == "store-write"
    assert read[1].name.startswith("store-read")
    assert threading.current_thread() not in (written[1], read[1])


async def test_a_store_never_holds_more_connections_than_its_pool(databases):
    """The pool is a budget (a server's connections are shared by every process on it):
    the readers, the writer and a caller outside both take turns beyond it."""
    store = Store.open(databases.new_url(), pool_size=4, sqlite_synchronous="NORMAL")
    opened = []
    event.listen(store.engine, "connect", lambda dbapi, _record: opened.append(dbapi))
    migrate.upgrade(store)
    async_store = AsyncStore(store, readers=3)

    def slow_read(connection):
        time.sleep(0.01)  # holds its connection while the others ask for theirs
        return registry.latest_trust_list(connection)

    try:
        calls = [async_store.read(slow_read) for _ in range(30)]
        calls += [async_store.write(trust_list(v)) for v in range(1, 11)]
        calls += [asyncio.to_thread(store.read, slow_read) for _ in range(6)]
        outcomes = await asyncio.gather(*calls)
    finally:
        async_store.close()

    assert outcomes[30:40] == list(range(1, 11))
    assert 1 <= len(opened) <= 4


def test_a_caller_finding_no_free_connection_in_time_is_told_unavailable(databases):
    store = Store.open(databases.new_url(), pool_size=1, lock_timeout_ms=200)
    try:
        migrate.upgrade(store)
        # The pool's one connection, held.
        with (
            store.engine.connect(),
            pytest.raises(StoreUnavailableError, match="no store connection"),
        ):
            store.read(registry.latest_trust_list)
        assert store.read(registry.latest_trust_list) is None, "free again"
    finally:
        store.dispose()


async def test_group_commit_rolls_back_only_the_write_that_failed(store):
    """Writes queued together share one commit; each succeeds or fails on its own."""
    async_store = AsyncStore(store)
    gate = threading.Event()

    def hold(_connection):
        gate.wait(5)  # keeps the writer busy while the others queue up

    def duplicate(connection):
        trust_list(7)(connection)  # violates the primary key of version 7 below

    try:
        held = asyncio.ensure_future(async_store.write(hold))
        await asyncio.sleep(0.05)
        writes = [async_store.write(trust_list(v)) for v in (5, 6, 7)]
        writes.append(async_store.write(duplicate))
        writes.append(async_store.write(trust_list(8)))
        gate.set()
        await held
        outcomes = await asyncio.gather(*writes, return_exceptions=True)
    finally:
        async_store.close()

    assert outcomes[:3] == [5, 6, 7]
    assert isinstance(outcomes[3], IntegrityError)
    assert outcomes[4] == 8
    stored = store.read(lambda c: [row.version for row in c.execute(select(TRUST_LISTS.c.version))])
    assert sorted(stored) == [5, 6, 7, 8]


async def test_a_group_commit_that_fails_nowhere_takes_no_savepoints(store):
    """A savepoint per write costs two round trips on PostgreSQL: only a batch in which
    a write failed pays for them (it runs again, each write in its own)."""
    async_store = AsyncStore(store)
    gate = threading.Event()
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args):
        statements.append(statement.upper())

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        held = asyncio.ensure_future(async_store.write(lambda _c: gate.wait(5)))
        await asyncio.sleep(0.05)
        clean = [async_store.write(trust_list(v)) for v in (5, 6, 7)]
        gate.set()
        await held
        assert await asyncio.gather(*clean) == [5, 6, 7]
        assert not [s for s in statements if "SAVEPOINT" in s]

        gate.clear()
        held = asyncio.ensure_future(async_store.write(lambda _c: gate.wait(5)))
        await asyncio.sleep(0.05)
        mixed = [async_store.write(trust_list(8)), async_store.write(trust_list(5))]
        gate.set()
        await held
        outcomes = await asyncio.gather(*mixed, return_exceptions=True)
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
        async_store.close()

    assert outcomes[0] == 8
    assert isinstance(outcomes[1], IntegrityError)
    assert [s for s in statements if s.startswith("SAVEPOINT")]
    stored = store.read(lambda c: [row.version for row in c.execute(select(TRUST_LISTS.c.version))])
    assert sorted(stored) == [5, 6, 7, 8]


async def test_a_write_whose_caller_gave_up_before_it_ran_is_not_made(store):
    async_store = AsyncStore(store)
    gate = threading.Event()
    try:
        held = asyncio.ensure_future(async_store.write(lambda _c: gate.wait(5)))
        await asyncio.sleep(0.05)
        abandoned = asyncio.ensure_future(async_store.write(trust_list(9)))
        await asyncio.sleep(0.05)
        abandoned.cancel()
        gate.set()
        await held
        assert await async_store.write(trust_list(10)) == 10
    finally:
        async_store.close()
    stored = store.read(lambda c: [row.version for row in c.execute(select(TRUST_LISTS.c.version))])
    assert stored == [10]


async def test_writing_to_a_closed_store_is_refused_not_left_waiting(store):
    async_store = AsyncStore(store)
    async_store.close()
    with pytest.raises(StoreUnavailableError, match="closed"):
        await async_store.write(trust_list(11))


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
async def test_a_write_that_fills_sqlite_fails_its_whole_batch_none_is_told_it_committed(store):
    """SQLite answers a full database by rolling back the whole transaction, not only the
    failing write's savepoint: the writes batched before it are gone, and none after it
    may commit on its own. Each caller must hear that its write failed."""
    async_store = AsyncStore(store)
    gate = threading.Event()

    @event.listens_for(store.engine, "checkout")
    def full(dbapi_connection, _record, _proxy):
        # The database may not grow by a single page.
        cursor = dbapi_connection.cursor()
        pages = cursor.execute("PRAGMA page_count").fetchone()[0]
        cursor.execute(f"PRAGMA max_page_count={pages}")
        cursor.close()

    def too_big(connection):
        registry.insert_trust_list(
            connection, version=6, signed=bytes(100_000), expires_at=2, installed_at=1
        )

    try:
        held = asyncio.ensure_future(async_store.write(lambda _c: gate.wait(5)))
        await asyncio.sleep(0.05)
        writes = [
            async_store.write(trust_list(5)),  # fits in a page the database has
            async_store.write(too_big),  # needs new pages: the database is full
            async_store.write(trust_list(7)),
        ]
        gate.set()
        await held
        outcomes = await asyncio.gather(*writes, return_exceptions=True)
    finally:
        async_store.close()
        event.remove(store.engine, "checkout", full)

    stored = store.read(lambda c: [row.version for row in c.execute(select(TRUST_LISTS.c.version))])
    assert stored == []
    assert [type(outcome) for outcome in outcomes] == [StoreUnavailableError] * 3
    assert all("database is full" in str(outcome) for outcome in outcomes)


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
def test_a_lock_held_elsewhere_makes_a_postgresql_write_unavailable_not_wait(store):
    """PostgreSQL's writers give up on a held lock as SQLite's do (lock_timeout)."""
    impatient = Store.open(_url(store), lock_timeout_ms=100)
    holder = store.engine.connect()
    try:
        holder.exec_driver_sql("LOCK TABLE trust_lists IN EXCLUSIVE MODE")
        with pytest.raises(StoreUnavailableError, match="database is locked; retry"):
            impatient.write(trust_list(1))
        holder.rollback()
        assert impatient.write(trust_list(1)) == 1
    finally:
        holder.close()
        impatient.dispose()
    assert count_rows(store, "trust_lists") == 1


@pytest.mark.parametrize(
    ("driver_message", "told"),
    [
        ("database or disk is full", "database is full"),
        ('could not extend file "base/1/2": No space left on device', "database is full"),
        ("disk I/O error", "database unavailable"),
        ("database is locked", "database is locked"),
        ("canceling statement due to lock timeout", "database is locked"),
    ],
)
def test_a_driver_error_is_told_as_what_it_means(driver_message: str, told: str) -> None:
    error = OperationalError("INSERT ...", {}, Exception(driver_message))
    unavailable = _unavailable(error)
    assert unavailable is not None
    assert str(unavailable).startswith(told)


def _backend_pids_at_once(store: Store, connections: int) -> set[int]:
    """The server's process ids of `connections` pool connections, all taken at once."""
    together = threading.Barrier(connections)

    def pid(connection: Connection) -> int:
        together.wait(timeout=10)
        return int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

    with ThreadPoolExecutor(connections) as threads:
        return set(threads.map(lambda _: store.read(pid), range(connections)))


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
def test_connections_the_server_ended_cost_one_call_told_to_retry(store):
    """There is no ping before each transaction (a round trip on every call): after the
    server ends the pool's connections (a restart, a failover), the first call on one
    is told to retry, nothing of it committed, and that replaces every other one."""
    ended = _backend_pids_at_once(store, 3)
    assert len(ended) == 3
    terminate_backends(ended)

    outcomes: list[int | str] = []
    for version in range(1, 5):
        try:
            outcomes.append(store.write(trust_list(version)))
        except StoreUnavailableError as exc:
            outcomes.append(str(exc))
    assert outcomes == ["database connection lost; retry", 2, 3, 4]
    assert count_rows(store, "trust_lists") == 3
    assert not _backend_pids_at_once(store, 3) & ended
