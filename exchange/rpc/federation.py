"""The `Federation` service: what peers call on this node (mTLS)."""

from __future__ import annotations

import hashlib
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from exchange._proto.exchange.v1 import audit_pb2, federation_pb2_grpc, matching_pb2
from exchange._proto.exchange.v1 import federation_pb2 as pb
from exchange.answering import MatchResponder
from exchange.auditing import AuditLog
from exchange.envelope import Envelope
from exchange.errors import AuthenticationError
from exchange.receiving import Receiver
from exchange.refusals import RefusalAudit
from exchange.rpc import convert
from exchange.rpc._status import guarded
from exchange.runtime import NodeContext
from exchange.store import audit_heads, registry
from exchange.trust import SignedTrustList

__all__ = ["FederationService", "tls_peer_node_id"]


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
    der = x509.load_pem_x509_certificate(certificates[0]).public_bytes(serialization.Encoding.DER)
    if hashlib.sha256(der).digest() != member.tls_certificate_sha256:
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
