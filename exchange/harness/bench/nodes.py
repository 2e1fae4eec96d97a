"""The benchmark's federations: real `serve` processes on loopback, SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, func, select

from exchange._proto.exchange.v1 import envelope_pb2 as epb
from exchange._proto.exchange.v1 import federation_pb2 as fpb
from exchange.admin.node import open_store
from exchange.harness import postgres_schemas
from exchange.harness.bench.results import peak_memory_mib
from exchange.harness.processes import NodeProcess
from exchange.harness.setup import SimNode, build_federation, sample_countries
from exchange.rpc.client import AuthorityClient
from exchange.store.engine import Store
from exchange.store.tables import ENVELOPES, OUTBOX, RECEIPTS

__all__ = [
    "BenchError",
    "Nodes",
    "authority_client",
    "federation",
    "sample_delivery",
    "wait_delivered",
]

# Retries as the simulation's: a peer that comes back is tried again within 2 s
# (production backs off up to 600 s, which would measure the backoff, not the drain),
# and its rows are parked 30 s at a time meanwhile. The audit timers keep their
# production defaults.
_BENCH_DELIVERY = """
[delivery]
initial_backoff_seconds = 0.25
max_backoff_seconds = 2.0
park_seconds = 30.0
"""
_ENVIRON = {"EXCHANGE_LOG_LEVEL": "warning"}


class BenchError(Exception):
    """A benchmark could not run as asked (a node failed, a delivery failed, a timeout)."""


@contextlib.contextmanager
def federation(
    engine: str,
    postgres_url: str,
    countries: int,
    *,
    b_processes: int = 1,
    readers: int | None = None,
) -> Iterator[list[SimNode]]:
    """`countries` nodes set up as admins do, each in its own schema on PostgreSQL.

    Args:
        b_processes: `serve` processes of the second node (XB); its trust list
            endpoint names every one of them (gRPC round_robin, as DNS would).
        readers: each process's `[store] readers` (None: the default).

    Directories and schemas are removed afterwards.
    """
    specs = sample_countries(countries)
    if b_processes > 1:
        specs[1] = specs[1].with_replicas(b_processes - 1)
    with (
        tempfile.TemporaryDirectory(prefix="exchange-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        urls = stack.enter_context(postgres_schemas(postgres_url)) if engine == "postgres" else None
        yield build_federation(
            Path(tmp),
            specs,
            now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
            database_url_for=urls.__getitem__ if urls is not None else None,
            delivery_overrides=_BENCH_DELIVERY,
            store_settings="" if readers is None else f"readers = {readers}\n",
        )


def node_processes(sim: SimNode) -> list[NodeProcess]:
    """Every `serve` process of one node (not started): one, or one per replica more."""
    return NodeProcess.all_of(sim, _ENVIRON)


class Nodes:
    """Started node processes; records each one's peak memory when stopped."""

    def __init__(self) -> None:
        self._processes: list[NodeProcess] = []
        self.peak_memory_mib: dict[str, float] = {}

    def start(self, process: NodeProcess) -> None:
        self._processes.append(process)
        process.start()

    def start_node(self, sim: SimNode) -> None:
        for process in node_processes(sim):
            self.start(process)

    def stop(self) -> None:
        for i, process in enumerate(self._processes):
            if process.running:
                name = process.node.node_id
                if name in self.peak_memory_mib:
                    name = f"{name}#{i}"
                self.peak_memory_mib[name] = round(peak_memory_mib(process.pid), 1)
            process.stop()
        self._processes.clear()

    def kill(self) -> None:
        for process in self._processes:
            process.kill()

    def log_tails(self) -> str:
        return "\n".join(
            f"--- {process.node.node_id} ---\n{process.log_tail()}" for process in self._processes
        )


def authority_client(sim: SimNode) -> AuthorityClient:
    return AuthorityClient(
        sim.authority_address,
        sim.case_worker_token,
        ca_certificate=sim.authority_certificate,
        timeout=600,
    )


def _outbox_states(store: Store) -> dict[str, int]:
    rows = store.read(
        lambda c: c.execute(select(OUTBOX.c.state, func.count()).group_by(OUTBOX.c.state)).all()
    )
    return {state: int(count) for state, count in rows}


async def wait_delivered(
    store: Store, deliveries: int, *, timeout: float, interval: float = 0.02
) -> None:
    """Poll a sender's store (read-only) until `deliveries` outbox rows hold a receipt.

    The receipts are written by the node's process; this only reads.

    Raises:
        BenchError: a delivery failed, or not all arrived within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        states = await asyncio.to_thread(_outbox_states, store)
        if states.get("failed"):
            raise BenchError(f"{states['failed']} deliveries failed: {states}")
        if states.get("delivered", 0) >= deliveries:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"not delivered within {timeout:.0f} s: {states}")
        await asyncio.sleep(interval)


def sample_delivery(sim: SimNode) -> tuple[bytes, int]:
    """A real envelope as its DeliverRequest bytes, and the size of a real DeliverResponse.

    Read from a sender's store once it has delivered, so the ceiling carries
    exactly the bytes the exchange did.
    """
    store = open_store(sim.directory)
    try:

        def read(c: Connection) -> tuple[bytes, int]:
            envelope = c.execute(
                select(ENVELOPES.c.header, ENVELOPES.c.sealed_payload, ENVELOPES.c.signature)
                .order_by(ENVELOPES.c.message_id.desc())
                .limit(1)
            ).one()
            receipt = c.execute(select(RECEIPTS.c.body, RECEIPTS.c.signature).limit(1)).one()
            request = fpb.DeliverRequest(
                envelope=epb.SignedEnvelope(
                    header=envelope.header,
                    sealed_payload=envelope.sealed_payload,
                    signature=envelope.signature,
                )
            )
            response = fpb.DeliverResponse(
                receipt=epb.SignedReceipt(body=receipt.body, signature=receipt.signature)
            )
            return request.SerializeToString(), response.ByteSize()

        return store.read(read)
    finally:
        store.dispose()
