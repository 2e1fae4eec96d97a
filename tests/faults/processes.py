"""Node processes for crash and network faults: `exchange serve`, killed for real.

A SIGKILL cannot be shown on a node that runs in the test's own process, so
these cases start each node as its own process (`harness.processes`), arm a
failpoint (`exchange.failpoints`) through its environment, and look at both
stores and both authorities' views once it has been restarted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import text

from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange.failpoints import ENVIRONMENT_VARIABLE
from exchange.harness.processes import NodeProcess
from exchange.harness.setup import CountrySpec, SimNode, build_federation, sample_countries
from exchange.rpc.client import AuthorityClient
from exchange.store import inbox
from exchange.store.engine import Store
from tests.conftest import DatabaseFactory

__all__ = ["FAULT_CONFIG", "ProcessFederation", "assert_exactly_once", "start_processes"]

# Hang protection only: every wait below ends on an observed state well before.
DEADLINE_SECONDS = 90.0
POLL_SECONDS = 0.1

# Quick retries, and a short lease: a row claimed by a process killed mid-attempt
# is due again after its lease (60 s by default), which the cases wait out.
FAULT_CONFIG = """
[delivery]
initial_backoff_seconds = 0.2
max_backoff_seconds = 1.0
attempt_timeout_seconds = 3.0
lease_seconds = 4.0

[audit]
head_interval_seconds = 1.0
peer_check_interval_seconds = 2.0
"""


@dataclasses.dataclass
class ProcessFederation:
    """Nodes of a federation as `exchange serve` processes, started on demand."""

    nodes: list[SimNode]
    urls: dict[str, str]
    processes: dict[str, NodeProcess]
    # Node id -> its further `serve` processes (instance 1, 2, ...), on PostgreSQL.
    replicas: dict[str, list[NodeProcess]] = dataclasses.field(default_factory=dict)

    def node_id(self, index: int) -> str:
        return self.nodes[index].node_id

    async def start(self, index: int, *, failpoint: str = "") -> None:
        """(Re)start node `index`, with `failpoint` armed if given."""
        environ = {ENVIRONMENT_VARIABLE: failpoint} if failpoint else None
        await asyncio.to_thread(self.processes[self.node_id(index)].start, environ)

    async def start_all(self) -> None:
        await asyncio.gather(*(self.start(i) for i in range(len(self.nodes))))

    async def killed(self, index: int, timeout: float = DEADLINE_SECONDS) -> bool:
        """Wait until node `index` has died of SIGKILL (its failpoint); False if it lives on."""
        status = await asyncio.to_thread(self.processes[self.node_id(index)].wait_exit, timeout)
        return status == -9

    def kill(self, index: int) -> None:
        self.processes[self.node_id(index)].kill()

    def instances(self, index: int) -> list[NodeProcess]:
        """Every `serve` process of node `index`: the first, then its replicas."""
        node_id = self.node_id(index)
        return [self.processes[node_id], *self.replicas.get(node_id, [])]

    async def start_instances(self, index: int) -> None:
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in self.instances(index)))

    def client(self, index: int, instance: int = 0) -> AuthorityClient:
        """A new authority client of node `index` (a restarted node needs a new channel).

        Args:
            instance: which of the node's `serve` processes it calls.
        """
        sim = self.nodes[index]
        return AuthorityClient(
            self.instances(index)[instance].authority_address,
            sim.case_worker_token,
            ca_certificate=sim.authority_certificate,
            timeout=10,
        )

    def count(self, index: int, sql: str, **parameters: object) -> int:
        """Run a COUNT query on node `index`'s store, as it is on disk."""
        store = Store.open(self.urls[self.node_id(index)])
        try:
            return int(store.read(lambda c: c.execute(text(sql), parameters).scalar_one()))
        finally:
            store.dispose()

    def rows(self, index: int, sql: str, **parameters: object) -> list[tuple[object, ...]]:
        store = Store.open(self.urls[self.node_id(index)])
        try:
            return [tuple(r) for r in store.read(lambda c: c.execute(text(sql), parameters).all())]
        finally:
            store.dispose()

    def _all(self) -> list[NodeProcess]:
        return [*self.processes.values(), *(p for ps in self.replicas.values() for p in ps)]

    def log_tails(self) -> str:
        return "\n".join(f"--- {process.name} ---\n{process.log_tail()}" for process in self._all())

    def close(self) -> None:
        for process in self._all():
            process.kill()


