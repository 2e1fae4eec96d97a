"""PostgreSQL restarted under load: the nodes reconnect and every notice arrives exactly once.

All three nodes keep their stores on a private PostgreSQL cluster that this
test creates (initdb), stops in immediate mode (every connection cut, as when
the server crashes) while notices are being submitted and delivered, starts
again, and removes afterwards. The shared server other tests use is never touched.

Skipped only when no PostgreSQL server binaries are installed; with
EXCHANGE_REQUIRE_POSTGRES=1 (CI) their absence fails the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import Table, create_engine, func, select, text

from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange.harness import samples
from exchange.health import STORE_UNREACHABLE
from exchange.node import Node
from exchange.runtime import Signal
from exchange.store.tables import INBOX_EVENTS, NOTICES, OUTBOX
from tests.conftest import REQUIRE_POSTGRES
from tests.integration.test_lifecycle import eventually
from tests.live import Federation, start_federation

NOTICES_SENT = 40
LEASE = "[delivery]\nattempt_timeout_seconds = 5.0\nlease_seconds = 6.0\n"
PROBE = "[store]\nprobe_interval_seconds = 0.5\n"


def _bin_directory() -> Path | None:
    """Where initdb, pg_ctl and postgres are, if installed."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "pg_ctl").exists() and Path(candidate, "initdb").exists():
            return Path(candidate)
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        directory = Path(found.stdout.strip())
        if (directory / "pg_ctl").exists() and (directory / "initdb").exists():
            return directory
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateCluster:
    """A throwaway PostgreSQL cluster (trust auth on 127.0.0.1) in a temporary directory."""

    def __init__(self, binaries: Path, root: Path) -> None:
        self._binaries = binaries
        self._root = root
        self.data = root / "data"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0  # initdb refuses to run as root

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self._binaries / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{tool} failed: {done.stdout}{done.stderr}"

    def init(self) -> None:
        if self._as_postgres:
            shutil.chown(self._root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self._root} -c listen_addresses=127.0.0.1"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self._root / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        """Stop in immediate mode: connections cut, no checkpoint (as in a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


class ClusterDatabases:
    """Fresh schemas on the private cluster, one per node (the `databases` factory's role)."""

    engine = "postgresql"

    def __init__(self, cluster: PrivateCluster) -> None:
        self._admin = create_engine(cluster.url)
        self._url = cluster.url

    def new_url(self, name: str = "node") -> str:
        schema = f"t_{uuid.uuid4().hex[:16]}"
        with self._admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        return f"{self._url}?options=-csearch_path%3D{schema}"

    def close(self) -> None:
        self._admin.dispose()


@contextlib.contextmanager
def _private_cluster() -> Iterator[PrivateCluster]:
    binaries = _bin_directory()
    if binaries is None:
        if REQUIRE_POSTGRES:
            pytest.fail(
                "EXCHANGE_REQUIRE_POSTGRES=1 but no PostgreSQL server binaries are installed"
            )
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) installed")
    root = Path(tempfile.mkdtemp(prefix="exchange-pg-"))
    cluster = PrivateCluster(binaries, root)
    started = False
    try:
        cluster.init()
        cluster.start()
        started = True
        yield cluster
    finally:
        if started:
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def on_private_cluster(tmp_path: Path) -> AsyncIterator[tuple[Federation, PrivateCluster]]:
    with _private_cluster() as cluster:
        databases = ClusterDatabases(cluster)
        try:
            running = await start_federation(tmp_path, databases)  # type: ignore[arg-type]
            try:
                # Attempts whose outcome could not be recorded while the server was down
                # are retried when their lease runs out: 6 s here instead of 60 s.
                xa = running.sim(0)
                await running.crash(xa.node_id)
                toml = xa.directory / "node.toml"
                text = toml.read_text().replace("[delivery]\n", LEASE, 1)
                toml.write_text(text.replace("[store]\n", PROBE, 1))
                await running.start(xa.node_id)
                yield running, cluster
            finally:
                await running.close()
        finally:
            databases.close()


async def _submit_until_taken(federation: Federation, request: apb.SubmitNoticeRequest) -> str:
    """Submit, retrying an UNAVAILABLE answer with the same client request id (idempotent)."""
    async with asyncio.timeout(120):  # hang protection only
        while True:
            try:
                return (await federation.client(0).submit(request)).message_id
            except grpc.aio.AioRpcError as refused:
                if refused.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
            await asyncio.sleep(0.2)  # the server is coming back; nothing to wait on


async def _count(node: Node, table: Table, **where: str) -> int:
    query = select(func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    return await node.context.store.read(lambda c: int(c.execute(query).scalar_one()))


async def test_postgresql_restarted_under_load_the_nodes_reconnect_and_lose_nothing(
    on_private_cluster: tuple[Federation, PrivateCluster],
) -> None:
    federation, cluster = on_private_cluster
    a, b = federation.node(0), federation.node(1)
    b_id = b.context.node_id

    def request(i: int) -> apb.SubmitNoticeRequest:
        submitted = samples.case_referral([b_id], f"XA-{i}", f"Notice {i} under restart.")
        submitted.client_request_id = f"restart-{i}"
        return submitted

    first = await asyncio.gather(
        *(_submit_until_taken(federation, request(i)) for i in range(NOTICES_SENT // 2))
    )
    # Mid-way, with deliveries under way, the server goes down (immediate mode: a crash).
    await asyncio.to_thread(cluster.stop)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await federation.client(0).submit(request(NOTICES_SENT // 2))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "database" in (refused.value.details() or "")
    # The node says so on its health service, with the reason for its operators.
    health = federation.client(0)

    async def not_serving() -> bool:
        return not await health.serving()

    await eventually(not_serving, seconds=30)
    assert "database" in a.context.health.problems()[STORE_UNREACHABLE]
    # More submissions wait for it (retrying, as a client does), and it comes back.
    rest = asyncio.gather(
        *(
            _submit_until_taken(federation, request(i))
            for i in range(NOTICES_SENT // 2, NOTICES_SENT)
        )
    )
    await asyncio.to_thread(cluster.start)
    sent = [*first, *await rest]
    await eventually(health.serving, seconds=30)
    assert STORE_UNREACHABLE not in a.context.health.problems()
    # A retried request id gets the original notice, not a second one.
    assert len(set(sent)) == NOTICES_SENT
    assert await _submit_until_taken(federation, request(0)) == sent[0]

    async with asyncio.timeout(180):  # hang protection only
        while True:
            changed = a.context.outbox_changed.snapshot()
            if await _count(a, OUTBOX, state="delivered") == NOTICES_SENT:
                break
            # Nothing signals a receipt recorded: look again at least twice a second.
            await Signal.wait(changed, 0.5)

    assert await _count(a, NOTICES) == NOTICES_SENT
    assert await _count(a, OUTBOX) == NOTICES_SENT
    assert await _count(b, NOTICES) == NOTICES_SENT, "each notice stored once at the recipient"
    assert await _count(b, INBOX_EVENTS) == NOTICES_SENT
    for message_id in (sent[0], sent[-1]):
        status = await federation.client(0).delivery_status(message_id)
        assert [r.state for r in status.recipients] == [apb.DELIVERY_STATE_DELIVERED]
        opened = await federation.client(1).get_notice(message_id)
        assert opened.notice.HasField("case_referral")
