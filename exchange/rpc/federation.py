"""The `Federation` service: what peers call on this node (mTLS)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from exchange._proto.exchange.v1 import audit_pb2, federation_pb2_grpc, matching_pb2
from exchange._proto.exchange.v1 import federation_pb2 as pb
from exchange.answering import MatchResponder
from exchange.auditing import AuditLog
from exchange.envelope import Envelope
from exchange.errors import AuthenticationError, ExchangeError, ResourceLimitError, ValidationError
from exchange.receiving import Receiver
from exchange.refusals import RefusalAudit
from exchange.rpc import convert
from exchange.rpc._status import guarded, status_from_errors, status_of
from exchange.rpc.peers import BATCH_ENVELOPES, MAX_MESSAGE_BYTES
from exchange.runtime import NodeContext
from exchange.store import audit_heads, registry
from exchange.trust import SignedTrustList

__all__ = ["STREAM_WINDOW", "FederationService", "tls_peer_node_id"]

# Requests of one DeliverStream or DeliverBatches call read ahead, at most; and the
# bytes of envelopes read but not yet answered. Beyond either the call stops
# reading, and HTTP/2 flow control holds the sender back.
STREAM_WINDOW = 64
STREAM_BUFFER_BYTES = 2 * MAX_MESSAGE_BYTES
# Envelopes of requests that have arrived stored in one transaction, at most
# (unless one request holds more).
GROUP_ENVELOPES = BATCH_ENVELOPES


# Marks the end of a stream's requests.
_END = EOFError()
_Request = TypeVar("_Request", pb.DeliverStreamRequest, pb.DeliverBatchesRequest)


@functools.lru_cache(maxsize=256)
def _certificate_sha256(pem: bytes) -> bytes:
    """SHA-256 of a PEM certificate's DER (parsed once per certificate, not per call)."""
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).digest()


def tls_peer_node_id(context: grpc.aio.ServicerContext[Any, Any], node: NodeContext) -> str:
    """The node id the TLS peer's certificate names, checked against the trust list.

    The federation CA vouches for the certificate; the trust list must list the
    node (suspended members still get a clear refusal later), and its pin makes
    sure the CA alone cannot mint a certificate for a member node.
    """
    auth = context.auth_context()
    names = list(auth.get("x509_subject_alternative_name", []))
    certificates = list(auth.get("x509_pem_cert", []))
    if len(names) != 1 or len(certificates) != 1:
        raise AuthenticationError("the TLS peer must present a node certificate naming one node")
    node_id: str = names[0].decode()
    member = node.trust.node(node_id)
    if member is None:
        # Refused before anything is stored or audited: strangers cannot fill the log.
        raise AuthenticationError("the TLS peer is not a member of the federation")
    if _certificate_sha256(certificates[0]) != member.tls_certificate_sha256:
        raise AuthenticationError(
            f"TLS certificate of {node_id} is not the one pinned in the trust list"
        )
    return node_id


