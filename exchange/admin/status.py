"""`exchange federation status --via NODE_DIR`: every node's trust list version, as it says.

Each node listed in the federation's latest published list is asked for the list
it holds (`Federation.GetTrustList`) over federation mTLS with the TLS identity of
the node in NODE_DIR (a member, so the nodes answer it). What a node answers is
reported, not verified: the point is to see who lags behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from pathlib import Path

from exchange.admin.federation import latest_published
from exchange.config import load_node_config
from exchange.errors import PeerUnreachableError, TrustListError
from exchange.layout import NodeLayout
from exchange.rpc.peers import PeerTransport
from exchange.rpc.tls import NodeTls
from exchange.trust import TrustedNode

__all__ = ["NodeTrustStatus", "federation_status"]


@dataclasses.dataclass(frozen=True)
class NodeTrustStatus:
    """What one node reported; `error` says why it could not be asked."""

    node_id: str
    endpoint: str
    version: int | None = None
    expires_at: dt.datetime | None = None
    error: str = ""


async def _ask(transport: PeerTransport, node: TrustedNode, timeout: float) -> NodeTrustStatus:
    try:
        held = (await transport.get_trust_list(node, timeout)).trust_list
    except (PeerUnreachableError, TrustListError) as exc:
        return NodeTrustStatus(node.node_id, node.endpoint, error=str(exc))
    return NodeTrustStatus(node.node_id, node.endpoint, held.version, held.expires_at)


async def _poll(nodes: list[TrustedNode], tls: NodeTls, timeout: float) -> list[NodeTrustStatus]:
    transport = PeerTransport(tls.channel_credentials())
    try:
        return list(await asyncio.gather(*(_ask(transport, node, timeout) for node in nodes)))
    finally:
        await transport.close()


def federation_status(
    federation: Path, via: Path, *, passphrase: bytes | None, timeout: float = 5.0
) -> tuple[int, list[NodeTrustStatus]]:
    """The latest published version, and what every node listed in it holds.

    Raises:
        ConfigError: `federation` or `via` is not what it should be.
    """
    version, published = latest_published(federation)
    config = load_node_config(via)
    tls = NodeTls.load(NodeLayout(config.directory), passphrase)
    nodes = sorted(published.trust_list.nodes.values(), key=lambda n: n.node_id)
    return version, asyncio.run(_poll(nodes, tls, timeout))
