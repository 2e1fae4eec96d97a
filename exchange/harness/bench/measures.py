"""The seven measures of issue 7, each against a ceiling measured in the same run.

Each measure sets up its own federation (real `serve` processes, mTLS between
nodes, TLS and tokens on the authority ports), runs, stops the nodes (reading
their peak memory first), and then measures its ceiling with bare gRPC
processes (`bench.bare`) carrying the same bytes over the same kind of TLS while
the nodes no longer compete for the CPU.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange._proto.exchange.v1 import notices_pb2 as npb
from exchange.admin.node import open_store
from exchange.config import DeliveryConfig
from exchange.harness import samples
from exchange.harness.bench import fill
from exchange.harness.bench.bare import BareClient, BareServer, Security
from exchange.harness.bench.nodes import (
    BenchError,
    Nodes,
    authority_client,
    federation,
    sample_delivery,
    wait_delivered,
)
from exchange.harness.bench.results import Figure, MeasureResult
from exchange.harness.setup import SimNode, free_port
from exchange.rpc.client import AuthorityClient

__all__ = ["MEASURES", "Settings"]


# Envelopes per message in the drain's batched bare stream: the delivery worker's
# default batch.
_DRAIN_BATCH = DeliveryConfig().batch_size


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes of every measure; `quick()` scales them down for a test."""

    engine: str
    postgres_url: str
    drain_notices: int = 20_000
    b_processes: int = 1
    submit_notices: int = 2_000
    concurrency: int = 8
    latency_notices: int = 1_000
    latency_rate: float = 100.0
    fanout_nodes: int = 20
    fanout_repeats: int = 5
    bulk_hashes: int = 500_000
    growth_small: int = 1_000
    growth_large: int = 1_000_000
    growth_queries: int = 300
    timeout: float = 1800.0

    def scaled(self, scale: float) -> Settings:
        def n(value: int, least: int) -> int:
            return max(least, round(value * scale))

        return dataclasses.replace(
            self,
            drain_notices=n(self.drain_notices, 20),
            submit_notices=n(self.submit_notices, 16),
            latency_notices=n(self.latency_notices, 20),
            fanout_nodes=n(self.fanout_nodes, 2),
            bulk_hashes=n(self.bulk_hashes, 100),
            growth_small=n(self.growth_small, 100),
            growth_large=n(self.growth_large, 200),
            growth_queries=n(self.growth_queries, 20),
        )

    def quick(self) -> Settings:
        return dataclasses.replace(
            self,
            drain_notices=50,
            submit_notices=40,
            latency_notices=30,
            fanout_nodes=2,
            fanout_repeats=2,
            bulk_hashes=1_000,
            growth_small=100,
            growth_large=400,
            growth_queries=20,
            timeout=120.0,
        )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _bearer(sim: SimNode) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {sim.case_worker_token}"),)


async def _in_parallel(calls: int, concurrency: int, call: Callable[[], Awaitable[Any]]) -> None:
    remaining = iter(range(calls))

    async def worker() -> None:
        for _ in remaining:
            await call()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


class _Bare:
    """Bare servers and their clients, stopped together."""

    def __init__(self) -> None:
        self.servers: list[BareServer] = []
        self.clients: list[BareClient] = []

    async def connect(
        self, server_sim: SimNode, security: Security, client_sim: SimNode, reply_bytes: int = 0
    ) -> BareClient:
        server = BareServer(server_sim.directory, free_port(), security, reply_bytes=reply_bytes)
        self.servers.append(server)
        client = BareClient(server, client_sim.directory)
        self.clients.append(client)
        await client.ready()
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for server in self.servers:
            server.stop()


