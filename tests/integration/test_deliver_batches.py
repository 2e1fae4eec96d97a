"""Federation.DeliverBatches between real nodes, and a sender facing a peer that
answers batches wrongly.

Each request carries a batch of envelopes and is answered by one response with
each envelope's outcome in order: a receipt, or the refusal `Deliver` would
raise. A request with no envelope ends the call; what was answered stands.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from exchange._proto.exchange.v1 import envelope_pb2, federation_pb2
from exchange.envelope import Envelope
from exchange.errors import PeerUnreachableError
from exchange.harness.setup import free_port
from exchange.receipt import SignedReceipt
from exchange.rpc import peers
from exchange.rpc.peers import PeerTransport
from tests.live import Federation
from tests.peers import (
    audited,
    craft_envelope,
    deliver_batches_as,
    federation_channel,
    held,
    message_id_of,
    referral_notice,
    verified,
)


async def test_each_batch_is_answered_in_order_with_one_outcome_per_envelope(
    federation: Federation,
) -> None:
    a, b = federation.node(0), federation.node(1)
    b_id = b.context.node_id
    first = [craft_envelope(a, [b_id], referral_notice()) for _ in range(3)]
    forged = craft_envelope(a, [b_id], referral_notice())
    forged = Envelope(forged.header, forged.sealed_payload, bytes(64))  # not its signature
    invalid = referral_notice()
    invalid.case_referral.ClearField("requested_actions")  # breaks the CaseReferral rules
    rejected = craft_envelope(a, [b_id], invalid)
    last = craft_envelope(a, [b_id], referral_notice())
    second = [forged, rejected, last]

    responses = await deliver_batches_as(a, b, [first, second])

    by_sequence = {response.sequence: response for response in responses}
    assert sorted(by_sequence) == [0, 1]
    assert [len(by_sequence[i].outcomes) for i in (0, 1)] == [3, 3]
    for outcome, envelope in zip(by_sequence[0].outcomes, first, strict=True):
        assert verified(outcome, a, b, envelope).accepted
    forged_answer, rejected_answer, last_answer = by_sequence[1].outcomes
    assert forged_answer.refusal.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert "signature" in forged_answer.refusal.message
    rejection = verified(rejected_answer, a, b, rejected)
    assert not rejection.accepted
    assert rejection.rejection == envelope_pb2.REJECTION_REASON_INVALID_NOTICE
    assert verified(last_answer, a, b, last).accepted
    ids = sorted(message_id_of(e) for e in [*first, last])
    assert await held(b) == ids
    assert sorted(await audited(b, "notice.received")) == ids
    assert await audited(b, "notice.rejected") == [message_id_of(rejected)]

    # Sent again, in one batch (the answers were lost): the same receipts, nothing twice.
    (again,) = await deliver_batches_as(a, b, [[*first, last]])
    earlier = [*by_sequence[0].outcomes, last_answer]
    assert [o.receipt for o in again.outcomes] == [o.receipt for o in earlier]
    assert await held(b) == ids
    assert sorted(await audited(b, "notice.received")) == ids


async def test_a_batch_with_no_envelope_ends_the_call_and_what_was_answered_stands(
    federation: Federation,
) -> None:
    a, b = federation.node(0), federation.node(1)
    envelope = craft_envelope(a, [b.context.node_id], referral_notice())
    after = craft_envelope(a, [b.context.node_id], referral_notice())
    answers: list[federation_pb2.DeliverBatchesResponse] = []
    first_answered = asyncio.Event()
    requests = [
        federation_pb2.DeliverBatchesRequest(sequence=0, envelopes=[envelope.to_proto()]),
        federation_pb2.DeliverBatchesRequest(sequence=1),
        federation_pb2.DeliverBatchesRequest(sequence=2, envelopes=[after.to_proto()]),
    ]

    async def slowly() -> AsyncIterator[federation_pb2.DeliverBatchesRequest]:
        # The first batch is answered before the empty one is sent.
        yield requests[0]
        await first_answered.wait()
        for request in requests[1:]:
            yield request

    async with federation_channel(a, b) as channel:
        call = channel.stream_stream(
            "/exchange.v1.Federation/DeliverBatches",
            request_serializer=federation_pb2.DeliverBatchesRequest.SerializeToString,
            response_deserializer=federation_pb2.DeliverBatchesResponse.FromString,
        )(slowly(), timeout=10)

        async def read_all() -> None:
            async for response in call:
                answers.append(response)
                first_answered.set()

        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await read_all()
    assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ended.value.details() == "request.envelopes: holds no envelope (one to 256)"
    assert [r.sequence for r in answers] == [0]
    assert verified(answers[0].outcomes[0], a, b, envelope).accepted
    # The batch after the empty one was never taken.
    assert await held(b) == [message_id_of(envelope)]


# --- a sender facing a peer that answers batches wrongly ----------------------------------


Answer = Callable[[federation_pb2.DeliverBatchesRequest], list[bytes]]


async def _deliver_to_impostor(
    federation: Federation, envelopes: list[Envelope], answer: Answer
) -> tuple[list[SignedReceipt | PeerUnreachableError], list[int]]:
    """XA's transport delivering `envelopes` to a server holding XB's TLS identity
    that answers each request with `answer(request)` (raw response bytes).

    Returns the transport's answers and the sizes of the requests the server took.
    """
    a, b = federation.node(0), federation.node(1)
    taken: list[int] = []

    async def batches(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for data in requests:
            request = federation_pb2.DeliverBatchesRequest.FromString(data)
            taken.append(len(request.envelopes))
            for response in answer(request):
                yield response

    handler = grpc.method_handlers_generic_handler(
        "exchange.v1.Federation", {"DeliverBatches": grpc.stream_stream_rpc_method_handler(batches)}
    )
    server = grpc.aio.server(handlers=[handler])
    port = free_port()
    server.add_secure_port(f"127.0.0.1:{port}", b.tls.server_credentials())
    await server.start()
    transport = PeerTransport(a.tls.channel_credentials())
    peer = a.context.trust.node(b.context.node_id)
    assert peer is not None
    try:
        answers = await transport.deliver_many(
            dataclasses.replace(peer, endpoint=f"127.0.0.1:{port}"), envelopes, timeout=10
        )
    finally:
        await transport.close()
        await server.stop(None)
    return answers, taken


def _receipts(sequence: int, count: int) -> bytes:
    """An answer to batch `sequence` of `count` receipts (the worker, not the transport,
    verifies them)."""
    receipt = envelope_pb2.SignedReceipt(body=b"not verified here", signature=bytes(64))
    outcomes = [federation_pb2.DeliveryOutcome(receipt=receipt) for _ in range(count)]
    response = federation_pb2.DeliverBatchesResponse(sequence=sequence, outcomes=outcomes)
    return response.SerializeToString()


@pytest.mark.parametrize(
    ("answer", "answered"),
    [
        # One outcome short: nothing of the batch is taken as answered.
        (lambda r: [_receipts(r.sequence, len(r.envelopes) - 1)], 0),
        # A batch it was not sent.
        (lambda r: [_receipts(r.sequence + 7, len(r.envelopes))], 0),
        # The first batch twice: its first answer stands, then the call is dropped.
        (lambda r: [_receipts(r.sequence, len(r.envelopes))] * 2, 2),
        # Millions of empty outcomes (tests/unit/test_wire_entries.py: never parsed).
        (lambda r: [b"\x08" + bytes([r.sequence]) + b"\x12\x00" * 3_000_000], 0),
    ],
    ids=["too-few", "unknown-sequence", "twice", "empty-outcomes"],
)
async def test_a_peer_answering_a_batch_wrongly_leaves_the_rest_undelivered(
    federation: Federation, monkeypatch: pytest.MonkeyPatch, answer: Answer, answered: int
) -> None:
    monkeypatch.setattr(peers, "BATCH_ENVELOPES", 2)
    a, b = federation.node(0), federation.node(1)
    envelopes = [craft_envelope(a, [b.context.node_id], referral_notice()) for _ in range(3)]
    answers, taken = await _deliver_to_impostor(federation, envelopes, answer)
    assert taken[0] == 2
    receipts = [x for x in answers if isinstance(x, SignedReceipt)]
    assert receipts == [x for x in answers[:answered]]
    failures = answers[answered:]
    assert failures
    assert all(
        isinstance(f, PeerUnreachableError) and "matches no batch it was sent" in str(f)
        for f in failures
    )


async def test_a_backlog_goes_as_several_batches_each_answered_in_place(
    federation: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "BATCH_ENVELOPES", 4)
    a, b = federation.node(0), federation.node(1)
    envelopes = [craft_envelope(a, [b.context.node_id], referral_notice()) for _ in range(10)]

    def marked(request: federation_pb2.DeliverBatchesRequest) -> list[bytes]:
        # Each receipt names the envelope it answers, so its place can be checked.
        response = federation_pb2.DeliverBatchesResponse(sequence=request.sequence)
        for envelope in request.envelopes:
            receipt = envelope_pb2.SignedReceipt(body=envelope.header, signature=bytes(64))
            response.outcomes.add(receipt=receipt)
        return [response.SerializeToString()]

    answers, taken = await _deliver_to_impostor(federation, envelopes, marked)
    assert taken == [4, 4, 2]
    assert [a.body if isinstance(a, SignedReceipt) else a for a in answers] == [
        e.header for e in envelopes
    ]
