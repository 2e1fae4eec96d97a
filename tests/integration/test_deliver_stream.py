"""Federation.DeliverStream between real nodes, and the delivery worker's calls.

One call carries many envelopes; each is checked as unary `Deliver` checks it
and gets its own answer. The worker sends with DeliverBatches
(tests/integration/test_deliver_batches.py); a peer without it is served with
DeliverStream, and one without that with `Deliver`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

from exchange._proto.exchange.v1 import envelope_pb2, federation_pb2, federation_pb2_grpc
from exchange.clock import ManualClock
from exchange.delivery import DeliveryWorker
from exchange.envelope import Envelope
from exchange.errors import PeerUnreachableError
from exchange.harness import samples
from exchange.receipt import SignedReceipt
from exchange.rpc import federation as federation_rpc
from exchange.rpc._decoding import DecodeRequests
from exchange.rpc.peers import PeerTransport, channel_options
from exchange.store import audit_log, inbox, outbox
from exchange.store.notices import find_notice
from exchange.trust import TrustedNode
from tests.conftest import DatabaseFactory
from tests.live import Federation, start_federation
from tests.peers import (
    audited,
    craft_envelope,
    deliver_stream_as,
    federation_channel,
    held,
    message_id_of,
    referral_notice,
    stranger_credentials,
    verified,
)


def _by_sequence(
    responses: list[federation_pb2.DeliverStreamResponse], count: int
) -> list[federation_pb2.DeliverStreamResponse]:
    """The responses in request order; exactly one per request."""
    assert sorted(r.sequence for r in responses) == list(range(count))
    return sorted(responses, key=lambda r: r.sequence)


async def test_a_batch_is_answered_with_one_signed_receipt_per_envelope(
    federation: Federation,
) -> None:
    a, b = federation.node(0), federation.node(1)
    envelopes = [craft_envelope(a, [b.context.node_id], referral_notice()) for _ in range(5)]
    responses = _by_sequence(await deliver_stream_as(a, b, envelopes), len(envelopes))
    receipts = [verified(r, a, b, e) for r, e in zip(responses, envelopes, strict=True)]
    assert all(receipt.accepted for receipt in receipts)
    ids = sorted(message_id_of(e) for e in envelopes)
    assert await held(b) == ids
    events = await b.context.store.read(lambda c: inbox.events_after(c, 0, 1000))
    assert sorted(e.message_id for e in events) == ids
    assert sorted(await audited(b, "notice.received")) == ids
    # Sent again (the answers were lost): the same receipts, nothing stored twice.
    again = _by_sequence(await deliver_stream_as(a, b, envelopes), len(envelopes))
    assert [r.receipt for r in again] == [r.receipt for r in responses]
    assert await held(b) == ids
    assert sorted(await audited(b, "notice.received")) == ids


async def test_a_bad_envelope_in_the_middle_gets_its_own_answer(federation: Federation) -> None:
    a, b = federation.node(0), federation.node(1)
    b_id = b.context.node_id
    good_before = craft_envelope(a, [b_id], referral_notice())
    forged = craft_envelope(a, [b_id], referral_notice())
    forged = Envelope(forged.header, forged.sealed_payload, bytes(64))  # not its signature
    invalid = referral_notice()
    invalid.case_referral.ClearField("requested_actions")  # breaks the CaseReferral rules
    rejected = craft_envelope(a, [b_id], invalid)
    not_for_b = craft_envelope(a, [federation.sim(2).node_id], referral_notice())
    good_after = craft_envelope(a, [b_id], referral_notice())
    envelopes = [good_before, forged, rejected, not_for_b, good_after]

    responses = _by_sequence(await deliver_stream_as(a, b, envelopes), len(envelopes))

    assert verified(responses[0], a, b, good_before).accepted
    assert responses[1].refusal.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert "signature" in responses[1].refusal.message
    refusal = verified(responses[2], a, b, rejected)
    assert not refusal.accepted
    assert refusal.rejection == envelope_pb2.REJECTION_REASON_INVALID_NOTICE
    assert responses[3].refusal.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert verified(responses[4], a, b, good_after).accepted
    assert await held(b) == sorted([message_id_of(good_before), message_id_of(good_after)])
    # The rejected one is kept as evidence; the refused ones leave only their audit entry.
    assert await b.context.store.read(lambda c: find_notice(c, message_id_of(forged))) is None
    assert await b.context.store.read(lambda c: find_notice(c, message_id_of(not_for_b))) is None
    stored = await b.context.store.read(lambda c: find_notice(c, message_id_of(rejected)))
    assert stored is not None
    assert stored.state == inbox.REJECTED
    entries = await b.context.store.read(lambda c: audit_log.entries_after(c, 0, 10_000))
    refused = [e for e in entries if e.action == "envelope.refused"]
    assert sorted(json.loads(e.details_json)["envelope_digest"] for e in refused) == sorted(
        e.digest().hex() for e in (forged, not_for_b)
    )


async def test_an_impersonated_sender_inside_a_stream_is_refused(federation: Federation) -> None:
    a, b, c = federation.node(0), federation.node(1), federation.node(2)
    b_id = b.context.node_id
    own = craft_envelope(a, [b_id], referral_notice())
    # Genuinely signed by XC, but sent on XA's connection: XA cannot pass it off.
    of_c = craft_envelope(c, [b_id], referral_notice())
    responses = _by_sequence(await deliver_stream_as(a, b, [own, of_c]), 2)
    assert verified(responses[0], a, b, own).accepted
    assert responses[1].refusal.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert await held(b) == [message_id_of(own)]


# --- the delivery worker ---------------------------------------------------------------------


@pytest.fixture
async def manual(
    tmp_path: Path, databases: DatabaseFactory
) -> AsyncIterator[tuple[Federation, ManualClock, PeerTransport]]:
    clock = ManualClock(dt.datetime.now(dt.UTC).replace(microsecond=0))
    running = await start_federation(tmp_path, databases, clocks={"xa-police": clock})
    # XA delivers only when the test says so.
    await running.crash("xa-police")
    await running.start("xa-police", deliver=False)
    transport = PeerTransport(running.node(0).tls.channel_credentials())
    try:
        yield running, clock, transport
    finally:
        await transport.close()
        await running.close()


async def _submit(federation: Federation, count: int) -> list[str]:
    b_id = federation.sim(1).node_id
    ids = []
    for i in range(count):
        request = samples.case_referral([b_id], f"XA-2026-{i:04d}", "Stream test.")
        ids.append((await federation.client(0).submit(request)).message_id)
    return sorted(ids)


async def _states(federation: Federation, ids: list[str]) -> dict[str, str]:
    a = federation.node(0)

    def read(connection: Any) -> dict[str, str]:
        return {
            message_id: record.state
            for message_id in ids
            for record in outbox.delivery_status(connection, message_id)
        }

    return await a.context.store.read(read)


async def _restart_xb(federation: Federation) -> None:
    """Restart XB, so that its server takes the service's methods as patched."""
    b_id = federation.sim(1).node_id
    await federation.crash(b_id)
    await federation.start(b_id)


