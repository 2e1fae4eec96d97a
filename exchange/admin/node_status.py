"""`exchange node status DIR`: one look at a node, for the people who run it.

Read from the node's store (backlog per peer, trust list, audit log, overdue
requests, recorded audit conflicts) and asked of the running node and its peers
over federation mTLS with the node's own TLS identity: its health, and whether
each active peer answers. Works while the node serves (SQLite readers do not block
its writers) and says so when it does not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import Connection

from exchange.admin.node import open_store
from exchange.checkpoint import TreeHead
from exchange.clock import from_millis, to_millis
from exchange.config import NodeConfig, load_node_config
from exchange.errors import ConfigError, PeerUnreachableError
from exchange.layout import NodeLayout
from exchange.notices import REQUEST_KINDS
from exchange.rpc.peers import PeerTransport, channel_options
from exchange.rpc.server import FEDERATION_SERVICE
from exchange.rpc.tls import NodeTls
from exchange.store import audit_heads, audit_log, lifecycle, node_state
from exchange.trust import TrustedNode
from exchange.trust_state import held

__all__ = ["NodeStatus", "PeerStatus", "node_status"]


@dataclasses.dataclass(frozen=True)
class PeerStatus:
    node_id: str
    endpoint: str
    reachable: bool
    error: str
    pending: int
    oldest_pending_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class NodeStatus:
    node_id: str
    # SERVING, NOT_SERVING, or why the node could not be asked.
    health: str
    problems: list[str]
    trust_list_version: int | None
    trust_list_expires_at: dt.datetime | None
    audit_entries: int
    audit_head_size: int | None
    audit_head_at: dt.datetime | None
    overdue_by_us: int
    overdue_to_us: int
    peers: list[PeerStatus]

    @property
    def pending(self) -> int:
        return sum(peer.pending for peer in self.peers)


@dataclasses.dataclass(frozen=True)
class _Stored:
    trust_version: int | None
    trust_expires_at: dt.datetime | None
    problems: list[str]
    peers: dict[str, TrustedNode]
    backlog: dict[str, node_state.Backlog]
    audit_entries: int
    head: TreeHead | None
    overdue_by_us: int
    overdue_to_us: int


def _read(connection: Connection, config: NodeConfig, now: dt.datetime) -> _Stored:
    trust = held(connection)
    problems = []
    peers: dict[str, TrustedNode] = {}
    if trust is None:
        problems.append("no trust list installed")
    else:
        if (stale := trust.staleness(now, config.trust.max_age())) is not None:
            problems.append(f"trust list stale: {stale}")
        peers = {
            node_id: node
            for node_id, node in sorted(trust.nodes.items())
            if node_id != config.node_id and trust.active_node(node_id) is not None
        }
    problems += [
        f"audit conflict with {c.node_id}: {c.reason}" for c in audit_heads.conflicts(connection)
    ]
    latest = audit_heads.latest_own(connection)
    overdue = lifecycle.overdue_requests(
        connection, now=to_millis(now), answers=dict(REQUEST_KINDS)
    )
    return _Stored(
        trust_version=None if trust is None else trust.version,
        trust_expires_at=None if trust is None else trust.expires_at,
        problems=problems,
        peers=peers,
        backlog={b.peer_node_id: b for b in node_state.outbox_backlog(connection)},
        audit_entries=audit_log.size(connection),
        head=None if latest is None else TreeHead.parse(latest.text),
        overdue_by_us=sum(1 for o in overdue if o.owed_by_us),
        overdue_to_us=sum(1 for o in overdue if not o.owed_by_us),
    )


async def _own_health(config: NodeConfig, tls: NodeTls, timeout: float) -> str:
    """What the node's federation port says of itself (the node is a member of its own list)."""
    channel = grpc.aio.secure_channel(
        config.endpoint, tls.channel_credentials(), options=channel_options(config.node_id)
    )
    try:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=FEDERATION_SERVICE), timeout=timeout
        )
    except grpc.aio.AioRpcError as exc:
        return f"not answering ({exc.code().name})"
    finally:
        await channel.close()
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


async def _peer(transport: PeerTransport, peer: TrustedNode, timeout: float) -> str:
    try:
        await transport.audit_head(peer, timeout)
    except PeerUnreachableError as exc:
        return str(exc)[:200]
    return ""


async def _ask(
    config: NodeConfig, tls: NodeTls, stored: _Stored, timeout: float
) -> tuple[str, dict[str, str]]:
    transport = PeerTransport(tls.channel_credentials())
    try:
        health, *errors = await asyncio.gather(
            _own_health(config, tls, timeout),
            *(_peer(transport, peer, timeout) for peer in stored.peers.values()),
        )
        return health, dict(zip(stored.peers, errors, strict=True))
    finally:
        await transport.close()


def node_status(
    directory: Path, *, now: dt.datetime, passphrase: bytes | None, timeout: float = 3.0
) -> NodeStatus:
    """The status of the node in `directory` (see the module docstring).

    Raises:
        ConfigError: `directory` holds no node.
        StoreUnavailableError: the store does not answer.
    """
    config = load_node_config(directory)
    store = open_store(directory)
    try:
        stored = store.read(lambda connection: _read(connection, config, now))
    finally:
        store.dispose()
    try:
        tls = NodeTls.load(NodeLayout(config.directory), passphrase)
    except FileNotFoundError as exc:
        raise ConfigError(f"{directory}: {exc}") from None
    health, errors = asyncio.run(_ask(config, tls, stored, timeout))
    peers = []
    for node_id, peer in stored.peers.items():
        backlog = stored.backlog.get(node_id)
        peers.append(
            PeerStatus(
                node_id=node_id,
                endpoint=peer.endpoint,
                reachable=not errors[node_id],
                error=errors[node_id],
                pending=backlog.pending if backlog else 0,
                oldest_pending_at=from_millis(backlog.oldest_created_at) if backlog else None,
            )
        )
    for node_id, backlog in stored.backlog.items():
        if node_id not in stored.peers:  # suspended or removed: its notices still wait
            peers.append(
                PeerStatus(
                    node_id=node_id,
                    endpoint="",
                    reachable=False,
                    error="not an active node of the trust list",
                    pending=backlog.pending,
                    oldest_pending_at=from_millis(backlog.oldest_created_at),
                )
            )
    return NodeStatus(
        node_id=config.node_id,
        health=health,
        problems=stored.problems,
        trust_list_version=stored.trust_version,
        trust_list_expires_at=stored.trust_expires_at,
        audit_entries=stored.audit_entries,
        audit_head_size=None if stored.head is None else stored.head.size,
        audit_head_at=None if stored.head is None else stored.head.issued_at,
        overdue_by_us=stored.overdue_by_us,
        overdue_to_us=stored.overdue_to_us,
        peers=peers,
    )
