"""A real federation on loopback, in this process: nodes, mTLS, gRPC, stores.

Built by the simulation harness's own setup (the admins' operations), once per
store engine. Nodes run in the test's event loop; `crash` stops one without a
grace period and `start` loads it again from its directory, as a restart does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import sys
import traceback
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from exchange.clock import Clock
from exchange.harness.setup import SimNode, build_federation, sample_countries
from exchange.node import Node
from exchange.rpc.client import AuthorityClient
from tests.conftest import DatabaseFactory

# A stop without grace takes well under a second; a hung one fails with the tasks' stacks.
STOP_DEADLINE_SECONDS = 60
SLOW_STOP_SECONDS = 10


def _task_stacks() -> str:
    """Every task's and thread's stack, to show what a stop that hangs waits on."""
    # Not Task.print_stack: linecache raises on a frame whose line number is None.
    lines = []
    for task in asyncio.all_tasks():
        lines.append(repr(task))
        lines.extend(
            f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
            for frame in task.get_stack()
        )
    # Store calls run in threads: what they wait on is in their own stacks.
    for thread_id, frame in sys._current_frames().items():
        lines.append(f"thread {thread_id}:")
        lines.extend("  " + line.rstrip() for line in traceback.format_stack(frame))
    return "\n".join(lines)


@dataclasses.dataclass
class Federation:
    nodes: list[SimNode]
    running: dict[str, Node]
    clocks: dict[str, Clock | None]
    _clients: list[AuthorityClient] = dataclasses.field(default_factory=list)

    def sim(self, index: int) -> SimNode:
        return self.nodes[index]

    def node(self, index: int) -> Node:
        return self.running[self.nodes[index].node_id]

    def client(self, index: int, *, token: str | None = None) -> AuthorityClient:
        """An authority client of node `index` (its case worker unless another token is given)."""
        sim = self.nodes[index]
        client = AuthorityClient(
            sim.authority_address,
            token if token is not None else sim.case_worker_token,
            ca_certificate=sim.authority_certificate,
            timeout=10,
        )
        self._clients.append(client)
        return client

    def auditor(self, index: int) -> AuthorityClient:
        return self.client(index, token=self.nodes[index].auditor_token)

    async def crash(self, node_id: str) -> None:
        node = self.running.pop(node_id)
        stopping = asyncio.ensure_future(node.stop(grace=0))
        done, _ = await asyncio.wait({stopping}, timeout=SLOW_STOP_SECONDS)
        if not done:
            print(f"{node_id} slow to stop:\n{_task_stacks()}", file=sys.stderr)
            try:
                await asyncio.wait_for(stopping, STOP_DEADLINE_SECONDS - SLOW_STOP_SECONDS)
            except TimeoutError:
                raise AssertionError(f"{node_id} did not stop:\n{_task_stacks()}") from None
        stopping.result()

    async def start(self, node_id: str, *, deliver: bool = True) -> Node:
        sim = next(n for n in self.nodes if n.node_id == node_id)
        node = Node.load(sim.directory, clock=self.clocks.get(node_id))
        await node.start(deliver=deliver)
        self.running[node_id] = node
        return node

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
        for node_id in list(self.running):
            await self.crash(node_id)


async def start_federation(
    root: Path,
    databases: DatabaseFactory,
    *,
    countries: int = 3,
    clocks: dict[str, Clock | None] | None = None,
    deliver: bool = True,
    now: dt.datetime | None = None,
) -> Federation:
    nodes = build_federation(
        root,
        sample_countries(countries),
        # Set up "yesterday", so that envelopes made in the recent past are in key validity.
        now=now or dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
        database_url_for=databases.new_url,
    )
    federation = Federation(nodes, {}, clocks or {})
    try:
        for sim in nodes:
            await federation.start(sim.node_id, deliver=deliver)
    except BaseException:
        await federation.close()
        raise
    return federation


@pytest.fixture
async def federation(tmp_path: Path, databases: DatabaseFactory) -> AsyncIterator[Federation]:
    """Three running nodes (XA, XB, XC) on one store engine."""
    running = await start_federation(tmp_path, databases)
    try:
        yield running
    finally:
        await running.close()
