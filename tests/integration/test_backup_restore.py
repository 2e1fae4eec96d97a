"""Backing up a running node's store, losing it, restoring it and resuming delivery.

The procedure in the README ("Backup and restore"), on both engines: `exchange node
backup` while the node serves, `exchange node restore` into an empty database,
then the node starts and delivers what was waiting in its outbox.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from exchange.config import load_node_config
from exchange.harness import samples
from exchange.store import audit_log
from exchange.store.engine import Store
from tests.conftest import DatabaseFactory
from tests.integration.test_cli import run
from tests.integration.test_lifecycle import delivered, received
from tests.live import Federation, start_federation

pytestmark = pytest.mark.slow


def summary(*arguments: str | Path) -> dict[str, object]:
    result = run(*arguments, "--json")
    assert result.returncode == 0, result.stderr
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def audit_head(directory: Path) -> tuple[int, str]:
    store = Store.open(load_node_config(directory).database_url())
    try:

        def head(connection: object) -> tuple[int, str]:
            size = audit_log.size(connection)  # type: ignore[arg-type]
            return size, audit_log.root(connection, size).hex()  # type: ignore[arg-type]

        return store.read(head)
    finally:
        store.dispose()


def lose_the_database(directory: Path) -> None:
    """What a failed disk does: the node's database is gone, an empty one stands in."""
    url = make_url(load_node_config(directory).database_url())
    if url.get_backend_name() == "sqlite":
        assert url.database
        for suffix in ("", "-wal", "-shm"):
            Path(url.database + suffix).unlink(missing_ok=True)
        return
    schema = str(url.query["options"]).removeprefix("-csearch_path=")
    engine = create_engine(url.set(query={}))
    with engine.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()


@pytest.fixture
async def two_nodes(tmp_path: Path, databases: DatabaseFactory) -> AsyncIterator[Federation]:
    running = await start_federation(tmp_path, databases, countries=2)
    try:
        yield running
    finally:
        await running.close()


async def test_a_restored_backup_delivers_what_was_waiting(
    two_nodes: Federation, tmp_path: Path
) -> None:
    federation = two_nodes
    directory = federation.sim(0).directory
    sender_id, recipient_id = federation.sim(0).node_id, federation.sim(1).node_id
    await federation.crash(recipient_id)
    sender = federation.client(0)
    waiting = [
        (
            await sender.submit(
                samples.case_referral([recipient_id], f"XA-2026-07{i:02}", "Waiting for XB.")
            )
        ).message_id
        for i in range(3)
    ]
    before = audit_head(directory)

    # Online: the sender is still serving while it is backed up.
    backup = tmp_path / "backups" / "xa-police.backup"
    taken = summary("node", "backup", directory, "--to", backup)
    # The node keeps logging (retries to XB) while it is backed up.
    assert int(str(taken["audit_size"])) >= before[0]
    assert taken["node_id"] == sender_id
    assert backup.stat().st_size == taken["size_bytes"]

    await federation.crash(sender_id)
    lose_the_database(directory)
    restored = summary("node", "restore", directory, "--from", backup, "--yes")
    assert (restored["audit_size"], restored["audit_root"]) == (
        taken["audit_size"],
        taken["audit_root"],
    )
    assert audit_head(directory) == (taken["audit_size"], taken["audit_root"])
    assert restored["schema_revision"] == taken["schema_revision"]

    await federation.start(sender_id)
    await federation.start(recipient_id)
    sender = federation.client(0)
    recipient = federation.client(1)
    for message_id in waiting:
        status = await delivered(sender, message_id)
        assert [r.recipient_node_id for r in status.recipients] == [recipient_id]
        assert (await received(recipient, message_id)).notice.HasField("case_referral")


async def test_a_backup_never_overwrites_a_file(two_nodes: Federation, tmp_path: Path) -> None:
    existing = tmp_path / "precious"
    existing.write_bytes(b"not to be overwritten")
    result = run("node", "backup", two_nodes.sim(0).directory, "--to", existing)
    assert result.returncode == 1
    assert "exists" in result.stderr
    assert existing.read_bytes() == b"not to be overwritten"
    assert not (tmp_path / "precious.partial").exists()


async def test_restoring_a_file_that_is_no_backup_changes_nothing(
    two_nodes: Federation, tmp_path: Path
) -> None:
    directory = two_nodes.sim(0).directory
    recipient_id = two_nodes.sim(1).node_id
    await two_nodes.client(0).submit(samples.case_referral([recipient_id], "XA-2026-0800", "Kept."))
    await two_nodes.crash(two_nodes.sim(0).node_id)
    before = audit_head(directory)
    bogus = tmp_path / "bogus.backup"
    bogus.write_bytes(b"PGDMP? no: " + os.urandom(4096))
    result = run("node", "restore", directory, "--from", bogus, "--yes")
    assert result.returncode == 1
    assert result.stderr.startswith("error:")
    assert str(bogus) in result.stderr
    assert audit_head(directory) == before
    missing = run("node", "restore", directory, "--from", tmp_path / "absent", "--yes")
    assert missing.returncode == 1
    assert "no such backup file" in missing.stderr
