"""A first throughput figure: notices submitted at one node and delivered to another.

Two `exchange serve` processes on loopback (mTLS, real stores), as in the
simulation; this process acts as the sending authority system: N submissions
with C concurrent calls, timed until the sender holds every receipt. Prints
figures; asserts nothing. The full benchmark suite (ceilings, latency, fan-out,
bulk, PostgreSQL scale-out) is a later issue.

Usage:
    python scripts/bench_exchange.py [--notices 2000] [--concurrency 8]
        [--postgres-url postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, func, select, text

from exchange.admin.node import open_store
from exchange.harness import samples
from exchange.harness.processes import NodeProcess
from exchange.harness.setup import build_federation, sample_countries
from exchange.logs import configure_logging
from exchange.rpc.client import AuthorityClient
from exchange.store.tables import OUTBOX


async def run(notices: int, concurrency: int, database_url_for: object) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sims = build_federation(
            Path(tmp),
            sample_countries(2),
            now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
            database_url_for=database_url_for,  # type: ignore[arg-type]
        )
        processes = [NodeProcess(sim, {"EXCHANGE_LOG_LEVEL": "warning"}) for sim in sims]
        for process in processes:
            process.start()
        sender, recipient = sims
        client = AuthorityClient(
            sender.authority_address,
            sender.case_worker_token,
            ca_certificate=sender.authority_certificate,
        )
        request = samples.case_referral([recipient.node_id], "XA-2026-0001", "Benchmark notice.")
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(notices):
            queue.put_nowait(i)
        latencies: list[float] = []

        async def submitter() -> None:
            while not queue.empty():
                queue.get_nowait()
                began = time.perf_counter()
                await client.submit(request)
                latencies.append(time.perf_counter() - began)

        started = time.perf_counter()
        await asyncio.gather(*(submitter() for _ in range(concurrency)))
        submitted = time.perf_counter()
        store = open_store(sender.directory)

        def pending() -> int:
            return int(
                store.read(
                    lambda c: c.execute(
                        select(func.count())
                        .select_from(OUTBOX)
                        .where(OUTBOX.c.state != "delivered")
                    ).scalar_one()
                )
            )

        # Polls the sender's store: the receipts are written by another process.
        while await asyncio.to_thread(pending):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        delivered = time.perf_counter()
        store.dispose()
        await client.close()
        for process in processes:
            process.stop()
    total = delivered - started
    print(f"notices                 {notices}")
    print(f"concurrency             {concurrency}")
    submit = submitted - started
    print(f"submit phase            {submit:.2f} s  ({notices / submit:.0f} notices/s)")
    print(f"until every receipt     {total:.2f} s  ({notices / total:.0f} notices/s end to end)")
    print(f"submit latency p50      {statistics.median(latencies) * 1000:.1f} ms")
    print(f"submit latency p99      {statistics.quantiles(latencies, n=100)[98] * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notices", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--postgres-url", default="")
    arguments = parser.parse_args()
    configure_logging("warning", "json")
    if not arguments.postgres_url:
        print("store                   SQLite (WAL, synchronous FULL)")
        asyncio.run(run(arguments.notices, arguments.concurrency, None))
        return
    print("store                   PostgreSQL")
    engine = create_engine(
        arguments.postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)
    )
    schemas: list[str] = []

    def schema_url(node_id: str) -> str:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with engine.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        schemas.append(schema)
        base = arguments.postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)
        return f"{base}?options=-csearch_path%3D{schema}"

    try:
        asyncio.run(run(arguments.notices, arguments.concurrency, schema_url))
    finally:
        with engine.begin() as connection:
            for schema in schemas:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
