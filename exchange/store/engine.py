"""Opening the store and running transactions on it.

SQLite (WAL) is the embedded default, one file per node; PostgreSQL is the
scale-out engine. Both are reached through one `Store`:

- `Store.write(fn)` runs `fn(connection)` in one write transaction. On SQLite
  it begins with BEGIN IMMEDIATE, so a writer waits (busy timeout) for the lock
  up front instead of failing when a read transaction tries to upgrade.
- `Store.read(fn)` runs `fn(connection)` in a read transaction.
- `AsyncStore` runs the same calls in a bounded thread pool, so the gRPC event
  loop never blocks on the database.

Driver errors that mean "try again later" (locked, full, disconnected) become
`StoreUnavailableError`; nothing of such a transaction is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import queue
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError, PendingRollbackError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from exchange.errors import ConfigError, StoreUnavailableError
from exchange.store import coordination, pending

__all__ = ["AsyncStore", "Store", "sqlite_url"]

T = TypeVar("T")

_LOCK_TIMEOUT_MS = 10_000
# PostgreSQL connections older than this are replaced when next taken from the pool.
_RECYCLE_SECONDS = 180


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _configure_sqlite(engine: Engine, synchronous: str, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives power loss, not only a crash of the process.
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Deleted content (a purge) is overwritten with zeros, not left in free pages.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        # 64 MiB of pages per connection (SQLite's default is 2 MiB): the hit/no-hit index's
        # B-trees outgrow the default at a few hundred thousand identifiers.
        cursor.execute("PRAGMA cache_size=-65536")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def _configure_postgresql(engine: Engine, lock_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Without it a statement waits for a lock as long as its holder keeps it, and
        # with it the store's one writer thread: every write of the node would hang.
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
        cursor.close()
        dbapi_connection.commit()


class Store:
    """A node's database, SQLite or PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        # Names this store's change notifications, so its own process can ignore them.
        self.sender = secrets.token_hex(8)

    @staticmethod
    def open(
        url: str,
        *,
        pool_size: int = 8,
        sqlite_synchronous: str = "FULL",
        lock_timeout_ms: int = _LOCK_TIMEOUT_MS,
    ) -> Store:
        """Open the database at `url` (sqlite:///path or postgresql+psycopg://...).

        Args:
            pool_size: connections the store holds at most; a thread that
                asks for one more waits until one is returned.
            lock_timeout_ms: how long a statement waits for a lock another
                session holds (SQLite's busy timeout, PostgreSQL's lock_timeout),
                or a caller for a free connection of the pool, before
                `StoreUnavailableError`.
        """
        try:
            parsed = make_url(url)
        except Exception as exc:
            raise ConfigError(f"database_url {url!r} is not a database URL") from exc
        if parsed.get_backend_name() == "sqlite":
            if not parsed.database or parsed.database == ":memory:":
                raise ConfigError("database_url must name a SQLite file, not memory")
            engine = create_engine(
                parsed,
                # Driver errors must never carry case references or signed bytes into logs.
                hide_parameters=True,
                connect_args={
                    "check_same_thread": False,
                    "timeout": lock_timeout_ms / 1000,
                },
                pool_size=pool_size,
                max_overflow=0,
                pool_timeout=lock_timeout_ms / 1000,
            )
            _configure_sqlite(engine, sqlite_synchronous, lock_timeout_ms)
        elif parsed.get_backend_name() == "postgresql":
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+psycopg")
            engine = create_engine(
                parsed,
                hide_parameters=True,
                pool_size=pool_size,
                # A budget, not a hint: a server's connections are shared by every
                # process of every node on it.
                max_overflow=0,
                pool_timeout=lock_timeout_ms / 1000,
                # No ping before each transaction: it is a round trip on the path of every
                # read and write. A transaction on a connection the server has ended fails
                # instead (StoreUnavailableError: retry), and the first such failure
                # replaces every connection of the pool opened before it. Connections
                # are reopened after _RECYCLE_SECONDS, under the idle timeouts of common
                # load balancers, so one a firewall or proxy dropped unseen does not linger.
                pool_pre_ping=False,
                pool_recycle=_RECYCLE_SECONDS,
            )
            _configure_postgresql(engine, lock_timeout_ms)
            # The node's other processes hear of new inbox events and outbox rows.
            coordination.notify_inserts(engine)
        else:
            raise ConfigError(
                f"database_url: unsupported engine {parsed.get_backend_name()!r} "
                "(use sqlite or postgresql)"
            )
        return Store(engine)

    @contextlib.contextmanager
    def _transaction(self, write: bool) -> Iterator[Connection]:
        try:
            with self.engine.connect() as connection:
                if self.is_sqlite and write:
                    connection.execution_options(sqlite_begin="IMMEDIATE")
                coordination.forget_marked(connection)
                pending.begin(connection)
                try:
                    with connection.begin():
                        yield connection
                        pending.flush(connection)
                        # Last before commit: the other processes of the node hear of it at commit.
                        coordination.send_marked(connection, self.sender)
                finally:
                    pending.end(connection)
        except DBAPIError as exc:
            raise _unavailable(exc) or exc from exc
        except PoolTimeoutError as exc:
            # Every connection of the budget is in use (Store.open's pool_size).
            raise StoreUnavailableError("no store connection came free in time; retry") from exc
        except PendingRollbackError as exc:
            # The connection died inside the transaction (a write of a group commit caught
            # the driver's error in its savepoint): nothing of it is committed.
            raise StoreUnavailableError("database connection lost; retry") from exc

    def hold_serving(self) -> Callable[[], None]:
        """Claim the store for one `serve` process; returns the release.

        SQLite serves one process: its writers would queue on the file lock, and
        the processes would not hear of each other's changes. A second `serve` on
        the same file is refused while the first holds an exclusive lock on a
        file beside it (released by the kernel if the process dies, even by
        SIGKILL). PostgreSQL serves several processes of the node: nothing to hold.

        Raises:
            ConfigError: another process serves this SQLite store.
        """
        if not self.is_sqlite:
            return lambda: None
        database = self.engine.url.database
        assert database, "checked at open"
        path = Path(f"{database}.serve-lock")
        handle = path.open("a+b")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ConfigError(
                f"another `exchange serve` is running on the SQLite store {database}; "
                "SQLite serves one process per node (run several on PostgreSQL)"
            ) from None
        except BaseException:
            handle.close()
            raise

        def release() -> None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

        return release

    def write(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` in one write transaction; commit if it returns, roll back if it raises."""
        with self._transaction(write=True) as connection:
            return fn(connection)

    def read(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` in a read transaction."""
        with self._transaction(write=False) as connection:
            return fn(connection)

    def reclaim_deleted(self) -> None:
        """Flush deleted content out of the files after a purge.

        SQLite: secure_delete zeroed the freed pages in the database, but the
        write-ahead log still holds their old images until a checkpoint; a
        TRUNCATE checkpoint copies the log back and empties it. PostgreSQL
        keeps dead row versions until (auto)vacuum reclaims them.
        """
        if not self.is_sqlite:
            return
        raw = self.engine.raw_connection()
        try:
            raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()

    def dispose(self) -> None:
        self.engine.dispose()


def _unavailable(exc: DBAPIError) -> StoreUnavailableError | None:
    """The StoreUnavailableError a driver error means, or None if it means something else."""
    if exc.connection_invalidated:
        return StoreUnavailableError("database connection lost; retry")
    if not isinstance(exc, OperationalError):
        return None
    text = str(exc.orig).lower()
    if "locked" in text or "busy" in text or "lock timeout" in text:
        return StoreUnavailableError("database is locked; retry")
    # SQLite's "database or disk is full", PostgreSQL's "No space left on device";
    # not "disk I/O error", which says nothing about space.
    if "is full" in text or "no space left" in text:
        return StoreUnavailableError("database is full; retry when space is available")
    return StoreUnavailableError("database unavailable; retry")


def _sqlite_in_transaction(connection: Connection) -> bool:
    return bool(connection.connection.dbapi_connection.in_transaction)  # type: ignore[union-attr]


def _rolled_back(exc: Exception) -> StoreUnavailableError:
    """The error for a transaction the database rolled back itself, named after its cause.

    The failing write's savepoint rollback fails too ("no such savepoint"); what
    made SQLite give up is the error that one was raised during.
    """
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, DBAPIError) and "savepoint" not in str(cause.orig).lower():
            return _unavailable(cause) or StoreUnavailableError("database unavailable; retry")
        cause = cause.__context__
    return StoreUnavailableError("database unavailable; retry")


@dataclasses.dataclass
class _Write:
    fn: Callable[[Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class AsyncStore:
    """`Store` for the event loop: no call ever blocks the loop.

    Reads run in a bounded thread pool. Writes go to one writer thread that
    commits whatever is queued together (group commit): a write that fails is
    rolled back alone (the batch is run again with a savepoint per write), and
    every caller learns its outcome only after the commit that made it durable. One commit
    (and one fsync) then serves many notices, and SQLite's single writer never
    has to contend for its lock, where it would wait in the busy handler's
    sleeps of up to 100 ms.
    """

    def __init__(
        self,
        store: Store,
        *,
        readers: int = 4,
        max_batch: int = 64,
        lock_first: Callable[[Connection], None] | None = None,
    ) -> None:
        """
        Args:
            lock_first: on PostgreSQL, a lock every batch takes before anything
                else (the node's audit lock). A batch holds the locks of its
                earlier writes while a later one waits, and with several
                processes of one node that wait can close a cycle: one batch
                appended to the audit log (holding its lock) and then inserts
                the client_request_id or message id that another process's
                uncommitted batch inserted, which in turn waits for the audit
                lock. Taking that lock first gives every batch one order.
        """
        self.store = store
        self._lock_first = None if store.is_sqlite else lock_first
        self._max_batch = max_batch
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="store-read")
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="store-write", daemon=True)
        self._writer.start()

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` in a write transaction; returns once its effects are committed.

        Raises:
            StoreUnavailableError: the store is closed (or its writer stopped).
        """
        if self._closed or not self._writer.is_alive():
            raise StoreUnavailableError("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Write(fn, future, loop))
        return await future

    async def read(self, fn: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self.store.read, fn)

    async def reclaim_deleted(self) -> None:
        """See `Store.reclaim_deleted`."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._readers, self.store.reclaim_deleted)

    def close(self) -> None:
        """Finish the queued writes, then stop the threads and close the connections."""
        self._closed = True
        self._queue.put(None)
        self._writer.join()
        self._readers.shutdown(wait=True)
        self.store.dispose()

    def _together(self, batch: list[_Write], connection: Connection) -> list[tuple[bool, Any]]:
        """Run every write of `batch` in one transaction; any failure fails them all."""
        if self._lock_first is not None:
            self._lock_first(connection)
        return [(True, write.fn(connection)) for write in batch]

    def _apart(self, batch: list[_Write], connection: Connection) -> list[tuple[bool, Any]]:
        """Run each write of `batch` in a savepoint of its own: one that fails fails alone."""
        if self._lock_first is not None:
            self._lock_first(connection)
        if len(batch) == 1:
            return [(True, batch[0].fn(connection))]
        outcomes: list[tuple[bool, Any]] = []
        for write in batch:
            before = pending.saved(connection)
            try:
                with connection.begin_nested():
                    outcomes.append((True, write.fn(connection)))
            except Exception as exc:  # reported to that caller alone
                pending.restore(connection, before)
                if self.store.is_sqlite and not _sqlite_in_transaction(connection):
                    # SQLite ended the whole transaction (a full disk, an I/O error), not
                    # only this savepoint: the writes before it are gone, and those after
                    # it would each commit on their own. The whole batch fails.
                    raise _rolled_back(exc) from exc
                translated = _unavailable(exc) if isinstance(exc, DBAPIError) else None
                outcomes.append((False, translated or exc))
        return outcomes

    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    queued = self._queue.get_nowait()
                except queue.Empty:
                    break
                if queued is None:
                    stop = True
                    break
                batch.append(queued)
            self._commit([w for w in batch if not w.future.cancelled()])
            if stop:
                return

    def _commit(self, batch: list[_Write]) -> None:
        if not batch:
            return
        outcomes: list[tuple[bool, Any]] | None = None
        if len(batch) > 1:
            # Nearly every batch fails nowhere: it runs first without a savepoint per
            # write (two round trips each on PostgreSQL). Should any write fail, that
            # transaction rolls back and the batch runs again, each write in its own
            # savepoint: a write may run twice, it never commits twice.
            with contextlib.suppress(Exception):
                outcomes = self.store.write(functools.partial(self._together, batch))
        if outcomes is None:
            try:
                outcomes = self.store.write(functools.partial(self._apart, batch))
            except Exception as exc:  # nothing was committed: every caller gets the error
                outcomes = [(False, exc)] * len(batch)
        for write, (ok, value) in zip(batch, outcomes, strict=True):
            # A caller whose event loop has closed is gone; the writer carries on.
            with contextlib.suppress(RuntimeError):
                write.loop.call_soon_threadsafe(_settle, write.future, ok, value)
