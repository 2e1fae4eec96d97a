"""grpc.health.v1 on both ports, server reflection on the authority port."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from exchange.rpc.peers import channel_options
from tests.live import Federation


async def test_both_ports_report_serving_health(federation: Federation) -> None:
    node, sim = federation.node(0), federation.sim(0)
    authority = grpc.ssl_channel_credentials(sim.authority_certificate)
    async with grpc.aio.secure_channel(sim.authority_address, authority) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="exchange.v1.Authority"), timeout=5
        )
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    peer = federation.node(1)
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{node.federation_port}",
        peer.tls.channel_credentials(),
        options=channel_options(sim.node_id),
    ) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="exchange.v1.Federation"), timeout=5
        )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_authority_port_describes_its_api_by_reflection(federation: Federation) -> None:
    sim = federation.sim(0)
    credentials = grpc.ssl_channel_credentials(sim.authority_certificate)
    async with grpc.aio.secure_channel(sim.authority_address, credentials) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for response in stub.ServerReflectionInfo(iter([request]), timeout=5):
            services = {s.name for s in response.list_services_response.service}
            break
    assert "exchange.v1.Authority" in services
    assert "grpc.health.v1.Health" in services
