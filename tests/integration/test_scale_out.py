"""Several `serve` processes of one node: races between them, and SQLite's one process.

Two `Node`s loaded from one node directory, each on its own ports, share
nothing in memory: they are two processes of the node as far as the store,
the ports and the keys are concerned (`tests/faults/test_scale_out.py` runs
real processes). Here the races are driven exactly: the same envelope to both
at once, the same client_request_id to both at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from exchange.errors import ConfigError
from exchange.harness import samples
from exchange.harness.setup import SimNode, build_federation, free_port, sample_countries
from exchange.node import Node
from exchange.rpc.client import AuthorityClient
from exchange.store import coordination
from tests.adversarial._envelopes import Trace, audited, trace
from tests.conftest import DatabaseFactory
from tests.peers import craft_envelope, deliver_as, referral_notice

ROUNDS = 8


def _second_process(sim: SimNode) -> Node:
    """Node `sim` loaded again, as a second process on ports of its own."""
    return Node.load(
        sim.directory,
        environ={
            **os.environ,
            "EXCHANGE_FEDERATION_LISTEN": f"127.0.0.1:{free_port()}",
            "EXCHANGE_AUTHORITY_LISTEN": f"127.0.0.1:{free_port()}",
        },
    )


@dataclasses.dataclass
class Running:
    sims: list[SimNode]
    nodes: list[Node]


@pytest.fixture
async def running(tmp_path: Path, databases: DatabaseFactory) -> AsyncIterator[Running]:
    """XA and XB (the first process of each), started without delivery."""
    sims = build_federation(
        tmp_path,
        sample_countries(2),
        now=dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
        database_url_for=databases.new_url,
    )
    started = Running(sims, [])
    try:
        for sim in sims:
            node = Node.load(sim.directory)
            await node.start(deliver=False)
            started.nodes.append(node)
        yield started
    finally:
        for node in started.nodes:
            await node.stop(grace=0)


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
async def test_the_same_envelope_to_two_processes_at_once_is_stored_once(
    running: Running,
) -> None:
    sender, first = running.nodes
    second = _second_process(running.sims[1])
    await second.start(deliver=False)
    try:
        recipient = first.context.node_id
        for _ in range(ROUNDS):
            envelope = craft_envelope(sender, [recipient], referral_notice())
            answers = await asyncio.gather(
                deliver_as(sender, first, envelope), deliver_as(sender, second, envelope)
            )
            assert answers[0].receipt == answers[1].receipt, "two receipts for one envelope"
        assert await trace(first) == Trace(ROUNDS, ROUNDS, ROUNDS, ROUNDS, 0)
        assert len(await audited(first, "notice.received")) == ROUNDS
    finally:
        await second.stop(grace=0)


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
async def test_one_client_request_id_at_two_processes_at_once_is_one_notice(
    running: Running,
) -> None:
    first, _ = running.nodes
    sim = running.sims[0]
    second = _second_process(sim)
    await second.start(deliver=False)
    clients = [
        AuthorityClient(
            f"127.0.0.1:{node.authority_port}",
            sim.case_worker_token,
            ca_certificate=sim.authority_certificate,
            timeout=10,
        )
        for node in (first, second)
    ]
    try:
        recipient = running.sims[1].node_id
        for i in range(ROUNDS):
            request = samples.case_referral([recipient], f"XA-{i}", "Submitted twice at once.")
            request.client_request_id = f"retry-{i}"
            answers = await asyncio.gather(*(c.submit(request) for c in clients))
            assert answers[0].message_id == answers[1].message_id, "one request, two notices"
        assert await trace(first) == Trace(ROUNDS, ROUNDS, 0, 0, ROUNDS)
        assert len(await audited(first, "notice.submitted")) == ROUNDS
    finally:
        for client in clients:
            await client.close()
        await second.stop(grace=0)


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
async def test_a_second_serve_on_one_sqlite_store_is_refused(running: Running) -> None:
    first = running.nodes[1]
    second = _second_process(running.sims[1])
    with pytest.raises(ConfigError, match="another `exchange serve` is running on the SQLite"):
        await second.start()
    # It bound nothing and holds nothing: once the first has stopped, it may serve.
    running.nodes.remove(first)
    await first.stop(grace=0)
    third = _second_process(running.sims[1])
    await third.start(deliver=False)
    await third.stop(grace=0)


async def _leaders(nodes: list[Node], count: int) -> list[Node]:
    """Wait until exactly `count` of `nodes` lead (a heartbeat or two); returns them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10 * coordination.HEARTBEAT_SECONDS
    while len(leading := [node for node in nodes if node.leads]) != count:
        assert loop.time() < deadline, f"{len(leading)} of {len(nodes)} lead, not {count}"
        await asyncio.sleep(0.05)
    return leading


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
async def test_one_process_leads_and_another_takes_over_when_it_stops(running: Running) -> None:
    first = running.nodes[1]
    second = _second_process(running.sims[1])
    await second.start(deliver=False)
    try:
        (leader,) = await _leaders([first, second], 1)
        # XA's processes lead XA's jobs: a lock per node, not one for the database.
        await _leaders([running.nodes[0]], 1)
        follower = second if leader is first else first
        await leader.stop(grace=0)
        if leader is first:
            running.nodes.remove(first)
        assert await _leaders([follower], 1) == [follower]
    finally:
        if second.session is not None:
            await second.stop(grace=0)
