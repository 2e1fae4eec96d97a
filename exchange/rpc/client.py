"""An authority system's client of its node (used by `exchange client` and the harness)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from exchange._proto.exchange.v1 import audit_pb2, authority_pb2_grpc, matching_pb2
from exchange._proto.exchange.v1 import authority_pb2 as pb
from exchange.rpc.peers import MAX_MESSAGE_BYTES

__all__ = ["AuthorityClient"]

DEFAULT_TIMEOUT = 30.0


class AuthorityClient:
    """Calls one node's Authority service with one client's token.

    Args:
        address: host:port of the node's authority port.
        token: the client's bearer token.
        ca_certificate: PEM the node's authority certificate must chain to;
            None for a plaintext loopback port (`serve --insecure-loopback`).
        server_name: name to check the certificate against, if not the host.
    """

    def __init__(
        self,
        address: str,
        token: str,
        *,
        ca_certificate: bytes | None,
        server_name: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        # A content hash referral is up to 20 MiB: the default 4 MiB would refuse it.
        options: list[tuple[str, object]] = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        self._channel = (
            grpc.aio.secure_channel(
                address, grpc.ssl_channel_credentials(root_certificates=ca_certificate), options
            )
            if ca_certificate is not None
            else grpc.aio.insecure_channel(address, options)
        )
        self._stub = authority_pb2_grpc.AuthorityStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout

    async def __aenter__(self) -> AuthorityClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def submit(self, request: pb.SubmitNoticeRequest) -> pb.SubmittedNotice:
        response = await self._stub.SubmitNotice(
            request, metadata=self._metadata, timeout=self._timeout
        )
        return response.submitted

    async def respond(self, request: pb.RespondRequest) -> pb.SubmittedNotice:
        response = await self._stub.Respond(request, metadata=self._metadata, timeout=self._timeout)
        return response.submitted

    async def acknowledge(self, request: pb.AcknowledgeRequest) -> pb.SubmittedNotice:
        response = await self._stub.Acknowledge(
            request, metadata=self._metadata, timeout=self._timeout
        )
        return response.submitted

    async def withdraw(self, request: pb.WithdrawRequest) -> pb.SubmittedNotice:
        response = await self._stub.Withdraw(
            request, metadata=self._metadata, timeout=self._timeout
        )
        return response.submitted

    async def decide_disclosure(self, request: pb.DecideDisclosureRequest) -> pb.SubmittedNotice:
        response = await self._stub.DecideDisclosure(
            request, metadata=self._metadata, timeout=self._timeout
        )
        return response.submitted

    async def forward(self, request: pb.ForwardRequest) -> pb.SubmittedNotice:
        response = await self._stub.Forward(request, metadata=self._metadata, timeout=self._timeout)
        return response.submitted

    async def overdue(self) -> pb.ListOverdueRequestsResponse:
        return await self._stub.ListOverdueRequests(
            pb.ListOverdueRequestsRequest(), metadata=self._metadata, timeout=self._timeout
        )

    async def list_inbox(self, page_size: int = 0, page_token: str = "") -> pb.ListInboxResponse:
        return await self._stub.ListInbox(
            pb.ListInboxRequest(page_size=page_size, page_token=page_token),
            metadata=self._metadata,
            timeout=self._timeout,
        )

    async def get_notice(self, message_id: str) -> pb.GetNoticeResponse:
        return await self._stub.GetNotice(
            pb.GetNoticeRequest(message_id=message_id),
            metadata=self._metadata,
            timeout=self._timeout,
        )

    async def watch(
        self, after_sequence: int = 0, timeout: float | None = None
    ) -> AsyncIterator[pb.WatchInboxResponse]:
        """Inbox events after `after_sequence`, as they come, until `timeout` (if any)."""
        call = self._stub.WatchInbox(
            pb.WatchInboxRequest(after_sequence=after_sequence),
            metadata=self._metadata,
            timeout=timeout,
        )
        try:
            async for event in call:
                yield event
        finally:
            call.cancel()

    async def delivery_status(self, message_id: str) -> pb.GetDeliveryStatusResponse:
        return await self._stub.GetDeliveryStatus(
            pb.GetDeliveryStatusRequest(message_id=message_id),
            metadata=self._metadata,
            timeout=self._timeout,
        )

    async def audit_entries(
        self, after_sequence: int = 0, page_size: int = 0
    ) -> pb.ListAuditEntriesResponse:
        return await self._stub.ListAuditEntries(
            pb.ListAuditEntriesRequest(after_sequence=after_sequence, page_size=page_size),
            metadata=self._metadata,
            timeout=self._timeout,
        )

    async def register_identifiers(
        self, request: pb.RegisterIdentifiersRequest
    ) -> pb.RegisterIdentifiersResponse:
        return await self._stub.RegisterIdentifiers(
            request, metadata=self._metadata, timeout=self._timeout
        )

    async def query(self, request: matching_pb2.QueryRequest) -> matching_pb2.QueryResponse:
        return await self._stub.Query(request, metadata=self._metadata, timeout=self._timeout)

    async def serving(self) -> bool:
        """Whether the node's grpc.health.v1 says its Authority service is SERVING."""
        response = await health_pb2_grpc.HealthStub(self._channel).Check(
            health_pb2.HealthCheckRequest(service="exchange.v1.Authority"), timeout=self._timeout
        )
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    async def audit_head(self) -> audit_pb2.GetAuditHeadResponse:
        return await self._stub.GetAuditHead(
            audit_pb2.GetAuditHeadRequest(), metadata=self._metadata, timeout=self._timeout
        )

    async def inclusion_proof(
        self, sequence: int, tree_size: int = 0
    ) -> audit_pb2.GetInclusionProofResponse:
        return await self._stub.GetInclusionProof(
            audit_pb2.GetInclusionProofRequest(sequence=sequence, tree_size=tree_size),
            metadata=self._metadata,
            timeout=self._timeout,
        )

    async def consistency_proof(
        self, first_size: int, second_size: int
    ) -> audit_pb2.GetConsistencyProofResponse:
        return await self._stub.GetConsistencyProof(
            audit_pb2.GetConsistencyProofRequest(first_size=first_size, second_size=second_size),
            metadata=self._metadata,
            timeout=self._timeout,
        )