class FederationService(federation_pb2_grpc.FederationServicer):
    def __init__(
        self,
        node: NodeContext,
        receiver: Receiver,
        audit: AuditLog,
        responder: MatchResponder,
        refusals: RefusalAudit,
    ) -> None:
        self._node = node
        self._refusals = refusals
        self._receiver = receiver
        self._audit = audit
        self._responder = responder

    async def admit(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
        """Raise the refusal unless a member node is calling (before a large request is read)."""
        tls_peer_node_id(context, self._node)

    async def refused_unread(
        self, context: grpc.aio.ServicerContext[Any, Any], method: str, reason: str
    ) -> None:
        """Audit a member node's request refused before it was read."""
        peer = tls_peer_node_id(context, self._node)
        await self._refusals.refused_anyway(method, reason, f"node:{peer}", peer)

    async def Deliver(
        self, request: pb.DeliverRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeliverResponse:
        return await guarded(context, self._node.log, self._deliver(request, context))

    async def _deliver(
        self, request: pb.DeliverRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeliverResponse:
        peer = tls_peer_node_id(context, self._node)
        receipt = await self._receiver.receive(Envelope.from_proto(request.envelope), peer)
        return pb.DeliverResponse(receipt=receipt.to_proto())

    async def DeliverStream(
        self,
        requests: AsyncIterator[pb.DeliverStreamRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.DeliverStreamResponse]:
        async with status_from_errors(context, self._node.log):
            peer = tls_peer_node_id(context, self._node)
        arrivals = self._arrivals(requests, context, _stream_weight)
        async with contextlib.aclosing(arrivals):
            async for arrived in arrivals:
                envelopes = [Envelope.from_proto(request.envelope) for request in arrived]
                outcomes = await self._outcomes(envelopes, peer)
                for request, outcome in zip(arrived, outcomes, strict=True):
                    yield _stream_response(request.sequence, outcome)

    async def DeliverBatches(
        self,
        requests: AsyncIterator[pb.DeliverBatchesRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.DeliverBatchesResponse]:
        async with status_from_errors(context, self._node.log):
            peer = tls_peer_node_id(context, self._node)
        arrivals = self._arrivals(requests, context, _batch_weight)
        async with contextlib.aclosing(arrivals):
            async for arrived in arrivals:
                envelopes = [
                    Envelope.from_proto(envelope)
                    for request in arrived
                    for envelope in request.envelopes
                ]
                outcomes = iter(await self._outcomes(envelopes, peer))
                for request in arrived:
                    yield pb.DeliverBatchesResponse(
                        sequence=request.sequence,
                        outcomes=[next(outcomes) for _ in request.envelopes],
                    )

    async def _arrivals(
        self,
        requests: AsyncIterator[_Request],
        context: grpc.aio.ServicerContext[Any, Any],
        weigh: Callable[[_Request], tuple[int, int]],
    ) -> AsyncGenerator[list[_Request], None]:
        """The call's requests, in groups of those that have arrived (at most
        GROUP_ENVELOPES envelopes, or one larger request), each group to be
        answered before the next is asked for.

        A reader takes requests off the call while a group is being stored, up
        to STREAM_WINDOW requests and STREAM_BUFFER_BYTES ahead. A failure of
        the call itself (a request that is not one, a peer no longer admitted)
        ends it with that status; what was answered stays answered.

        Args:
            weigh: a request's envelopes and bytes; raises the call's refusal if
                the request is not acceptable.
        """
        arrived: asyncio.Queue[tuple[_Request, int, int] | BaseException | None] = asyncio.Queue(
            STREAM_WINDOW
        )
        buffered = _Budget(STREAM_BUFFER_BYTES)

        async def read() -> None:
            trust = self._node.trust
            try:
                async for request in requests:
                    if self._node.trust is not trust:
                        # A new list may unpin the certificate or drop the member.
                        trust = self._node.trust
                        tls_peer_node_id(context, self._node)
                    envelopes, size = weigh(request)
                    await buffered.take(size)
                    await arrived.put((request, envelopes, size))
                await arrived.put(None)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # handed to the call, which ends with it
                await arrived.put(exc)

        reader = asyncio.create_task(read())
        try:
            ended: BaseException | None = None
            # A request taken off the queue that did not fit the group before.
            held: tuple[_Request, int, int] | None = None
            while ended is None:
                group: list[_Request] = []
                envelopes = size = 0
                item = held if held is not None else await arrived.get()
                held = None
                while isinstance(item, tuple):
                    if group and envelopes + item[1] > GROUP_ENVELOPES:
                        held = item
                        break
                    group.append(item[0])
                    envelopes, size = envelopes + item[1], size + item[2]
                    if arrived.empty():
                        break
                    item = arrived.get_nowait()
                if not isinstance(item, tuple):
                    ended = item or _END
                if group:
                    yield group
                buffered.give(size)
            if ended is not _END:
                async with status_from_errors(context, self._node.log):
                    raise ended
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _outcomes(self, envelopes: list[Envelope], peer: str) -> list[pb.DeliveryOutcome]:
        """Each envelope's answer: its receipt, or the refusal `Deliver` would raise."""
        if not envelopes:
            return []
        try:
            outcomes = await self._receiver.receive_many(envelopes, peer)
        except Exception:
            self._node.log.exception("rpc.internal_error")
            return [_refused(grpc.StatusCode.INTERNAL, "internal error") for _ in envelopes]
        answers = []
        for outcome in outcomes:
            if isinstance(outcome, ExchangeError):
                code, message = status_of(outcome)
                if code == grpc.StatusCode.INTERNAL:
                    self._node.log.error("rpc.internal_error", error_type=type(outcome).__name__)
                answers.append(_refused(code, message))
            else:
                answers.append(pb.DeliveryOutcome(receipt=outcome.to_proto()))
        return answers

    async def GetTrustList(
        self, request: pb.GetTrustListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetTrustListResponse:
        return await guarded(context, self._node.log, self._trust_list(context))

    async def _trust_list(
        self, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetTrustListResponse:
        tls_peer_node_id(context, self._node)
        data = await self._node.store.read(registry.latest_trust_list)
        assert data is not None, "a serving node always holds a trust list"
        return pb.GetTrustListResponse(trust_list=SignedTrustList.from_bytes(data).to_proto())

    # Audit heads and proofs: any member may ask; a peer sees hashes only, never entries.

    async def GetAuditHead(
        self, request: audit_pb2.GetAuditHeadRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.GetAuditHeadResponse:
        async def answer() -> audit_pb2.GetAuditHeadResponse:
            tls_peer_node_id(context, self._node)
            return convert.audit_head_response(await self._audit.latest_head())

        return await guarded(context, self._node.log, answer())

    async def GetHeldHeads(
        self, request: audit_pb2.GetHeldHeadsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.GetHeldHeadsResponse:
        async def answer() -> audit_pb2.GetHeldHeadsResponse:
            tls_peer_node_id(context, self._node)
            held = await self._node.store.read(audit_heads.peer_heads)
            return audit_pb2.GetHeldHeadsResponse(
                heads=[
                    audit_pb2.HeldHead(node_id=node_id, head=convert.tree_head(signed))
                    for node_id, signed in held
                ]
            )

        return await guarded(context, self._node.log, answer())

    async def GetInclusionProof(
        self,
        request: audit_pb2.GetInclusionProofRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_pb2.GetInclusionProofResponse:
        async def answer() -> audit_pb2.GetInclusionProofResponse:
            tls_peer_node_id(context, self._node)
            proof = await self._audit.inclusion(request.sequence, request.tree_size)
            return convert.inclusion_response(proof, with_entry=False)

        return await guarded(context, self._node.log, answer())

    async def GetConsistencyProof(
        self,
        request: audit_pb2.GetConsistencyProofRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_pb2.GetConsistencyProofResponse:
        async def answer() -> audit_pb2.GetConsistencyProofResponse:
            tls_peer_node_id(context, self._node)
            path = await self._audit.consistency(request.first_size, request.second_size)
            return audit_pb2.GetConsistencyProofResponse(path=path)

        return await guarded(context, self._node.log, answer())

    # Hit/no-hit: the node's OPRF key on blinded elements, and buckets of sealed hits.

    async def EvaluateBlinded(
        self,
        request: matching_pb2.EvaluateBlindedRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> matching_pb2.EvaluateBlindedResponse:
        async def answer() -> matching_pb2.EvaluateBlindedResponse:
            peer = tls_peer_node_id(context, self._node)
            evaluated, version = await self._responder.evaluate(
                peer, list(request.blinded_elements)
            )
            return matching_pb2.EvaluateBlindedResponse(
                evaluated_elements=evaluated, key_version=version
            )

        return await guarded(context, self._node.log, answer())

    async def GetBucket(
        self, request: matching_pb2.GetBucketRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matching_pb2.GetBucketResponse:
        async def answer() -> matching_pb2.GetBucketResponse:
            peer = tls_peer_node_id(context, self._node)
            entries = await self._responder.bucket(
                peer, request.key_version, request.prefix, request.prefix_bits
            )
            return matching_pb2.GetBucketResponse(
                entries=[matching_pb2.BucketEntry(tag=t, sealed_hit=s) for t, s in entries]
            )

        return await guarded(context, self._node.log, answer())


def _refused(code: grpc.StatusCode, message: str) -> pb.DeliveryOutcome:
    number: int = code.value[0]
    return pb.DeliveryOutcome(refusal=pb.DeliveryRefusal(code=number, message=message))


def _stream_response(sequence: int, outcome: pb.DeliveryOutcome) -> pb.DeliverStreamResponse:
    response = pb.DeliverStreamResponse(sequence=sequence)
    if outcome.HasField("receipt"):
        response.receipt.CopyFrom(outcome.receipt)
    else:
        response.refusal.CopyFrom(outcome.refusal)
    return response


# A request weighs its whole encoding (ByteSize), unknown fields included: they are
# held in memory with it.


def _stream_weight(request: pb.DeliverStreamRequest) -> tuple[int, int]:
    return 1, request.ByteSize()


def _batch_weight(request: pb.DeliverBatchesRequest) -> tuple[int, int]:
    """A batch's envelopes and bytes; a batch with none, or too many, ends the call.

    An empty batch is refused here, not audited: nothing was received. (More than
    BATCH_ENVELOPES is refused before parsing, by the decoding interceptor; checked
    again in case the servicer is reached another way.)
    """
    count = len(request.envelopes)
    if not count:
        raise ValidationError("request.envelopes", f"holds no envelope (one to {BATCH_ENVELOPES})")
    if count > BATCH_ENVELOPES:
        raise ResourceLimitError(f"request: more than {BATCH_ENVELOPES} envelopes in one message")
    return count, request.ByteSize()


class _Budget:
    """Bytes held at once, for one taker; a single request may exceed it while nothing is held."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held = 0
        self._freed = asyncio.Event()

    async def take(self, size: int) -> None:
        while self._held and self._held + size > self._limit:
            self._freed.clear()
            await self._freed.wait()
        self._held += size

    def give(self, size: int) -> None:
        self._held -= size
        self._freed.set()
