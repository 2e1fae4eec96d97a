"""Channels to peer nodes, reused across deliveries."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, cast

import grpc

from exchange import _wire
from exchange._proto.exchange.v1 import audit_pb2, federation_pb2_grpc, matching_pb2
from exchange._proto.exchange.v1 import federation_pb2 as pb
from exchange.checkpoint import SignedTreeHead
from exchange.envelope import Envelope
from exchange.errors import AuditError, PeerUnreachableError
from exchange.matching import BucketEntry
from exchange.receipt import SignedReceipt
from exchange.rpc import convert
from exchange.trust import SignedTrustList, TrustedNode

__all__ = ["BATCH_ENVELOPES", "MAX_MESSAGE_BYTES", "PeerTransport"]

# Codes that say nothing about what the peer would answer: it was not reached.
_UNREACHABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

# The largest notice (20 MiB) and what a request or an envelope adds around it.
MAX_MESSAGE_BYTES = 24 * 1024 * 1024
# Envelopes in one DeliverBatches request, at most (a peer refuses more, unparsed).
BATCH_ENVELOPES = 256
# Envelope bytes in one DeliverBatches request, at most, unless one envelope is
# larger alone: a larger batch goes as several requests, and the peer stores the
# first while the next arrive.
BATCH_REQUEST_BYTES = 4 * 1024 * 1024
_DELIVER_BATCHES = "/exchange.v1.Federation/DeliverBatches"
_OUTCOMES = pb.DeliverBatchesResponse.DESCRIPTOR.fields_by_name["outcomes"].number
# The largest answer to a batch parsed: a receipt is about 200 bytes, a refusal a code
# and a line. Larger ones are not parsed (nested outcomes can take many times their
# bytes to parse).
BATCH_ANSWER_BYTES = BATCH_ENVELOPES * 4096
# What a streaming call ends with, unanswered, at a peer that lacks the method:
# UNIMPLEMENTED, or INTERNAL when the peer's answer overtakes a request still being
# written (grpc.aio then reports "Internal error from Core" in place of the status).
_LACKS_METHOD = frozenset({grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL})
# A peer that answered DeliverBatches (or DeliverStream) with UNIMPLEMENTED is served
# with the older method; asked again after this long, in case it was upgraded.
LACKING_SECONDS = 600.0


def channel_options(node_id: str) -> list[tuple[str, object]]:
    return [
        # The peer's certificate must name the node we mean to reach, whatever
        # address its endpoint is.
        ("grpc.ssl_target_name_override", node_id),
        # A peer that runs several processes is one target of several addresses (DNS
        # records, or ipv4:a:p,b:p): spread calls over all of them, not the first alone.
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        # After an outage a channel reconnects on its own schedule (by default up
        # to 120 s apart) and fails calls fast meanwhile; the delivery worker has
        # its own backoff, so keep the channel's short and a recovered peer is
        # reached within seconds.
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


@contextlib.contextmanager
def _reaching() -> Iterator[None]:
    """A call to a peer: any gRPC failure becomes PeerUnreachableError, naming its code."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise PeerUnreachableError(f"{exc.code().name}: {exc.details()}") from None