class Counting:
    """Counts the calls of each kind that XB's federation service takes (from its restart)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: dict[str, int] = {"Deliver": 0, "DeliverStream": 0, "DeliverBatches": 0}
        service = federation_rpc.FederationService
        deliver = service.Deliver
        counts = self.calls

        async def counted_deliver(self: Any, request: Any, context: Any) -> Any:
            counts["Deliver"] += 1
            return await deliver(self, request, context)

        def counted_stream(name: str) -> Any:
            stream = getattr(service, name)

            async def counted(self: Any, requests: Any, context: Any) -> AsyncIterator[Any]:
                counts[name] += 1
                async for response in stream(self, requests, context):
                    yield response

            return counted

        monkeypatch.setattr(service, "Deliver", counted_deliver)
        for name in ("DeliverStream", "DeliverBatches"):
            monkeypatch.setattr(service, name, counted_stream(name))


async def test_the_worker_sends_a_peers_batch_in_one_call(
    manual: tuple[Federation, ManualClock, PeerTransport], monkeypatch: pytest.MonkeyPatch
) -> None:
    federation, _, transport = manual
    ids = await _submit(federation, 6)
    counting = Counting(monkeypatch)
    await _restart_xb(federation)
    assert await DeliveryWorker(federation.node(0).context, transport).run_once() == 6
    assert counting.calls == {"Deliver": 0, "DeliverStream": 0, "DeliverBatches": 1}
    assert await _states(federation, ids) == dict.fromkeys(ids, outbox.DELIVERED)
    assert await held(federation.node(1)) == ids
    assert sorted(await audited(federation.node(0), "notice.delivered")) == ids


class CutAfter:
    """Sends a batch over a real stream and cuts the call after `answers` answers."""

    def __init__(self, transport: PeerTransport, answers: int) -> None:
        self._transport = transport
        self._answers = answers

    async def deliver(self, peer: TrustedNode, envelope: Envelope, timeout: float) -> SignedReceipt:
        raise AssertionError("a batch goes over the stream")

    async def deliver_many(
        self, peer: TrustedNode, envelopes: Sequence[Envelope], timeout: float
    ) -> list[SignedReceipt | PeerUnreachableError]:
        stub = self._transport._stub(peer)
        call = stub.DeliverStream(
            iter(
                federation_pb2.DeliverStreamRequest(sequence=i, envelope=e.to_proto())
                for i, e in enumerate(envelopes)
            ),
            timeout=timeout,
        )
        answers: dict[int, SignedReceipt | PeerUnreachableError] = {}
        async for response in call:
            answers[response.sequence] = SignedReceipt.from_proto(response.receipt)
            if len(answers) == self._answers:
                call.cancel()
                break
        cut = PeerUnreachableError("CANCELLED: cut by the test")
        return [answers.get(i, cut) for i in range(len(envelopes))]


async def test_a_stream_cut_midway_leaves_the_rest_pending_and_delivered_later_once(
    manual: tuple[Federation, ManualClock, PeerTransport],
) -> None:
    federation, clock, transport = manual
    a, b = federation.node(0), federation.node(1)
    ids = await _submit(federation, 8)
    await DeliveryWorker(a.context, CutAfter(transport, answers=3)).run_once()
    states = await _states(federation, ids)
    delivered = [i for i, state in states.items() if state == outbox.DELIVERED]
    assert len(delivered) == 3
    assert [states[i] for i in ids if i not in delivered] == [outbox.PENDING] * 5
    # Past the backoff: the rest goes out, and each notice is held once.
    clock.advance(dt.timedelta(seconds=5))
    assert await DeliveryWorker(a.context, transport).run_once() == 5
    assert await _states(federation, ids) == dict.fromkeys(ids, outbox.DELIVERED)
    assert await held(b) == ids
    assert sorted(await audited(b, "notice.received")) == ids
    assert sorted(await audited(a, "notice.delivered")) == ids
    assert await DeliveryWorker(a.context, transport).run_once() == 0


@pytest.mark.parametrize(
    ("lacking", "served_with"),
    [({"DeliverBatches"}, "DeliverStream"), ({"DeliverBatches", "DeliverStream"}, "Deliver")],
    ids=["without-batches", "without-either"],
)
async def test_a_peer_that_predates_a_method_is_served_with_the_one_before(
    manual: tuple[Federation, ManualClock, PeerTransport],
    monkeypatch: pytest.MonkeyPatch,
    lacking: set[str],
    served_with: str,
) -> None:
    federation, _, transport = manual
    counting = Counting(monkeypatch)
    asked: list[str] = []
    intercept = DecodeRequests.intercept_service

    async def predating(
        self: DecodeRequests, continuation: Any, details: grpc.HandlerCallDetails
    ) -> Any:
        if details.method.rsplit("/", 1)[-1] in lacking:
            asked.append(details.method)
            return None  # no such method: UNIMPLEMENTED, as a node that predates it answers
        return await intercept(self, continuation, details)

    monkeypatch.setattr(DecodeRequests, "intercept_service", predating)
    await _restart_xb(federation)
    ids = await _submit(federation, 4)
    worker = DeliveryWorker(federation.node(0).context, transport)
    assert await worker.run_once() == 4
    calls = 4 if served_with == "Deliver" else 1
    expected = {"Deliver": 0, "DeliverStream": 0, "DeliverBatches": 0, served_with: calls}
    assert (len(asked), counting.calls) == (len(lacking), expected)
    assert await _states(federation, ids) == dict.fromkeys(ids, outbox.DELIVERED)
    assert await held(federation.node(1)) == ids
    # Remembered: the next batch goes straight to the older method.
    more = await _submit(federation, 2)
    assert await worker.run_once() == 2
    expected[served_with] += 2 if served_with == "Deliver" else 1
    assert (len(asked), counting.calls) == (len(lacking), expected)
    assert await _states(federation, more) == dict.fromkeys(more, outbox.DELIVERED)


async def test_a_stream_from_a_stranger_is_refused_as_a_whole(
    federation: Federation, tmp_path: Path
) -> None:
    """A certificate of the federation CA naming no member: nothing read, nothing audited."""
    a, b = federation.node(0), federation.node(1)
    stranger = stranger_credentials(tmp_path / "federation")
    envelope = craft_envelope(a, [b.context.node_id], referral_notice())
    before = await b.context.store.read(audit_log.size)
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{b.federation_port}", stranger, options=channel_options(b.context.node_id)
    ) as channel:
        stub = federation_pb2_grpc.FederationStub(channel)
        # Refused at the start of the call, before any message is read.
        opened = stub.DeliverStream(timeout=10)
        assert await opened.code() == grpc.StatusCode.UNAUTHENTICATED
        # With an envelope on its way: the same refusal, though grpc.aio may report it
        # as INTERNAL when it overtakes the message being written; nothing is stored.
        call = stub.DeliverStream(
            iter([federation_pb2.DeliverStreamRequest(envelope=envelope.to_proto())]), timeout=10
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in call:
                pass
    assert refused.value.code() in {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INTERNAL}
    assert await b.context.store.read(audit_log.size) == before
    assert await held(b) == []


async def test_an_undecodable_request_ends_the_call_but_not_what_was_answered(
    federation: Federation,
) -> None:
    a, b = federation.node(0), federation.node(1)
    first = craft_envelope(a, [b.context.node_id], referral_notice())
    later = craft_envelope(a, [b.context.node_id], referral_notice())
    requests = [
        federation_pb2.DeliverStreamRequest(sequence=0, envelope=first.to_proto()),
        b"\xff\xff\xff",  # not a DeliverStreamRequest
        federation_pb2.DeliverStreamRequest(sequence=2, envelope=later.to_proto()),
    ]
    answers = []

    def serialized(request: federation_pb2.DeliverStreamRequest | bytes) -> bytes:
        return request if isinstance(request, bytes) else request.SerializeToString()

    async with federation_channel(a, b) as channel:
        call = channel.stream_stream(
            "/exchange.v1.Federation/DeliverStream",
            request_serializer=serialized,
            response_deserializer=federation_pb2.DeliverStreamResponse.FromString,
        )(iter(requests), timeout=10)

        async def read_all() -> None:
            async for response in call:
                answers.append(response)

        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await read_all()
    assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "DeliverStreamRequest" in (ended.value.details() or "")
    # The request after the bad one was never taken. The one before may have been stored
    # with its answer lost in the abort: a repeat gets the same receipt, as after a cut.
    assert [r.sequence for r in answers] in ([], [0])
    kept = await held(b)
    assert kept in ([], [message_id_of(first)])
    assert len(kept) >= len(answers)
