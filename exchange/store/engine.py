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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from exchange.errors import ConfigError, StoreUnavailableError

__all__ = ["AsyncStore", "Store", "sqlite_url"]

T = TypeVar("T")

_SQLITE_BUSY_TIMEOUT_MS = 10_000


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives power loss, not only a crash of the process.
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


class Store:
    """A node's database, SQLite or PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"

    @staticmethod
    def open(url: str, *, pool_size: int = 8, sqlite_synchronous: str = "FULL") -> Store:
        """Open the database at `url` (sqlite:///path or postgresql+psycopg://...)."""
        try:
            parsed = make_url(url)
        except Exception as exc:
            raise ConfigError(f"database_url {url!r} is not a database URL") from exc
        if parsed.get_backend_name() == "sqlite":
            if not parsed.database or parsed.database == ":memory:":
                raise ConfigError("database_url must name a SQLite file, not memory")
            engine = create_engine(
                parsed,
                connect_args={
                    "check_same_thread": False,
                    "timeout": _SQLITE_BUSY_TIMEOUT_MS / 1000,
                },
                pool_size=pool_size,
            )
            _configure_sqlite(engine, sqlite_synchronous)
        elif parsed.get_backend_name() == "postgresql":
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+psycopg")
            engine = create_engine(
                parsed, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )
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
                with connection.begin():
                    yield connection
        except OperationalError as exc:
            raise StoreUnavailableError(_describe(exc)) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise StoreUnavailableError("database connection lost") from exc
            raise

    def write(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` in one write transaction; commit if it returns, roll back if it raises."""
        with self._transaction(write=True) as connection:
            return fn(connection)

    def read(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` in a read transaction."""
        with self._transaction(write=False) as connection:
            return fn(connection)

    def dispose(self) -> None:
        self.engine.dispose()


def _describe(exc: OperationalError) -> str:
    text = str(exc.orig).lower()
    if "locked" in text or "busy" in text:
        return "database is locked; retry"
    if "full" in text or "disk" in text:
        return "database is full; retry when space is available"
    return "database unavailable; retry"


class AsyncStore:
    """`Store` for the event loop: every call runs in a bounded thread pool."""

    def __init__(self, store: Store, *, workers: int = 4) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="store")

    async def write(self, fn: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.store.write, fn)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.store.read, fn)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.store.dispose()