async def _run_with_nodes(
    settings: Settings,
    countries: int,
    measure: Callable[[list[SimNode], Nodes], Awaitable[dict[str, Any]]],
    ceiling: Callable[[list[SimNode], _Bare, dict[str, Any]], Awaitable[dict[str, Any]]],
    *,
    b_processes: int = 1,
    readers: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """A fresh federation: the measure with the nodes, then the ceiling without them."""
    with federation(
        settings.engine,
        settings.postgres_url,
        countries,
        b_processes=b_processes,
        readers=readers,
    ) as sims:
        nodes = Nodes()
        try:
            figures = await measure(sims, nodes)
        except BaseException:
            print(nodes.log_tails())
            raise
        finally:
            nodes.stop()
        bare = _Bare()
        try:
            ceilings = await ceiling(sims, bare, figures)
        finally:
            await bare.close()
    return figures, ceilings, nodes.peak_memory_mib


async def _submit_many(
    client: AuthorityClient, request: apb.SubmitNoticeRequest, count: int, concurrency: int
) -> None:
    async def one() -> None:
        await client.submit(request)

    await _in_parallel(count, concurrency, one)


def _referral(recipients: list[str]) -> apb.SubmitNoticeRequest:
    return samples.case_referral(recipients, "XA-2026-0001", "Benchmark notice.")


# 1. Backlog drain ---------------------------------------------------------------------


async def drain(settings: Settings) -> MeasureResult:
    n = settings.drain_notices

    async def measure(sims: list[SimNode], nodes: Nodes) -> dict[str, Any]:
        a, b = sims
        nodes.start_node(a)
        async with authority_client(a) as client:
            began = time.perf_counter()
            await _submit_many(client, _referral([b.node_id]), n, settings.concurrency)
            queued = time.perf_counter() - began
        started = time.perf_counter()
        nodes.start_node(b)
        serving = time.perf_counter()
        store = open_store(a.directory)
        try:
            # A learns that B is back only when its retry backoff (at most 2 s here) ends.
            await wait_delivered(store, 1, timeout=settings.timeout, interval=0.005)
            first = time.perf_counter() - serving
            await wait_delivered(store, n, timeout=settings.timeout)
        finally:
            store.dispose()
        drained = time.perf_counter() - serving
        return {
            "queue_seconds": queued,
            "b_start_seconds": serving - started,
            "first_receipt_seconds": first,
            "drain_seconds": drained,
            "notices_per_second": n / drained,
            "after_first_receipt_per_second": (n - 1) / max(drained - first, 1e-9),
        }

    async def ceiling(sims: list[SimNode], bare: _Bare, _figure: dict[str, Any]) -> dict[str, Any]:
        a, b = sims
        request, reply_bytes = sample_delivery(a)
        client = await bare.connect(b, "mtls", a, reply_bytes)
        began = time.perf_counter()
        replies = 0
        async for _ in client.stream(iter([request] * n)):
            replies += 1
        took = time.perf_counter() - began
        assert replies == n
        # Beside it, not the headline: the same bytes in messages of a delivery batch
        # each, as the exchange's DeliverBatches packs them.
        batched = await bare.connect(b, "mtls", a, reply_bytes * _DRAIN_BATCH)
        messages = max(1, n // _DRAIN_BATCH)
        began = time.perf_counter()
        async for _ in batched.stream(iter([request * _DRAIN_BATCH] * messages)):
            pass
        batched_took = time.perf_counter() - began
        return {
            "envelope_bytes": len(request),
            "reply_bytes": reply_bytes,
            "stream_seconds": took,
            "notices_per_second": n / took,
            "batched_notices_per_second": messages * _DRAIN_BATCH / batched_took,
        }

    figure, ceil, peak = await _run_with_nodes(
        settings, 2, measure, ceiling, b_processes=settings.b_processes
    )
    return MeasureResult(
        "drain",
        settings.engine,
        [
            Figure.rate(
                "backlog drain",
                "notices/s",
                figure["notices_per_second"],
                ceil["notices_per_second"],
                ">= 2,000/s and >= 0.40",
            )
        ],
        {"notices": n, "b_processes": settings.b_processes},
        {"exchange": figure, "ceiling": ceil},
        peak,
    )


# 2. Submit throughput -----------------------------------------------------------------


async def submit(settings: Settings) -> MeasureResult:
    n, concurrency = settings.submit_notices, settings.concurrency

    async def measure(sims: list[SimNode], nodes: Nodes) -> dict[str, Any]:
        a, b = sims
        nodes.start_node(a)
        nodes.start_node(b)
        store = open_store(a.directory)
        try:
            async with authority_client(a) as client:
                began = time.perf_counter()
                await _submit_many(client, _referral([b.node_id]), n, concurrency)
                submitted = time.perf_counter() - began
                await wait_delivered(store, n, timeout=settings.timeout)
                took = time.perf_counter() - began
        finally:
            store.dispose()
        return {
            "submit_seconds": submitted,
            "until_every_receipt_seconds": took,
            "notices_per_second": n / took,
        }

    async def ceiling(sims: list[SimNode], bare: _Bare, _figure: dict[str, Any]) -> dict[str, Any]:
        a, _b = sims
        request = _referral([sims[1].node_id]).SerializeToString()
        client = await bare.connect(a, "tls", a)
        metadata = _bearer(a)

        async def one() -> None:
            await client.echo(request, metadata=metadata)

        began = time.perf_counter()
        await _in_parallel(n, concurrency, one)
        took = time.perf_counter() - began
        return {"request_bytes": len(request), "seconds": took, "calls_per_second": n / took}

    figure, ceil, peak = await _run_with_nodes(settings, 2, measure, ceiling)
    return MeasureResult(
        "submit",
        settings.engine,
        [
            Figure.rate(
                "submit throughput",
                "notices/s",
                figure["notices_per_second"],
                ceil["calls_per_second"],
                ">= 0.50",
            )
        ],
        {"notices": n, "concurrency": concurrency},
        {"exchange": figure, "ceiling": ceil},
        peak,
    )


# 3. Latency ---------------------------------------------------------------------------


async def _open_loop(
    count: int, rate: float, call: Callable[[float], Coroutine[Any, Any, None]]
) -> float:
    """Start `call(scheduled)` at a fixed schedule, whether earlier calls finished or not.

    Returns the rate the calls completed at: below the offered rate, the
    latencies measured grow with the queue, as they would for real clients.
    """
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.05
    for i in range(count):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(call(scheduled)))
    await asyncio.gather(*tasks)
    return count / (time.perf_counter() - start)


async def latency(settings: Settings) -> MeasureResult:
    count, rate = settings.latency_notices, settings.latency_rate

    async def measure(sims: list[SimNode], nodes: Nodes) -> dict[str, Any]:
        a, b = sims
        nodes.start_node(a)
        nodes.start_node(b)
        request = _referral([b.node_id])
        seen: dict[str, float] = {}
        everything = asyncio.Event()
        sent: dict[str, float] = {}
        # When each SubmitNotice returned: the part of the latency that is node A's call.
        accepted: dict[str, float] = {}

        async with authority_client(a) as sender, authority_client(b) as receiver:

            async def watch() -> None:
                async for event in receiver.watch():
                    seen[event.message_id] = time.perf_counter()
                    if len(seen) >= count + 5 and all(m in seen for m in sent):
                        everything.set()

            watcher = asyncio.create_task(watch())
            try:
                # Warm up: channels open, the watcher's stream established.
                for _ in range(5):
                    await sender.submit(request)

                async def one(scheduled: float) -> None:
                    submitted = await sender.submit(request)
                    accepted[submitted.message_id] = time.perf_counter()
                    sent[submitted.message_id] = scheduled

                completed = await _open_loop(count, rate, one)
                if not (len(seen) >= count + 5 and all(m in seen for m in sent)):
                    await asyncio.wait_for(everything.wait(), settings.timeout)
            finally:
                watcher.cancel()
        latencies = [(seen[m] - scheduled) * 1000 for m, scheduled in sent.items()]
        submits = [(accepted[m] - scheduled) * 1000 for m, scheduled in sent.items()]
        return {
            "p50_ms": statistics.median(latencies),
            "p99_ms": _percentile(latencies, 0.99),
            "max_ms": max(latencies),
            "submit_call_p50_ms": statistics.median(submits),
            "submit_call_p99_ms": _percentile(submits, 0.99),
            "submits_completed_per_second": completed,
        }

    async def ceiling(sims: list[SimNode], bare: _Bare, _figure: dict[str, Any]) -> dict[str, Any]:
        a, b = sims
        request = _referral([b.node_id]).SerializeToString()
        client = await bare.connect(a, "tls", a)
        metadata = _bearer(a)
        latencies: list[float] = []

        async def one(scheduled: float) -> None:
            await client.sink(request, metadata=metadata)
            latencies.append((time.perf_counter() - scheduled) * 1000)

        completed = await _open_loop(count, rate, one)
        return {
            "p50_ms": statistics.median(latencies),
            "p99_ms": _percentile(latencies, 0.99),
            "max_ms": max(latencies),
            "calls_completed_per_second": completed,
        }

    figure, ceil, peak = await _run_with_nodes(settings, 2, measure, ceiling)
    return MeasureResult(
        "latency",
        settings.engine,
        [
            Figure.time("latency p50", "ms", figure["p50_ms"], ceil["p50_ms"], "<= 10 ms"),
            Figure.time("latency p99", "ms", figure["p99_ms"], ceil["p99_ms"], "<= 50 ms"),
        ],
        {"notices": count, "offered_per_second": rate},
        {"exchange": figure, "ceiling (bare unary round trip)": ceil},
        peak,
    )


# 4. Fan-out ---------------------------------------------------------------------------


def _alert(recipients: list[str]) -> apb.SubmitNoticeRequest:
    """A TravelAlert (urgent, OPSC art. 10(1)) to every recipient at once."""
    request = samples.travel_alert(recipients[0], "XA-2026-0003", dt.datetime.now(dt.UTC))
    request.recipient_node_ids[:] = recipients
    assert request.notice.travel_alert.urgency == npb.URGENCY_URGENT
    return request


_FANOUT_READERS = 1


async def fanout(settings: Settings) -> MeasureResult:
    width, repeats = settings.fanout_nodes, settings.fanout_repeats

    async def measure(sims: list[SimNode], nodes: Nodes) -> dict[str, Any]:
        a, recipients = sims[0], sims[1:]
        for sim in sims:
            nodes.start_node(sim)
        request = _alert([sim.node_id for sim in recipients])
        times = []
        store = open_store(a.directory)
        try:
            async with authority_client(a) as client:
                # The first alert opens the channels to every peer; it is not counted.
                for i in range(repeats + 1):
                    began = time.perf_counter()
                    await client.submit(request)
                    await wait_delivered(
                        store, width * (i + 1), timeout=settings.timeout, interval=0.002
                    )
                    if i:
                        times.append((time.perf_counter() - began) * 1000)
        finally:
            store.dispose()
        return {"median_ms": statistics.median(times), "times_ms": times}

    async def ceiling(sims: list[SimNode], bare: _Bare, _figure: dict[str, Any]) -> dict[str, Any]:
        a, recipients = sims[0], sims[1:]
        request, reply_bytes = sample_delivery(a)
        clients = [await bare.connect(sim, "mtls", a, reply_bytes) for sim in recipients]
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            await asyncio.gather(*(client.sink(request) for client in clients))
            times.append((time.perf_counter() - began) * 1000)
        return {"median_ms": statistics.median(times), "times_ms": times}

    # Every node on one PostgreSQL server (max_connections 100 by default): 21 processes
    # of at most readers + 3 connections each fit with one reader, not with the default
    # four (nodes that each take one alert read little).
    figure, ceil, peak = await _run_with_nodes(
        settings, width + 1, measure, ceiling, readers=_FANOUT_READERS
    )
    return MeasureResult(
        "fanout",
        settings.engine,
        [
            Figure.time(
                f"fan-out to {width}", "ms", figure["median_ms"], ceil["median_ms"], "milliseconds"
            )
        ],
        {"recipients": width, "repeats": repeats, "notice": "TravelAlert, urgent"},
        {"exchange": figure, "ceiling": ceil},
        peak,
    )


# 5. Bulk ------------------------------------------------------------------------------


async def bulk(settings: Settings) -> MeasureResult:
    size = settings.bulk_hashes
    request = samples.content_hash_referral(
        "", "XA-2026-0004", [os.urandom(32) for _ in range(size)]
    )

    async def measure(sims: list[SimNode], nodes: Nodes) -> dict[str, Any]:
        a, b = sims
        nodes.start_node(a)
        nodes.start_node(b)
        request.recipient_node_ids[:] = [b.node_id]
        store = open_store(a.directory)
        try:
            async with authority_client(a) as sender, authority_client(b) as reader:
                began = time.perf_counter()
                submitted = await sender.submit(request)
                submit_s = time.perf_counter() - began
                await wait_delivered(store, 1, timeout=settings.timeout, interval=0.01)
                delivered_s = time.perf_counter() - began - submit_s
                read_began = time.perf_counter()
                notice = await reader.get_notice(submitted.message_id)
                read_s = time.perf_counter() - read_began
        finally:
            store.dispose()
        hashes = len(notice.notice.content_hash_referral.hashes)
        if hashes != size:
            raise BenchError(f"read {hashes} hashes back, not {size}")
        return {
            "submit_s": submit_s,
            "deliver_and_store_s": delivered_s,
            "read_s": read_s,
            "total_s": submit_s + delivered_s + read_s,
            "request_bytes": request.ByteSize(),
            "read_bytes": notice.ByteSize(),
        }

    async def ceiling(sims: list[SimNode], bare: _Bare, figure: dict[str, Any]) -> dict[str, Any]:
        a, b = sims
        envelope, reply_bytes = sample_delivery(a)
        upload = await bare.connect(a, "tls", a)
        peer = await bare.connect(b, "mtls", a, reply_bytes)
        download = await bare.connect(b, "tls", b)
        began = time.perf_counter()
        await upload.sink(request.SerializeToString(), metadata=_bearer(a))
        submit_s = time.perf_counter() - began
        await peer.sink(envelope)
        deliver_s = time.perf_counter() - began - submit_s
        read_began = time.perf_counter()
        await download.source(str(figure["read_bytes"]).encode(), metadata=_bearer(b))
        read_s = time.perf_counter() - read_began
        return {
            "submit_s": submit_s,
            "deliver_and_store_s": deliver_s,
            "read_s": read_s,
            "total_s": submit_s + deliver_s + read_s,
            "envelope_bytes": len(envelope),
        }

    figure, ceil, peak = await _run_with_nodes(settings, 2, measure, ceiling)
    return MeasureResult(
        "bulk",
        settings.engine,
        [
            Figure.time(f"bulk {name}", "ms", figure[key] * 1000, ceil[key] * 1000)
            for name, key in (
                ("submit", "submit_s"),
                ("deliver+store", "deliver_and_store_s"),
                ("read", "read_s"),
                ("total", "total_s"),
            )
        ],
        {"hashes": size},
        {"exchange": figure, "ceiling": ceil},
        peak,
    )


# 6. Store growth ----------------------------------------------------------------------


def _sample(ids: list[str], count: int) -> Iterator[str]:
    for _ in range(count):
        yield random.choice(ids)  # noqa: S311 (not a secret)


async def _query_times(
    client: AuthorityClient, outgoing: list[str], queries: int
) -> dict[str, float]:
    listing, lookup = [], []
    for message_id in _sample(outgoing, queries):
        began = time.perf_counter()
        page = await client.list_inbox()
        listing.append((time.perf_counter() - began) * 1000)
        began = time.perf_counter()
        status = await client.delivery_status(message_id)
        lookup.append((time.perf_counter() - began) * 1000)
        if not page.notices or not status.recipients[0].receipt.body:
            raise BenchError("an empty inbox page or a delivery without its receipt")
    return {
        "list_inbox_p50_ms": statistics.median(listing),
        "list_inbox_p99_ms": _percentile(listing, 0.99),
        "delivery_status_p50_ms": statistics.median(lookup),
        "delivery_status_p99_ms": _percentile(lookup, 0.99),
    }


async def growth(settings: Settings) -> MeasureResult:
    small, large, queries = settings.growth_small, settings.growth_large, settings.growth_queries
    real = 10

    async def measure(sims: list[SimNode], nodes: Nodes) -> dict[str, Any]:
        a, b = sims
        nodes.start_node(a)
        nodes.start_node(b)
        a_store, b_store = open_store(a.directory), open_store(b.directory)
        try:
            async with authority_client(a) as at_a, authority_client(b) as at_b:
                # B receives real notices and sends real ones: templates of both directions.
                await _submit_many(at_a, _referral([b.node_id]), real, 4)
                outgoing = [(await at_b.submit(_referral([a.node_id]))).message_id]
                await _submit_many(at_b, _referral([a.node_id]), real - 1, 4)
                await wait_delivered(a_store, real, timeout=settings.timeout)
                await wait_delivered(b_store, real, timeout=settings.timeout)
                incoming = (await at_b.list_inbox(page_size=1)).notices[0].message_id
                templates = [
                    fill.template(b_store, incoming),
                    fill.template(b_store, outgoing[0]),
                ]
                figures: dict[str, Any] = {}
                held: int = 2 * real
                for size in (small, large):
                    ids, took = await asyncio.to_thread(
                        fill.timed_copy, b_store, templates, size - held
                    )
                    outgoing += ids[1]
                    held = size
                    figures[str(size)] = {
                        **await _query_times(at_b, outgoing, queries),
                        "fill_seconds": took,
                    }
        finally:
            a_store.dispose()
            b_store.dispose()
        return figures

    async def ceiling(*_: object) -> dict[str, Any]:
        return {}

    figure, _, peak = await _run_with_nodes(settings, 2, measure, ceiling)
    at_small, at_large = figure[str(small)], figure[str(large)]
    rows = []
    for name, key in (
        ("ListInbox p50", "list_inbox_p50_ms"),
        ("ListInbox p99", "list_inbox_p99_ms"),
        ("GetDeliveryStatus p50", "delivery_status_p50_ms"),
        ("GetDeliveryStatus p99", "delivery_status_p99_ms"),
    ):
        rows.append(
            Figure(
                f"{name} at {large:,} vs {small:,}",
                "ms",
                at_large[key],
                at_small[key],
                at_large[key] / at_small[key],
                "ratio <= 2",
            )
        )
    return MeasureResult(
        "growth",
        settings.engine,
        rows,
        {"small": small, "large": large, "queries": queries, "node": "B, half in, half out"},
        {"exchange": figure},
        peak,
    )


# The seventh measure, peak memory, is taken in every other one (MeasureResult.peak_memory_mib).
MEASURES: dict[str, Callable[[Settings], Awaitable[MeasureResult]]] = {
    "drain": drain,
    "submit": submit,
    "latency": latency,
    "fanout": fanout,
    "bulk": bulk,
    "growth": growth,
}
