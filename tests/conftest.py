"""Shared fixtures: the two store engines every store and integration test runs on.

SQLite always; PostgreSQL when EXCHANGE_TEST_POSTGRES_URL is set (`.ci/run`
sets it to the local server). Each PostgreSQL test gets its own schema, so
runs never collide and leave nothing behind. When EXCHANGE_REQUIRE_POSTGRES=1
(as in CI) a missing or unreachable server fails the run instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from exchange.harness import setup
from exchange.store import migrate
from exchange.store.engine import Store

POSTGRES_URL = os.environ.get("EXCHANGE_TEST_POSTGRES_URL", "")
REQUIRE_POSTGRES = os.environ.get("EXCHANGE_REQUIRE_POSTGRES") == "1"
ENGINES = ["sqlite", "postgresql"]


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker hands out loopback ports from its own slice.

    Set in the environment, so node processes and simulations a test starts
    inherit it.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    # A worker that replaces a crashed one counts on (gw2 for two workers): it takes
    # the slice of the one it replaces, free now that that one is gone.
    index = int(worker.removeprefix("gw")) % count
    ports = setup.harness_ports()
    size = len(ports) // count
    if size == 0:
        raise pytest.UsageError(f"{count} workers are more than the {len(ports)} harness ports")
    low = ports.start + index * size
    os.environ[setup.PORTS_VARIABLE] = f"{low}-{low + size - 1}"


def _postgres_admin_url() -> str:
    if not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("EXCHANGE_REQUIRE_POSTGRES=1 but EXCHANGE_TEST_POSTGRES_URL is not set")
        pytest.skip("PostgreSQL not configured (set EXCHANGE_TEST_POSTGRES_URL)")
    url = make_url(POSTGRES_URL)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def terminate_backends(pids: set[int]) -> None:
    """End PostgreSQL server sessions from outside, as a restart or failover would."""
    engine = create_engine(_postgres_admin_url())
    try:
        with engine.begin() as connection:
            for pid in pids:
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        engine.dispose()


class DatabaseFactory:
    """Hands out fresh, empty databases of one engine; drops them afterwards."""

    def __init__(self, engine: str, directory: Path) -> None:
        self.engine = engine
        self._directory = directory
        self._schemas: list[str] = []
        self._admin = None if engine == "sqlite" else create_engine(_postgres_admin_url())

    def new_url(self, name: str = "node") -> str:
        if self.engine == "sqlite":
            return f"sqlite:///{self._directory / f'{name}-{uuid.uuid4().hex[:8]}.db'}"
        assert self._admin is not None
        schema = f"t_{uuid.uuid4().hex[:16]}"
        with self._admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        self._schemas.append(schema)
        url = make_url(_postgres_admin_url()).update_query_dict(
            {"options": f"-csearch_path={schema}"}
        )
        return url.render_as_string(hide_password=False)

    def close(self) -> None:
        if self._admin is None:
            return
        with self._admin.begin() as connection:
            for schema in self._schemas:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        self._admin.dispose()


@pytest.fixture(params=ENGINES)
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseFactory]:
    """A factory of fresh databases, once per engine."""
    factory = DatabaseFactory(request.param, tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def store(databases: DatabaseFactory) -> Iterator[Store]:
    """A migrated, empty store on each engine."""
    opened = Store.open(databases.new_url(), sqlite_synchronous="NORMAL")
    migrate.upgrade(opened)
    try:
        yield opened
    finally:
        opened.dispose()


@pytest.fixture
def new_store(databases: DatabaseFactory) -> Iterator[Callable[[], Store]]:
    """Opens more migrated stores of the same engine (several nodes in one test)."""
    opened: list[Store] = []

    def make() -> Store:
        created = Store.open(databases.new_url(), sqlite_synchronous="NORMAL")
        migrate.upgrade(created)
        opened.append(created)
        return created

    try:
        yield make
    finally:
        for created in opened:
            created.dispose()
