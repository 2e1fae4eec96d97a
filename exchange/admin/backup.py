"""Backing up a node's store and restoring it, on either engine.

A backup is one file: on SQLite a copy made with SQLite's online backup, on
PostgreSQL a `pg_dump` archive (custom format). Both are consistent snapshots
taken while the node runs, and each is described by the audit log head it
holds (size and root), so an admin can tell exactly which records a restore
brings back.

Keys, certificates and node.toml are not in the backup: they are files in the
node directory that the admins back up and protect on their own, so that a copy
of the store is never also a copy of the node's private keys.

Restoring rewinds the node to the backup. Whatever it did after the backup is
gone from its store, and peers that hold a newer signed head of its audit log
will find the log rewound: they report it, as they must. A restore is the last
resort after losing the database; a PostgreSQL standby is the first.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.engine import URL, make_url

from exchange.clock import to_millis
from exchange.config import load_node_config
from exchange.errors import ConfigError, NotFoundError
from exchange.store import audit_log, migrate, outbox
from exchange.store.engine import Store, sqlite_url

__all__ = ["BackupSummary", "backup", "restore"]

SQLITE = "sqlite"
POSTGRESQL = "postgresql"


@dataclasses.dataclass(frozen=True)
class BackupSummary:
    """What a backup file holds: its engine and the audit log head in it."""

    path: Path
    engine: str
    node_id: str
    audit_size: int
    audit_root: str
    schema_revision: str | None
    size_bytes: int


def _audit_head(connection: Connection) -> tuple[int, str]:
    size = audit_log.size(connection)
    return size, audit_log.root(connection, size).hex() if size else ""


def backup(directory: Path, destination: Path) -> BackupSummary:
    """Write a consistent backup of the node's store to `destination` (a new file).

    Raises:
        ConfigError: `destination` exists, or the PostgreSQL client tools are missing.
        StoreUnavailableError: the store cannot be read.
    """
    config = load_node_config(directory)
    if destination.exists():
        raise ConfigError(f"{destination} exists: a backup never overwrites a file")
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    partial.unlink(missing_ok=True)
    url = make_url(config.database_url())
    try:
        if url.get_backend_name() == SQLITE:
            engine = SQLITE
            _sqlite_copy(_sqlite_path(url), partial)
            revision, (size, root) = _read_sqlite(partial)
        else:
            engine = POSTGRESQL
            revision, (size, root) = _pg_dump(url, partial)
        partial.rename(destination)
    finally:
        partial.unlink(missing_ok=True)
    return _summary(destination, engine, config.node_id, revision, (size, root))


def restore(directory: Path, source: Path, *, now: dt.datetime) -> BackupSummary:
    """Replace the node's store with the backup in `source`. Stop the node first.

    Outbox rows that were being delivered when the backup was taken are released,
    and rows parked for a peer then known down, or waiting for their next try, are
    due (their workers are gone), so a restored node resumes delivery at once.

    The backup is checked before anything is changed (a SQLite copy for
    integrity, a dump by pg_restore's listing); the replacement is one
    transaction on PostgreSQL and one backup step on SQLite, so a failed restore
    leaves the store as it was.

    Raises:
        NotFoundError: `source` does not exist.
        ConfigError: `source` is not a backup of this node's engine, or the
            PostgreSQL client tools are missing or refuse it.
    """
    config = load_node_config(directory)
    if not source.is_file():
        raise NotFoundError(f"{source}: no such backup file")
    url = make_url(config.database_url())
    if url.get_backend_name() == SQLITE:
        engine = SQLITE
        _sqlite_check(source)
        _sqlite_copy(source, _sqlite_path(url))
    else:
        engine = POSTGRESQL
        _pg_restore(url, source)
    store = Store.open(config.database_url())
    try:
        # Leases and parked rows belonged to processes now gone: all due at once.
        store.write(lambda c: outbox.release_and_resume(c, to_millis(now)))
        revision = migrate.current_revision(store)
        size, root = store.read(_audit_head)
    finally:
        store.dispose()
    return _summary(source, engine, config.node_id, revision, (size, root))


def _summary(
    path: Path, engine: str, node_id: str, revision: str | None, head: tuple[int, str]
) -> BackupSummary:
    size, root = head
    return BackupSummary(
        path=path,
        engine=engine,
        node_id=node_id,
        audit_size=size,
        audit_root=root,
        schema_revision=revision,
        size_bytes=path.stat().st_size,
    )


# SQLite


def _sqlite_path(url: URL) -> Path:
    assert url.database, "a node's SQLite URL always names a file"
    return Path(url.database)


def _sqlite_copy(source: Path, target: Path) -> None:
    """Copy a SQLite database page by page, in one step: a consistent snapshot.

    SQLite's backup API reads inside one read transaction (the node's writers go
    on, in WAL mode) and writes the target through its own journal.
    """
    origin = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        copy = sqlite3.connect(target)
        try:
            origin.backup(copy)
        finally:
            copy.close()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{source}: cannot be copied as a SQLite database ({exc})") from None
    finally:
        origin.close()


def _sqlite_check(path: Path) -> None:
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            (verdict,) = connection.execute("PRAGMA integrity_check").fetchone()
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path}: not a SQLite backup ({exc})") from None
    if verdict != "ok":
        raise ConfigError(f"{path}: the backup fails SQLite's integrity check ({verdict})")


def _read_sqlite(path: Path) -> tuple[str | None, tuple[int, str]]:
    store = Store.open(sqlite_url(path))
    try:
        return migrate.current_revision(store), store.read(_audit_head)
    finally:
        store.dispose()


# PostgreSQL


def _client_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ConfigError(
            f"{name} not found: install the PostgreSQL client tools "
            "(the server's major version or newer)"
        )
    return found


def _libpq(url: URL) -> tuple[str, dict[str, str], str | None]:
    """The libpq URI of a store URL (password in the environment, not argv), and its schema."""
    environ = dict(os.environ)
    if url.password:
        environ["PGPASSWORD"] = str(url.password)
    options = str(url.query.get("options", ""))
    schema = re.search(r"-c\s*search_path=([^\s,]+)", options)
    uri = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return uri, environ, schema.group(1) if schema else None


def _run(command: list[str], environ: dict[str, str], what: str) -> None:
    # The command is ours: a client tool found on PATH and arguments built here.
    finished = subprocess.run(  # noqa: S603
        command, env=environ, capture_output=True, text=True, check=False
    )
    if finished.returncode != 0:
        raise ConfigError(f"{what} failed: {finished.stderr.strip()[:2000]}")


def _pg_dump(url: URL, destination: Path) -> tuple[str | None, tuple[int, str]]:
    """Dump the store in an exported snapshot, so the head read here is the one dumped."""
    pg_dump = _client_tool("pg_dump")
    uri, environ, schema = _libpq(url)
    store = Store.open(url.render_as_string(hide_password=False))
    try:
        with store.engine.connect() as pooled:
            connection = pooled.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                snapshot = connection.execute(text("SELECT pg_export_snapshot()")).scalar_one()
                head = _audit_head(connection)
                revision = connection.execute(
                    text("SELECT version_num FROM alembic_version")
                ).scalar_one_or_none()
                command = [pg_dump, "--format=custom", f"--snapshot={snapshot}", "--no-owner"]
                if schema:
                    command.append(f"--schema={schema}")
                # The snapshot lives as long as this transaction: pg_dump runs inside it.
                _run([*command, f"--file={destination}", f"--dbname={uri}"], environ, "pg_dump")
        return revision, head
    finally:
        store.dispose()


def _pg_restore(url: URL, source: Path) -> None:
    pg_restore = _client_tool("pg_restore")
    uri, environ, _ = _libpq(url)
    # The listing reads the whole archive: a file that is not a dump is refused
    # before the database is touched.
    _run([pg_restore, "--list", str(source)], environ, f"{source}: reading the backup")
    _run(
        [
            pg_restore,
            "--clean",
            "--if-exists",
            "--no-owner",
            "--single-transaction",
            "--exit-on-error",
            f"--dbname={uri}",
            str(source),
        ],
        environ,
        "pg_restore",
    )
