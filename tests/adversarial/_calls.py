"""Raw calls on a running node's two ports, and one federation per engine for a whole module.

Raw calls use identity serializers, so bytes that are not the method's message
reach the node exactly as an attacker would send them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import Connection, func, select

from exchange._proto.exchange.v1 import authority_pb2, federation_pb2
from exchange.admin import node as node_admin
from exchange.audit import LoggedEntry
from exchange.clock import ManualClock
from exchange.layout import NodeLayout
from exchange.node import Node
from exchange.rpc.peers import MAX_MESSAGE_BYTES, channel_options
from exchange.store import audit_log, outbox
from exchange.store.tables import (
    ENVELOPES,
    INBOX_EVENTS,
    MATCH_INDEX,
    NOTICES,
    OUTBOX,
    RECEIPTS,
    RESTRICTED_SECTIONS,
)
from tests.conftest import ENGINES, DatabaseFactory
from tests.live import Federation, start_federation

FEDERATION = federation_pb2.DESCRIPTOR.services_by_name["Federation"]
AUTHORITY = authority_pb2.DESCRIPTOR.services_by_name["Authority"]
# What a node answers on purpose: anything but these two is a typed status.
UNTYPED = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})
# A stream still open this long after the call was accepted and is waiting for events:
# a refusal comes before the first event, at once.
STREAM_OPEN_SECONDS = 0.1


def _identity(data: bytes) -> bytes:
    return data


def authority_channel(federation: Federation, index: int) -> grpc.aio.Channel:
    """A TLS channel to node `index`'s authority port (no token: calls add their own)."""
    sim = federation.sim(index)
    return grpc.aio.secure_channel(
        sim.authority_address,
        grpc.ssl_channel_credentials(root_certificates=sim.authority_certificate),
        options=[
            ("grpc.max_send_message_length", 4 * MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ],
    )


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def raw_call(
    channel: grpc.aio.Channel,
    path: str,
    data: bytes,
    *,
    metadata: tuple[tuple[str, str], ...] = (),
    streaming: bool = False,
    timeout: float = 30,
) -> grpc.StatusCode:
    """Send `data` as the request of `path`; the status the node answers with.

    A stream that is accepted and then waits for events (WatchInbox past the
    newest event) counts as OK once it has been open for a moment.
    """
    try:
        if not streaming:
            await channel.unary_unary(
                path, request_serializer=_identity, response_deserializer=_identity
            )(data, metadata=metadata, timeout=timeout)
            return grpc.StatusCode.OK
        call = channel.unary_stream(
            path, request_serializer=_identity, response_deserializer=_identity
        )(data, metadata=metadata, timeout=timeout)
        try:
            async with asyncio.timeout(STREAM_OPEN_SECONDS):
                await call.read()
        except TimeoutError:
            pass
        finally:
            call.cancel()
        code = await call.code()
        return grpc.StatusCode.OK if code == grpc.StatusCode.CANCELLED else code
    except grpc.aio.AioRpcError as refused:
        return refused.code()


async def serving(node: Node) -> bool:
    """Whether both of `node`'s ports still answer health SERVING."""
    statuses = []
    for address, credentials, options in (
        (
            f"127.0.0.1:{node.federation_port}",
            node.tls.channel_credentials(),
            channel_options(node.context.node_id),
        ),
        (
            f"127.0.0.1:{node.authority_port}",
            grpc.ssl_channel_credentials(
                root_certificates=NodeLayout(
                    node.config.directory
                ).authority_certificate.read_bytes()
            ),
            [],
        ),
    ):
        async with grpc.aio.secure_channel(address, credentials, options=options) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=30
            )
            statuses.append(answer.status)
    return statuses == [health_pb2.HealthCheckResponse.SERVING] * 2


STORED = (NOTICES, ENVELOPES, OUTBOX, RECEIPTS, INBOX_EVENTS, RESTRICTED_SECTIONS, MATCH_INDEX)


async def stored(node: Node) -> dict[str, int]:
    """Rows in each table that an accepted request adds to (the audit log apart)."""

    def count(connection: Connection) -> dict[str, int]:
        return {
            table.name: int(
                connection.execute(select(func.count()).select_from(table)).scalar_one()
            )
            for table in STORED
        }

    return await node.context.store.read(count)


async def quiet(federation: Federation, seconds: float = 30) -> None:
    """Wait until no node has a delivery pending (so that stores only change when asked)."""

    def pending(connection: Connection) -> int:
        query = select(func.count()).select_from(OUTBOX).where(OUTBOX.c.state == outbox.PENDING)
        return int(connection.execute(query).scalar_one())

    for _ in range(int(seconds / 0.05)):
        counts = [await node.context.store.read(pending) for node in federation.running.values()]
        if not any(counts):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"deliveries still pending: {counts}")


async def audit_size(node: Node) -> int:
    return await node.context.store.read(audit_log.size)


async def audited_since(node: Node, size: int, action: str | None = None) -> list[LoggedEntry]:
    """The audit entries `node` appended after its log had `size` entries (of `action`)."""
    entries = await node.context.store.read(lambda c: audit_log.entries_after(c, size, 10_000))
    return [e for e in entries if action is None or e.action == action]


def admin_token(federation: Federation, index: int, name: str) -> str:
    """A new client of node `index` with every role."""
    return node_admin.add_client(
        federation.sim(index).directory, name, ["admin"], now=dt.datetime.now(dt.UTC)
    )


async def _shared(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    countries: int,
    clock: ManualClock | None,
) -> AsyncIterator[Federation]:
    root: Path = tmp_path_factory.mktemp(f"federation-{request.param}")
    databases = DatabaseFactory(request.param, root)
    nodes = ("xa-police", "xb-prosecution", "xc-childprotection")[:countries]
    try:
        running = await start_federation(
            root, databases, countries=countries, clocks=dict.fromkeys(nodes, clock)
        )
        try:
            yield running
        finally:
            await running.close()
    finally:
        databases.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=ENGINES)
async def module_federation(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Federation]:
    """Two running nodes (XA, XB) on one store engine, shared by a module's tests.

    For tests that leave the federation as they found it, or only add to it
    what later tests tolerate (fuzzed calls, refused requests).
    """
    async for running in _shared(request, tmp_path_factory, countries=2, clock=None):
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=ENGINES)
async def clocked_federation(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Federation, ManualClock]]:
    """Three running nodes (XA, XB, XC) on one store engine and one manual clock, per module."""
    clock = ManualClock(dt.datetime.now(dt.UTC))
    async for running in _shared(request, tmp_path_factory, countries=3, clock=clock):
        yield running, clock
