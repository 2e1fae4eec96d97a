"""gRPC servers of a node: the federation port (mTLS) and the authority port (TLS).

Both ports serve `grpc.health.v1`; the authority port also serves reflection,
so integrators can explore the API with standard tools.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from exchange._proto.exchange.v1 import (
    authority_pb2,
    authority_pb2_grpc,
    federation_pb2,
    federation_pb2_grpc,
)
from exchange.rpc._decoding import DecodeRequests
from exchange.rpc.authority import AuthorityService
from exchange.rpc.federation import FederationService
from exchange.rpc.peers import MAX_MESSAGE_BYTES

__all__ = ["RunningServers", "start_servers"]

FEDERATION_SERVICE = federation_pb2.DESCRIPTOR.services_by_name["Federation"].full_name
AUTHORITY_SERVICE = authority_pb2.DESCRIPTOR.services_by_name["Authority"].full_name
_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # One node process per port: refuse to share it with a stale process.
    ("grpc.so_reuseport", 0),
]


@dataclasses.dataclass
class RunningServers:
    federation: grpc.aio.Server
    authority: grpc.aio.Server
    federation_port: int
    authority_port: int
    federation_health: health.aio.HealthServicer
    authority_health: health.aio.HealthServicer

    async def set_serving(self, serving: bool) -> None:
        """Answer SERVING or NOT_SERVING for every service on both ports (see exchange.health)."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for servicer, service in (
            (self.federation_health, FEDERATION_SERVICE),
            (self.authority_health, AUTHORITY_SERVICE),
        ):
            for name in ("", service):
                await servicer.set(name, status)

    async def stop(self, grace: float) -> None:
        """Stop accepting calls, tell health watchers, and let calls in flight finish."""
        await self.federation_health.enter_graceful_shutdown()
        await self.authority_health.enter_graceful_shutdown()
        await self.federation.stop(grace)
        await self.authority.stop(grace)


def _bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    try:
        port: int = (
            server.add_secure_port(address, credentials)
            if credentials is not None
            else server.add_insecure_port(address)
        )
    except RuntimeError as exc:  # what gRPC raises when the address cannot be bound
        raise OSError(f"cannot listen on {address} (in use, or not an address here)") from exc
    return port


async def _health(server: grpc.aio.Server, service: str) -> health.aio.HealthServicer:
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in ("", service):
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servicer


async def start_servers(
    *,
    federation: FederationService,
    authority: AuthorityService,
    federation_address: str,
    federation_credentials: grpc.ServerCredentials,
    authority_address: str,
    authority_credentials: grpc.ServerCredentials | None,
    log: Any,
) -> RunningServers:
    """Bind and start both servers.

    Args:
        authority_credentials: None only for --insecure-loopback (checked by the caller).
        log: the node's logger, for requests that fail in an unexpected way.
    """
    # One interceptor per server: each caches its own server's handlers.
    federation_server = grpc.aio.server(
        options=_OPTIONS,
        interceptors=[DecodeRequests(log, federation.admit, federation.refused_unread)],
    )
    federation_pb2_grpc.add_FederationServicer_to_server(federation, federation_server)
    federation_health = await _health(federation_server, FEDERATION_SERVICE)
    federation_port = _bind(federation_server, federation_address, federation_credentials)

    authority_server = grpc.aio.server(
        options=_OPTIONS,
        interceptors=[DecodeRequests(log, authority.admit, authority.refused_unread)],
    )
    authority_pb2_grpc.add_AuthorityServicer_to_server(authority, authority_server)
    authority_health = await _health(authority_server, AUTHORITY_SERVICE)
    reflection.enable_server_reflection(
        [AUTHORITY_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], authority_server
    )
    authority_port = _bind(authority_server, authority_address, authority_credentials)

    await federation_server.start()
    await authority_server.start()
    return RunningServers(
        federation=federation_server,
        authority=authority_server,
        federation_port=federation_port,
        authority_port=authority_port,
        federation_health=federation_health,
        authority_health=authority_health,
    )