def start_processes(
    root: Path,
    databases: DatabaseFactory,
    *,
    countries: int = 2,
    endpoint_ports: Sequence[int | None] = (),
    replicas: Sequence[int] = (),
) -> ProcessFederation:
    """Set up a federation of `countries` nodes (none started yet).

    Args:
        endpoint_ports: per node, the port its peers dial instead of the one it
            listens on (a proxy's); None or missing for none.
        replicas: per node, how many further `serve` processes it runs
            (PostgreSQL); its peers spread their calls over all of them.
    """
    specs: list[CountrySpec] = sample_countries(countries)
    for i, port in enumerate(endpoint_ports):
        specs[i] = dataclasses.replace(specs[i], endpoint_port=port)
    for i, count in enumerate(replicas):
        specs[i] = specs[i].with_replicas(count)
    urls: dict[str, str] = {}

    def url_for(node_id: str) -> str:
        urls[node_id] = databases.new_url(node_id)
        return urls[node_id]

    nodes = build_federation(
        root,
        specs,
        # Set up "yesterday", so that envelopes made now are in key validity.
        now=dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
        database_url_for=url_for,
        delivery_overrides=FAULT_CONFIG,
    )
    return ProcessFederation(
        nodes,
        urls,
        {n.node_id: NodeProcess(n) for n in nodes},
        {n.node_id: NodeProcess.all_of(n)[1:] for n in nodes if n.replicas},
    )


async def delivered(
    federation: ProcessFederation, sender: int, message_ids: Sequence[str]
) -> dict[str, apb.GetDeliveryStatusResponse]:
    """Wait until every recipient of each message has a receipt, as the sender's authority sees."""
    statuses: dict[str, apb.GetDeliveryStatusResponse] = {}
    deadline = time.monotonic() + DEADLINE_SECONDS
    client = federation.client(sender)
    try:
        for message_id in message_ids:
            while True:
                status = await client.delivery_status(message_id)
                if status.recipients and all(
                    r.state == apb.DELIVERY_STATE_DELIVERED for r in status.recipients
                ):
                    statuses[message_id] = status
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{message_id} not delivered: {status}\n{federation.log_tails()}"
                    )
                await asyncio.sleep(POLL_SECONDS)
    finally:
        await client.close()
    return statuses


async def inbox_ids(federation: ProcessFederation, index: int) -> list[str]:
    """Every message id in node `index`'s authority inbox, page after page (repeats kept)."""
    ids: list[str] = []
    client = federation.client(index)
    try:
        token = ""
        while True:
            page = await client.list_inbox(page_size=500, page_token=token)
            ids.extend(summary.message_id for summary in page.notices)
            token = page.next_page_token
            if not token:
                return ids
    finally:
        await client.close()


async def assert_exactly_once(
    federation: ProcessFederation, sender: int, recipient: int, message_ids: Sequence[str]
) -> None:
    """Each message: one notice, one envelope, one receipt, one audit entry, on both sides.

    Also as both authorities see it (delivery status, inbox), and both outboxes
    empty of pending rows.
    """
    recipient_id = federation.node_id(recipient)
    statuses = await delivered(federation, sender, message_ids)
    listed = await inbox_ids(federation, recipient)
    async with federation.client(recipient) as reader:
        for message_id in message_ids:
            # What was stored before or after a crash opens: the content is whole.
            opened = await reader.get_notice(message_id)
            assert opened.summary.sender_node_id == federation.node_id(sender)
            assert opened.notice.WhichOneof("body"), f"{message_id} opens to nothing"
    for message_id in message_ids:
        status = statuses[message_id]
        assert [r.recipient_node_id for r in status.recipients] == [recipient_id]
        assert status.recipients[0].receipt.body, "delivered without a receipt"
        assert listed.count(message_id) == 1, f"{message_id} listed {listed.count(message_id)}x"
        one = {"m": message_id}
        for side, direction, action in (
            (sender, "outgoing", "notice.delivered"),
            (recipient, "incoming", "notice.received"),
        ):
            for table in ("notices", "envelopes", "receipts"):
                found = federation.count(
                    side, f"SELECT COUNT(*) FROM {table} WHERE message_id=:m", **one
                )
                assert found == 1, f"node {side}: {found} rows in {table} for {message_id}"
            assert (
                federation.count(
                    side,
                    "SELECT COUNT(*) FROM notices WHERE message_id=:m AND direction=:d",
                    d=direction,
                    **one,
                )
                == 1
            )
            audited = federation.count(
                side,
                "SELECT COUNT(*) FROM audit_entries WHERE message_id=:m AND action=:a",
                a=action,
                **one,
            )
            assert audited == 1, f"node {side}: {action} audited {audited}x for {message_id}"
        assert federation.rows(sender, "SELECT state FROM outbox WHERE message_id=:m", **one) == [
            ("delivered",)
        ]
        events = federation.count(
            recipient,
            "SELECT COUNT(*) FROM inbox_events WHERE message_id=:m AND event_type=:t",
            t=inbox.NOTICE_RECEIVED,
            **one,
        )
        assert events == 1, f"{events} inbox events for {message_id}"
        # The sender holds the very receipt the recipient stored (and re-sent on a repeat).
        receipt = "SELECT body, signature FROM receipts WHERE message_id=:m"
        assert federation.rows(sender, receipt, **one) == federation.rows(recipient, receipt, **one)
    for side in (sender, recipient):
        pending = federation.count(side, "SELECT COUNT(*) FROM outbox WHERE state='pending'")
        assert pending == 0, f"node {side}: {pending} outbox rows still pending"