class PeerTransport:
    """Calls peers over federation mTLS (deliveries, trust lists); one channel per endpoint."""

    def __init__(self, credentials: grpc.ChannelCredentials) -> None:
        self._credentials = credentials
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}
        self._stubs: dict[tuple[str, str], federation_pb2_grpc.FederationAsyncStub] = {}
        # (node id, endpoint, method) -> monotonic time until which the peer is served
        # with an older method than that one.
        self._lacking: dict[tuple[str, str, str], float] = {}

    def _channel(self, peer: TrustedNode) -> grpc.aio.Channel:
        key = (peer.node_id, peer.endpoint)
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = grpc.aio.secure_channel(
                peer.endpoint, self._credentials, options=channel_options(peer.node_id)
            )
        return channel

    def _stub(self, peer: TrustedNode) -> federation_pb2_grpc.FederationAsyncStub:
        key = (peer.node_id, peer.endpoint)
        stub = self._stubs.get(key)
        if stub is None:
            stub = self._stubs[key] = federation_pb2_grpc.FederationStub(self._channel(peer))
        return stub

    def _lacks(self, peer: TrustedNode, method: str) -> bool:
        return self._lacking.get((peer.node_id, peer.endpoint, method), 0.0) > time.monotonic()

    def _found_lacking(self, peer: TrustedNode, method: str) -> None:
        until = time.monotonic() + LACKING_SECONDS
        self._lacking[(peer.node_id, peer.endpoint, method)] = until

    async def deliver(self, peer: TrustedNode, envelope: Envelope, timeout: float) -> SignedReceipt:
        with _reaching():
            response = await self._stub(peer).Deliver(
                pb.DeliverRequest(envelope=envelope.to_proto()), timeout=timeout
            )
        return SignedReceipt.from_proto(response.receipt)

    async def deliver_many(
        self, peer: TrustedNode, envelopes: Sequence[Envelope], timeout: float
    ) -> list[SignedReceipt | PeerUnreachableError]:
        """Deliver `envelopes` to `peer` over one DeliverBatches call.

        Returns, for each envelope in order, the peer's signed receipt or why
        it was not delivered: the peer's refusal of that envelope or a failure
        of the call, named by its status code as for `deliver`. A peer without
        DeliverBatches (see _LACKS_METHOD) is served with DeliverStream instead, one
        without that with unary Deliver, and remembered as such for
        LACKING_SECONDS.

        Args:
            timeout: for the whole delivery, the older methods tried included (it
                must end within the outbox lease).
        """
        deadline = time.monotonic() + timeout
        for method, deliver in (
            ("DeliverBatches", self._deliver_batches),
            ("DeliverStream", self._deliver_stream),
        ):
            if not self._lacks(peer, method):
                answers = await deliver(peer, envelopes, deadline - time.monotonic())
                if answers is not None:
                    return answers
                self._found_lacking(peer, method)
        return await self._deliver_each(peer, envelopes, deadline - time.monotonic())

    async def _deliver_batches(
        self, peer: TrustedNode, envelopes: Sequence[Envelope], timeout: float
    ) -> list[SignedReceipt | PeerUnreachableError] | None:
        """As `deliver_many`, over DeliverBatches; None if the peer lacks it."""
        groups = _batches(envelopes)
        answers: dict[int, SignedReceipt | PeerUnreachableError] = {}  # by envelope
        answered: set[int] = set()  # by request

        async def requests() -> AsyncIterator[pb.DeliverBatchesRequest]:
            for sequence, group in enumerate(groups):
                yield pb.DeliverBatchesRequest(
                    sequence=sequence, envelopes=[envelopes[i].to_proto() for i in group]
                )

        failure = PeerUnreachableError("the peer ended the call without answering")
        try:
            # With no deserializer the answers come as bytes, parsed here once their
            # outcomes are counted (a peer could otherwise make this node parse 24 MiB
            # of empty outcomes).
            method: grpc.aio.StreamStreamMultiCallable[Any, Any] = self._channel(
                peer
            ).stream_stream(
                _DELIVER_BATCHES, request_serializer=pb.DeliverBatchesRequest.SerializeToString
            )
            call = cast(
                "grpc.aio.StreamStreamCall[pb.DeliverBatchesRequest, bytes]",
                method(requests(), timeout=timeout),
            )
            async for data in call:
                response = _batch_response(data)
                if (
                    response is None
                    or response.sequence >= len(groups)
                    or response.sequence in answered
                    or len(response.outcomes) != len(groups[response.sequence])
                ):
                    # Stop there. Its answers so far are receipts that the worker
                    # verifies one by one all the same.
                    call.cancel()
                    failure = PeerUnreachableError("the peer's answer matches no batch it was sent")
                    break
                answered.add(response.sequence)
                for index, outcome in zip(
                    groups[response.sequence], response.outcomes, strict=True
                ):
                    answers[index] = _outcome(outcome)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _LACKS_METHOD and not answers:
                return None
            failure = PeerUnreachableError(f"{exc.code().name}: {exc.details()}")
        return [answers.get(index, failure) for index in range(len(envelopes))]

    async def _deliver_stream(
        self, peer: TrustedNode, envelopes: Sequence[Envelope], timeout: float
    ) -> list[SignedReceipt | PeerUnreachableError] | None:
        """As `deliver_many`, over DeliverStream; None if the peer lacks it."""
        answers: dict[int, SignedReceipt | PeerUnreachableError] = {}

        async def requests() -> AsyncIterator[pb.DeliverStreamRequest]:
            for sequence, envelope in enumerate(envelopes):
                yield pb.DeliverStreamRequest(sequence=sequence, envelope=envelope.to_proto())

        failure = PeerUnreachableError("the peer ended the stream without answering")
        try:
            call = self._stub(peer).DeliverStream(requests(), timeout=timeout)
            async for response in call:
                if response.sequence >= len(envelopes) or response.sequence in answers:
                    # It answered what it was not asked: stop there. Its answers so far
                    # are receipts that the worker verifies one by one all the same.
                    call.cancel()
                    failure = PeerUnreachableError("the peer answered a sequence it was not sent")
                    break
                answers[response.sequence] = _outcome(response)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _LACKS_METHOD and not answers:
                return None
            failure = PeerUnreachableError(f"{exc.code().name}: {exc.details()}")
        return [answers.get(sequence, failure) for sequence in range(len(envelopes))]

    async def _deliver_each(
        self, peer: TrustedNode, envelopes: Sequence[Envelope], timeout: float
    ) -> list[SignedReceipt | PeerUnreachableError]:
        async def one(envelope: Envelope) -> SignedReceipt | PeerUnreachableError:
            try:
                return await self.deliver(peer, envelope, timeout)
            except PeerUnreachableError as exc:
                return exc

        return list(await asyncio.gather(*(one(e) for e in envelopes)))

    async def audit_head(self, peer: TrustedNode, timeout: float) -> SignedTreeHead | None:
        """The peer's newest signed tree head, or None while it has signed none."""
        with _reaching():
            response = await self._stub(peer).GetAuditHead(
                audit_pb2.GetAuditHeadRequest(), timeout=timeout
            )
        return convert.signed_tree_head(response.head) if response.HasField("head") else None

    async def consistency_proof(
        self, peer: TrustedNode, first: int, second: int, timeout: float
    ) -> list[bytes]:
        """The peer's consistency proof between two sizes of its log.

        Raises:
            PeerUnreachableError: the peer could not be reached.
            AuditError: the peer answered, but would not give the proof.
        """
        try:
            response = await self._stub(peer).GetConsistencyProof(
                audit_pb2.GetConsistencyProofRequest(first_size=first, second_size=second),
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _UNREACHABLE:
                raise PeerUnreachableError(f"{exc.code().name}: {exc.details()}") from None
            raise AuditError(
                f"{peer.node_id} refused a consistency proof from {first} to {second}: "
                f"{exc.code().name}"
            ) from None
        return list(response.path)

    async def held_heads(
        self, peer: TrustedNode, timeout: float
    ) -> list[tuple[str, SignedTreeHead]]:
        """The heads `peer` holds of other nodes' logs (unverified)."""
        with _reaching():
            response = await self._stub(peer).GetHeldHeads(
                audit_pb2.GetHeldHeadsRequest(), timeout=timeout
            )
        return [(held.node_id, convert.signed_tree_head(held.head)) for held in response.heads]

    async def get_trust_list(self, peer: TrustedNode, timeout: float) -> SignedTrustList:
        """The trust list `peer` holds (unverified: install it to verify).

        Raises:
            PeerUnreachableError: the peer did not answer, or refused.
            TrustListError: its answer is not a signed trust list.
        """
        with _reaching():
            response = await self._stub(peer).GetTrustList(
                pb.GetTrustListRequest(), timeout=timeout
            )
        return SignedTrustList.from_proto(response.trust_list)

    async def evaluate_blinded(
        self, peer: TrustedNode, blinded: list[bytes], timeout: float
    ) -> tuple[list[bytes], int]:
        """The peer's OPRF evaluation of blinded elements, and its key version."""
        with _reaching():
            response = await self._stub(peer).EvaluateBlinded(
                matching_pb2.EvaluateBlindedRequest(blinded_elements=blinded), timeout=timeout
            )
        return list(response.evaluated_elements), response.key_version

    async def get_bucket(
        self, peer: TrustedNode, key_version: int, prefix: int, prefix_bits: int, timeout: float
    ) -> list[BucketEntry]:
        """The peer's index entries under a token prefix."""
        with _reaching():
            response = await self._stub(peer).GetBucket(
                matching_pb2.GetBucketRequest(
                    key_version=key_version, prefix=prefix, prefix_bits=prefix_bits
                ),
                timeout=timeout,
            )
        return [BucketEntry(e.tag, e.sealed_hit) for e in response.entries]

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        self._stubs.clear()
        for channel in channels.values():
            await channel.close()


def _batches(envelopes: Sequence[Envelope]) -> list[range]:
    """The envelopes' indexes in requests of at most BATCH_ENVELOPES envelopes and
    BATCH_REQUEST_BYTES bytes (or one larger envelope alone), in order."""
    groups: list[range] = []
    start = size = 0
    for index, envelope in enumerate(envelopes):
        weight = len(envelope.header) + len(envelope.sealed_payload) + len(envelope.signature)
        if index > start and (
            index - start == BATCH_ENVELOPES or size + weight > BATCH_REQUEST_BYTES
        ):
            groups.append(range(start, index))
            start, size = index, 0
        size += weight
    if start < len(envelopes):
        groups.append(range(start, len(envelopes)))
    return groups


def _batch_response(data: bytes) -> pb.DeliverBatchesResponse | None:
    """A peer's answer to a batch, or None if it is not one of at most BATCH_ENVELOPES
    outcomes and BATCH_ANSWER_BYTES bytes."""
    if len(data) > BATCH_ANSWER_BYTES:
        return None
    try:
        if _wire.entries(data, _OUTCOMES, BATCH_ENVELOPES) > BATCH_ENVELOPES:
            return None
        return _wire.parse(pb.DeliverBatchesResponse, data)
    except _wire.MalformedError:
        return None


def _outcome(
    response: pb.DeliverStreamResponse | pb.DeliveryOutcome,
) -> SignedReceipt | PeerUnreachableError:
    """One envelope's answer in a stream or a batch, as `deliver` would have ended."""
    if response.HasField("receipt"):
        return SignedReceipt.from_proto(response.receipt)
    if not response.HasField("refusal"):
        return PeerUnreachableError("the peer's answer carries neither receipt nor refusal")
    name = _CODE_NAMES.get(response.refusal.code, "UNKNOWN")
    return PeerUnreachableError(f"{name}: {response.refusal.message}", refused=True)


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
