"""The `Authority` service: what an authority system calls on its own node."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from exchange import registering
from exchange._proto.exchange.v1 import audit_pb2, authority_pb2_grpc, matching_pb2
from exchange._proto.exchange.v1 import authority_pb2 as pb
from exchange.auditing import AuditLog
from exchange.clients import Principal, authenticate, parse_token
from exchange.errors import AuthenticationError, PermissionDeniedError
from exchange.querying import Querier
from exchange.reading import Reader
from exchange.refusals import UNAUTHENTICATED, RefusalAudit
from exchange.registering import Registrar
from exchange.rpc import convert
from exchange.rpc._status import guarded, status_from_errors
from exchange.runtime import NodeContext
from exchange.store import registry
from exchange.submitting import Submitter

__all__ = ["AuthorityService"]

T = TypeVar("T")
WATCH_LIFETIME_SECONDS = 300.0
Context = grpc.aio.ServicerContext[Any, Any]


def bearer_token(metadata: Any) -> str:
    """The token of the call's `authorization: Bearer <token>` metadata.

    Args:
        metadata: the call's invocation metadata, (key, value) pairs.
    """
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ").strip()
    raise AuthenticationError("missing authorization: Bearer <token> metadata")


class AuthorityService(authority_pb2_grpc.AuthorityServicer):
    def __init__(
        self,
        node: NodeContext,
        *,
        submitter: Submitter,
        reader: Reader,
        audit: AuditLog,
        registrar: Registrar,
        querier: Querier,
        refusals: RefusalAudit,
    ) -> None:
        self._node = node
        self._refusals = refusals
        self._submitter = submitter
        self._reader = reader
        self._audit = audit
        self._registrar = registrar
        self._querier = querier

    async def admit(self, context: Context, method: str) -> None:
        """Raise the refusal unless the caller may call `method` (before a large request is read).

        Refusals are audited as for any call.
        """
        await self._principal(context, method)

    async def refused_unread(self, context: Context, method: str, reason: str) -> None:
        """Audit a request refused before it was read (its caller not yet authenticated)."""
        await self._refusals.refused_anyway(method, reason, UNAUTHENTICATED)

    async def _principal(self, context: Context, method: str) -> Principal:
        """The caller, allowed to call `method`; a refusal is audited (see exchange.refusals)."""
        reason, record = "no token", None
        try:
            token = bearer_token(context.invocation_metadata())
            reason = "malformed token"
            client_id, _ = parse_token(token)
            record = await self._node.store.read(lambda c: registry.find_client(c, client_id))
            reason = (
                "unknown client"
                if record is None
                else "revoked client"
                if record.revoked_at is not None
                else "wrong secret"
            )
            principal = authenticate(token, lambda _: record)
            reason = "role"
            principal.require(method)
        except (AuthenticationError, PermissionDeniedError):
            actor = UNAUTHENTICATED if record is None else f"client:{record.name}"
            await self._refusals.refused_anyway(method, reason, actor)
            raise
        return principal

    async def _call(
        self, context: Context, method: str, handler: Callable[[Principal], Awaitable[T]]
    ) -> T:
        async def run() -> T:
            return await handler(await self._principal(context, method))

        return await guarded(context, self._node.log, run())

    async def SubmitNotice(
        self, request: pb.SubmitNoticeRequest, context: Context
    ) -> pb.SubmitNoticeResponse:
        async def handle(principal: Principal) -> pb.SubmitNoticeResponse:
            outgoing = convert.outgoing_request(request)
            submission = await self._submitter.submit(principal, outgoing)
            return pb.SubmitNoticeResponse(submitted=convert.submitted(submission))

        return await self._call(context, "SubmitNotice", handle)

    async def Respond(self, request: pb.RespondRequest, context: Context) -> pb.RespondResponse:
        async def handle(principal: Principal) -> pb.RespondResponse:
            outgoing = convert.outgoing_request(request)
            submission = await self._submitter.respond(principal, request.in_reply_to, outgoing)
            return pb.RespondResponse(submitted=convert.submitted(submission))

        return await self._call(context, "Respond", handle)

    async def Acknowledge(
        self, request: pb.AcknowledgeRequest, context: Context
    ) -> pb.AcknowledgeResponse:
        async def handle(principal: Principal) -> pb.AcknowledgeResponse:
            submission = await self._submitter.acknowledge(
                principal,
                request.message_id,
                request.status,
                request.note,
                request.client_request_id,
            )
            return pb.AcknowledgeResponse(submitted=convert.submitted(submission))

        return await self._call(context, "Acknowledge", handle)

    async def ListInbox(
        self, request: pb.ListInboxRequest, context: Context
    ) -> pb.ListInboxResponse:
        async def handle(_: Principal) -> pb.ListInboxResponse:
            records, token = await self._reader.list_inbox(request.page_size, request.page_token)
            return pb.ListInboxResponse(
                notices=[convert.summary(r) for r in records], next_page_token=token
            )

        return await self._call(context, "ListInbox", handle)

    async def GetNotice(
        self, request: pb.GetNoticeRequest, context: Context
    ) -> pb.GetNoticeResponse:
        async def handle(principal: Principal) -> pb.GetNoticeResponse:
            record, notice = await self._reader.open_notice(principal, request.message_id)
            return pb.GetNoticeResponse(summary=convert.summary(record), notice=notice)

        return await self._call(context, "GetNotice", handle)

    async def WatchInbox(
        self, request: pb.WatchInboxRequest, context: Context
    ) -> AsyncIterator[pb.WatchInboxResponse]:
        async with status_from_errors(context, self._node.log):
            await self._principal(context, "WatchInbox")
            # The stream ends after a while, so a revoked token stops a watcher
            # soon; clients reconnect with the last sequence they saw.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WATCH_LIFETIME_SECONDS):
                    async for event in self._reader.events(request.after_sequence):
                        yield convert.watch_event(event)

    async def GetDeliveryStatus(
        self, request: pb.GetDeliveryStatusRequest, context: Context
    ) -> pb.GetDeliveryStatusResponse:
        async def handle(_: Principal) -> pb.GetDeliveryStatusResponse:
            status = await self._reader.delivery_status(request.message_id)
            return convert.delivery_status(request.message_id, status)

        return await self._call(context, "GetDeliveryStatus", handle)

    async def Withdraw(self, request: pb.WithdrawRequest, context: Context) -> pb.WithdrawResponse:
        async def handle(principal: Principal) -> pb.WithdrawResponse:
            submission = await self._submitter.withdraw(
                principal,
                request.message_id,
                request.reason,
                request.note,
                request.client_request_id,
            )
            return pb.WithdrawResponse(submitted=convert.submitted(submission))

        return await self._call(context, "Withdraw", handle)

    async def DecideDisclosure(
        self, request: pb.DecideDisclosureRequest, context: Context
    ) -> pb.DecideDisclosureResponse:
        async def handle(principal: Principal) -> pb.DecideDisclosureResponse:
            submission = await self._submitter.decide_disclosure(
                principal,
                request.request_message_id,
                request.decision,
                request.refusal_ground,
                request.client_request_id,
            )
            return pb.DecideDisclosureResponse(submitted=convert.submitted(submission))

        return await self._call(context, "DecideDisclosure", handle)

    async def Forward(self, request: pb.ForwardRequest, context: Context) -> pb.ForwardResponse:
        async def handle(principal: Principal) -> pb.ForwardResponse:
            submission = await self._submitter.forward(
                principal,
                request.message_id,
                list(request.recipient_node_ids),
                request.case_reference,
                request.client_request_id,
            )
            return pb.ForwardResponse(submitted=convert.submitted(submission))

        return await self._call(context, "Forward", handle)

    async def ListOverdueRequests(
        self, request: pb.ListOverdueRequestsRequest, context: Context
    ) -> pb.ListOverdueRequestsResponse:
        async def handle(_: Principal) -> pb.ListOverdueRequestsResponse:
            overdue = await self._reader.overdue()
            return pb.ListOverdueRequestsResponse(requests=[convert.overdue(o) for o in overdue])

        return await self._call(context, "ListOverdueRequests", handle)

    async def ListAuditEntries(
        self, request: pb.ListAuditEntriesRequest, context: Context
    ) -> pb.ListAuditEntriesResponse:
        async def handle(_: Principal) -> pb.ListAuditEntriesResponse:
            entries = await self._reader.audit_entries(request.after_sequence, request.page_size)
            return pb.ListAuditEntriesResponse(entries=[convert.audit_entry(e) for e in entries])

        return await self._call(context, "ListAuditEntries", handle)

    async def GetAuditHead(
        self, request: audit_pb2.GetAuditHeadRequest, context: Context
    ) -> audit_pb2.GetAuditHeadResponse:
        async def handle(_: Principal) -> audit_pb2.GetAuditHeadResponse:
            return convert.audit_head_response(await self._audit.latest_head())

        return await self._call(context, "GetAuditHead", handle)

    async def GetInclusionProof(
        self, request: audit_pb2.GetInclusionProofRequest, context: Context
    ) -> audit_pb2.GetInclusionProofResponse:
        async def handle(_: Principal) -> audit_pb2.GetInclusionProofResponse:
            proof = await self._audit.inclusion(request.sequence, request.tree_size)
            return convert.inclusion_response(proof, with_entry=True)

        return await self._call(context, "GetInclusionProof", handle)

    async def GetConsistencyProof(
        self, request: audit_pb2.GetConsistencyProofRequest, context: Context
    ) -> audit_pb2.GetConsistencyProofResponse:
        async def handle(_: Principal) -> audit_pb2.GetConsistencyProofResponse:
            path = await self._audit.consistency(request.first_size, request.second_size)
            return audit_pb2.GetConsistencyProofResponse(path=path)

        return await self._call(context, "GetConsistencyProof", handle)

    async def RegisterIdentifiers(
        self, request: pb.RegisterIdentifiersRequest, context: Context
    ) -> pb.RegisterIdentifiersResponse:
        async def handle(principal: Principal) -> pb.RegisterIdentifiersResponse:
            # Before converting: 24 MiB of empty entries would be millions of objects.
            registering.check_count(len(request.identifiers))
            done = await self._registrar.register(
                principal,
                request.case_reference,
                request.contact_point,
                [convert.raw_identifier(i) for i in request.identifiers],
            )
            return pb.RegisterIdentifiersResponse(
                registered=done.registered, already_registered=done.already_registered
            )

        return await self._call(context, "RegisterIdentifiers", handle)

    async def Query(
        self, request: matching_pb2.QueryRequest, context: Context
    ) -> matching_pb2.QueryResponse:
        async def handle(principal: Principal) -> matching_pb2.QueryResponse:
            answers = await self._querier.query(
                principal,
                [convert.raw_identifier(i) for i in request.identifiers],
                list(request.peer_node_ids),
                request.deadline_ms,
            )
            return matching_pb2.QueryResponse(answers=[convert.peer_answer(a) for a in answers])

        return await self._call(context, "Query", handle)
