"""Hit/no-hit figures: indexing rate, and query latency against a peer holding N identifiers.

Two `exchange serve` processes on loopback (mTLS, SQLite stores by default), as
in the simulation. This process acts as both authority systems: it registers
N phone numbers at node B through `RegisterIdentifiers` (batches of 10,000,
two calls in flight), then asks node A to query B about Q identifiers one at a
time (half registered, half not) and reports p50 / p99 of the whole
round trip (client -> A -> B evaluate -> B bucket -> A -> client).
Prints figures; asserts nothing.

`--padding M` adds M synthetic entries to B's index (written straight into its
store after it starts) before the N real ones are registered: random tags and
sealed hits of a real entry's size, spread uniformly over the buckets as tokens
are. Queries then read buckets of the size N + M identifiers make, without
spending the hours that registering M more through the API takes; only the N
real ones can hit.

Targets from the issue: index >= 10,000 identifiers/s; query p99 < 20 ms.

Usage:
    python scripts/bench_matching.py [--identifiers 1000000] [--queries 500]
        [--padding 9000000] [--postgres-url postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert, select

from exchange import matching
from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange._proto.exchange.v1 import matching_pb2 as mpb
from exchange.config import load_node_config
from exchange.harness import postgres_schemas
from exchange.harness.processes import NodeProcess
from exchange.harness.setup import build_federation, sample_countries
from exchange.logs import configure_logging
from exchange.match_keys import ACTIVE
from exchange.rpc.client import AuthorityClient
from exchange.store.engine import Store
from exchange.store.tables import MATCH_INDEX, MATCH_KEYS

BATCH = 10_000
_HIT = matching.Hit("XB-BENCH-0", "XB benchmark desk")
# Generous limits: the benchmark measures the work, not the limiter.
_LIMITS = """
[matching]
peer_evaluations_per_minute = 100000000
client_identifiers_per_minute = 100000000
"""


def _phone(n: int) -> bytes:
    return f"+99955{n:09d}".encode()


def _batch(start: int, stop: int) -> apb.RegisterIdentifiersRequest:
    return apb.RegisterIdentifiersRequest(
        case_reference=f"XB-BENCH-{start // BATCH}",
        contact_point="XB benchmark desk",
        identifiers=[
            mpb.IdentifierValue(type=mpb.IDENTIFIER_TYPE_PHONE, value=_phone(n))
            for n in range(start, stop)
        ],
    )


def pad_index(directory: Path, entries: int) -> None:
    """Write `entries` synthetic entries into the index of the node in `directory`."""
    store = Store.open(load_node_config(directory).database_url())
    sealed_size = len(matching.seal_hit(bytes(32), _HIT, bytes(16)).sealed_hit)
    began = time.perf_counter()
    try:
        with store.engine.connect() as connection:
            (version,) = connection.execute(
                select(MATCH_KEYS.c.key_version).where(MATCH_KEYS.c.state == ACTIVE)
            ).one()
        for start in range(0, entries, 50_000):
            rows = [
                {
                    "key_version": version,
                    "bucket": int.from_bytes(os.urandom(4), "big"),
                    "element": os.urandom(32),
                    "tag": os.urandom(16),
                    "sealed_hit": os.urandom(sealed_size),
                    "case_reference": f"XB-PADDING-{n // BATCH}",
                    "registered_at": 0,
                    "registered_by": "bench",
                }
                for n in range(start, min(start + 50_000, entries))
            ]
            with store.engine.begin() as connection:
                connection.execute(insert(MATCH_INDEX), rows)
    finally:
        store.dispose()
    took = time.perf_counter() - began
    print(f"padded the index with {entries:,} synthetic entries in {took:.0f} s")


async def run(identifiers: int, queries: int, padding: int, database_url_for: object) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sims = build_federation(
            Path(tmp),
            sample_countries(2),
            now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
            database_url_for=database_url_for,  # type: ignore[arg-type]
        )
        for sim in sims:
            with (sim.directory / "node.toml").open("a") as config:
                config.write(_LIMITS)
        processes = [NodeProcess(sim, {"EXCHANGE_LOG_LEVEL": "warning"}) for sim in sims]
        for process in processes:
            process.start()
        asker, holder = sims
        if padding:
            await asyncio.to_thread(pad_index, holder.directory, padding)
        registrar = AuthorityClient(
            holder.authority_address,
            holder.case_worker_token,
            ca_certificate=holder.authority_certificate,
            timeout=600,
        )
        querier = AuthorityClient(
            asker.authority_address,
            asker.case_worker_token,
            ca_certificate=asker.authority_certificate,
        )
        try:
            starts = list(range(0, identifiers, BATCH))
            began = time.perf_counter()

            async def registering() -> None:
                while starts:
                    start = starts.pop(0)
                    await registrar.register_identifiers(
                        _batch(start, min(start + BATCH, identifiers))
                    )

            await asyncio.gather(registering(), registering())
            indexing = time.perf_counter() - began
            print(
                f"indexed {identifiers:,} identifiers in {indexing:.1f} s: "
                f"{identifiers / indexing:,.0f} identifiers/s (target >= 10,000)"
            )

            latencies, hits = [], 0
            for q in range(queries):
                n = q * 7919 % identifiers if q % 2 == 0 else identifiers + q
                request = mpb.QueryRequest(
                    identifiers=[
                        mpb.IdentifierValue(type=mpb.IDENTIFIER_TYPE_PHONE, value=_phone(n))
                    ],
                    peer_node_ids=[holder.node_id],
                    deadline_ms=5000,
                )
                t0 = time.perf_counter()
                answer = await querier.query(request)
                latencies.append((time.perf_counter() - t0) * 1000)
                hits += answer.answers[0].outcome == mpb.QUERY_OUTCOME_HIT
            latencies.sort()
            p50 = statistics.median(latencies)
            p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
            print(
                f"{queries} queries against a peer holding {identifiers + padding:,}: "
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (target p99 < 20 ms); "
                f"{hits} hits (expected {(queries + 1) // 2})"
            )
        finally:
            await registrar.close()
            await querier.close()
            for process in processes:
                process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identifiers", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--padding", type=int, default=0)
    parser.add_argument("--postgres-url", default="")
    args = parser.parse_args()
    configure_logging("warning", "json")
    print("store: " + ("PostgreSQL" if args.postgres_url else "SQLite (WAL, synchronous FULL)"))
    with contextlib.ExitStack() as stack:
        urls = (
            stack.enter_context(postgres_schemas(args.postgres_url)) if args.postgres_url else None
        )
        asyncio.run(
            run(
                args.identifiers,
                args.queries,
                args.padding,
                urls.__getitem__ if urls is not None else None,
            )
        )


if __name__ == "__main__":
    main()
