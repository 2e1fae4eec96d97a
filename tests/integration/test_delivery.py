"""The delivery worker against real peers: rejections, odd receipts, odd transports.

A peer down for a long time (backoff, expiry) is a fault case: tests/faults/test_peer_down.py;
forged receipts are attacks: tests/adversarial/test_forged_receipts.py.

Node XA runs on a manual clock without its own worker; the test drives
`DeliveryWorker.run_once` so that time and attempts are deterministic.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import select

from exchange._encoding import encode
from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange._proto.exchange.v1 import envelope_pb2 as env_pb
from exchange.clock import ManualClock, to_millis
from exchange.delivery import PIPELINE_HANDED, DeliveryTransport, DeliveryWorker, Lease
from exchange.envelope import Envelope, Header
from exchange.errors import PeerUnreachableError, StoreUnavailableError
from exchange.harness import samples
from exchange.node import Node
from exchange.receipt import Receipt, SignedReceipt
from exchange.rpc.peers import PeerTransport
from exchange.runtime import NodeContext
from exchange.store import outbox
from exchange.store.outbox import CLAIM_BYTES
from exchange.store.tables import OUTBOX
from exchange.trust import TrustedNode
from tests.conftest import DatabaseFactory
from tests.live import Federation, start_federation


@pytest.fixture
async def manual(
    tmp_path: Path, databases: DatabaseFactory
) -> AsyncIterator[tuple[Federation, ManualClock]]:
    clock = ManualClock(dt.datetime.now(dt.UTC).replace(microsecond=0))
    running = await start_federation(tmp_path, databases, clocks={"xa-police": clock})
    # XA delivers only when the test says so.
    await running.crash("xa-police")
    await running.start("xa-police", deliver=False)
    try:
        yield running, clock
    finally:
        for transport in _TRANSPORTS:
            await transport.close()
        _TRANSPORTS.clear()
        await running.close()


def _referral(recipient: str, ttl_seconds: int = 600) -> apb.SubmitNoticeRequest:
    request = samples.case_referral([recipient], "XA-2026-0009", "Delivery test.")
    request.time_to_live.CopyFrom(Duration(seconds=ttl_seconds))
    return request


_TRANSPORTS: list[PeerTransport] = []


def _worker(federation: Federation, transport: DeliveryTransport | None = None) -> DeliveryWorker:
    """XA's delivery worker, over real mTLS unless another transport is given."""
    node = federation.node(0)
    if transport is None:
        transport = PeerTransport(node.tls.channel_credentials())
        _TRANSPORTS.append(transport)
    return DeliveryWorker(node.context, transport)


async def _recipient(federation: Federation, message_id: str) -> apb.RecipientDelivery:
    status = await federation.client(0).delivery_status(message_id)
    (only,) = status.recipients
    return only


async def test_a_signed_rejection_ends_delivery_and_tells_the_sender(
    manual: tuple[Federation, ManualClock],
) -> None:
    federation, clock = manual
    # XA's clock runs two hours behind: XB finds the envelope expired on arrival.
    clock.set(dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
    sent = await federation.client(0).submit(_referral(federation.sim(1).node_id, ttl_seconds=60))
    await _worker(federation).run_once()
    rejected = await _recipient(federation, sent.message_id)
    assert rejected.state == apb.DELIVERY_STATE_FAILED
    assert rejected.last_error == "rejected by recipient: REJECTION_REASON_EXPIRED"
    assert Receipt.from_bytes(rejected.receipt.body).accepted is False


@dataclasses.dataclass
class RecipientSigning:
    """Answers with a receipt the recipient itself signed, but with a status field its
    protocol does not know: the worker must treat it as no receipt at all."""

    recipient: NodeContext

    async def deliver(self, peer: TrustedNode, envelope: Envelope, timeout: float) -> SignedReceipt:
        header = Header.from_bytes(envelope.header)
        body = env_pb.ReceiptBody(
            message_id=header.message_id,
            envelope_digest=envelope.digest(),
            recipient_node_id=peer.node_id,
            recipient_key_id=self.recipient.identity.signing_key_id,
            status=env_pb.RECEIPT_STATUS_REJECTED,
            rejection_reason=999,
        )
        body.received_at.GetCurrentTime()
        data = body.SerializeToString()
        return SignedReceipt(
            data,
            self.recipient.identity.signing_key.sign(encode("exchange.v1.ReceiptBody", data)),
        )


class Exploding:
    async def deliver(self, peer: TrustedNode, envelope: Envelope, timeout: float) -> SignedReceipt:
        raise RuntimeError("a bug in a transport")


@pytest.mark.parametrize(
    ("transport", "error"),
    [
        pytest.param(
            "recipient-signed-unknown-reason", "invalid receipt: malformed", id="odd-receipt"
        ),
        pytest.param("exploding", "internal error (RuntimeError)", id="transport-bug"),
    ],
)
async def test_a_bad_attempt_reschedules_its_row_and_the_worker_carries_on(
    manual: tuple[Federation, ManualClock], transport: str, error: str
) -> None:
    federation, clock = manual
    sent = await federation.client(0).submit(_referral(federation.sim(1).node_id))
    odd = (
        RecipientSigning(federation.node(1).context)
        if transport.startswith("recipient")
        else Exploding()
    )
    await _worker(federation, odd).run_once()
    pending = await _recipient(federation, sent.message_id)
    assert (pending.state, pending.last_error) == (apb.DELIVERY_STATE_PENDING, error)
    clock.advance(dt.timedelta(seconds=5))
    await _worker(federation).run_once()
    assert (await _recipient(federation, sent.message_id)).state == apb.DELIVERY_STATE_DELIVERED


async def test_the_worker_waits_out_an_unavailable_store(
    manual: tuple[Federation, ManualClock],
) -> None:
    federation, _ = manual
    node = federation.node(0)
    real = node.context.store
    failures = {"left": 2}

    class Flaky:
        """The node's store, but the first writes find the database unavailable."""

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        async def write(self, fn: object) -> object:
            if failures["left"]:
                failures["left"] -= 1
                raise StoreUnavailableError("database is locked; retry")
            return await real.write(fn)  # type: ignore[arg-type]

    sent = await federation.client(0).submit(_referral(federation.sim(1).node_id))
    node.context.store = Flaky()  # type: ignore[assignment]
    worker = asyncio.create_task(_worker(federation).run())
    try:
        await _until_delivered(federation, sent.message_id)
        assert not worker.done()
    finally:
        worker.cancel()
        node.context.store = real
    assert failures["left"] == 0
    assert (await _recipient(federation, sent.message_id)).state == apb.DELIVERY_STATE_DELIVERED


async def _until_delivered(federation: Federation, message_id: str) -> None:
    """Polls for up to 10 s (hang protection only; the caller asserts the state)."""
    for _ in range(200):
        if (await _recipient(federation, message_id)).state == apb.DELIVERY_STATE_DELIVERED:
            return
        await asyncio.sleep(0.05)


class Hanging:
    """A peer that never answers: an attempt in flight when the node is told to stop."""

    def __init__(self) -> None:
        self.sending = asyncio.Event()

    async def deliver(self, peer: TrustedNode, envelope: Envelope, timeout: float) -> SignedReceipt:
        self.sending.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_stopping_worker_puts_back_what_it_could_not_finish(
    manual: tuple[Federation, ManualClock],
) -> None:
    federation, _ = manual
    sent = await federation.client(0).submit(_referral(federation.sim(1).node_id))
    hanging = Hanging()
    worker = _worker(federation, hanging)
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(hanging.sending.wait(), 10)  # hang protection only
    assert await _lease(federation.node(0)) > 0, "claimed while in flight"
    await _stop_mid_attempt(worker, running)
    assert await _lease(federation.node(0)) == 0, "put back, not left to its lease"
    pending = await _recipient(federation, sent.message_id)
    assert (pending.state, pending.attempts) == (apb.DELIVERY_STATE_PENDING, 0)


async def _lease(node: Node) -> int:
    """lease_until of the one outbox row."""
    return int(
        await node.context.store.read(
            lambda c: c.execute(select(OUTBOX.c.lease_until)).scalar_one()
        )
    )


async def _stop_mid_attempt(worker: DeliveryWorker, running: asyncio.Task[None]) -> None:
    # The grace period ends with the attempt still in flight: the task is cancelled.
    await worker.finish(grace=0.1)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running


async def test_leases_left_by_a_dead_process_end_at_restart_only_on_sqlite(
    manual: tuple[Federation, ManualClock],
) -> None:
    federation, clock = manual
    node = federation.node(0)
    await federation.client(0).submit(_referral(federation.sim(1).node_id))
    now = to_millis(clock.now())
    # Claimed by a worker whose process then died: nothing was put back.
    await node.context.store.write(
        lambda c: outbox.claim_due(c, now=now, lease_ms=60_000, limit=10)
    )
    await federation.crash("xa-police")
    node = await federation.start("xa-police", deliver=False)

    lease = await _lease(node)
    if node.context.store.store.is_sqlite:
        assert lease == 0, "one process serves SQLite: the lease was the dead one's"
    else:
        assert lease == now + 60_000, "another process of the node may hold it"


# --- rows handed over by the submission, not claimed ------------------------------------------


async def test_a_submission_hands_its_rows_to_the_worker_which_sends_them_unclaimed(
    manual: tuple[Federation, ManualClock],
) -> None:
    federation, _ = manual
    node = federation.node(0)
    # As `Node.start` does for a process that delivers; the worker's claim loop never runs.
    node.context.handover = _worker(federation)
    try:
        sent = await federation.client(0).submit(_referral(federation.sim(1).node_id))
        await _until_delivered(federation, sent.message_id)
    finally:
        node.context.handover = None
    delivered = await _recipient(federation, sent.message_id)
    assert (delivered.state, delivered.attempts) == (apb.DELIVERY_STATE_DELIVERED, 1)


async def test_handed_rows_are_nobody_elses_and_go_back_when_the_worker_stops(
    manual: tuple[Federation, ManualClock],
) -> None:
    federation, _ = manual
    node = federation.node(0)
    hanging = Hanging()
    worker = _worker(federation, hanging)
    running = asyncio.create_task(worker.run())
    node.context.handover = worker
    try:
        sent = await federation.client(0).submit(_referral(federation.sim(1).node_id))
        await asyncio.wait_for(hanging.sending.wait(), 10)  # hang protection only
        assert await _worker(federation).run_once() == 0, "leased to the worker handed them"
        await _stop_mid_attempt(worker, running)
    finally:
        node.context.handover = None
    assert await _lease(node) == 0, "put back at once, not left to its lease"
    pending = await _recipient(federation, sent.message_id)
    assert (pending.state, pending.attempts) == (apb.DELIVERY_STATE_PENDING, 0)
    assert await _worker(federation).run_once() == 1, "and claimable by any worker"


async def _claimed_as_if_handed(
    federation: Federation, clock: ManualClock, worker: DeliveryWorker
) -> tuple[Lease, list[outbox.OutboxItem]]:
    """A submitted row and the lease `worker` gave for it, as a submission would hand it over."""
    await federation.client(0).submit(_referral(federation.sim(1).node_id))
    now = to_millis(clock.now())
    lease = worker.lease_for(1, 1000, now)
    assert lease is not None
    items = await federation.node(0).context.store.write(
        lambda c: outbox.claim_due(c, now=now, lease_ms=lease.until - now, limit=10)
    )
    assert len(items) == 1
    return lease, items


async def _running(worker: DeliveryWorker) -> asyncio.Task[None]:
    running = asyncio.create_task(worker.run())
    await asyncio.sleep(0)  # into its loops: a task cancelled before it starts runs nothing
    return running


async def _until_released(node: Node) -> None:
    """Polls for up to 10 s (hang protection only; the caller asserts the lease)."""
    for _ in range(200):
        if await _lease(node) == 0:
            return
        await asyncio.sleep(0.05)


async def test_rows_handed_over_after_the_worker_ended_go_back_at_once(
    manual: tuple[Federation, ManualClock],
) -> None:
    # A submission whose write was still queued when the node stopped commits afterwards.
    federation, clock = manual
    hanging = Hanging()  # were they sent instead, the test would hang, not pass
    worker = _worker(federation, hanging)
    lease, items = await _claimed_as_if_handed(federation, clock, worker)
    await _stop_mid_attempt(worker, await _running(worker))
    assert worker.lease_for(1, 1000, to_millis(clock.now())) is None

    worker.hand_over(lease, items)

    await _until_released(federation.node(0))
    assert await _lease(federation.node(0)) == 0, "not left to its lease"
    assert not hanging.sending.is_set()


async def test_a_stopping_worker_puts_back_handed_rows_waiting_behind_those_in_flight(
    manual: tuple[Federation, ManualClock],
) -> None:
    federation, clock = manual
    hanging = Hanging()
    worker = _worker(federation, hanging)
    for _ in range(PIPELINE_HANDED + 1):
        worker.hand_over(*await _claimed_as_if_handed(federation, clock, worker))
    running = await _running(worker)
    await asyncio.wait_for(hanging.sending.wait(), 10)  # hang protection only
    await _stop_mid_attempt(worker, running)
    leases = await federation.node(0).context.store.read(
        lambda c: c.execute(select(OUTBOX.c.lease_until)).scalars().all()
    )
    assert leases == [0] * (PIPELINE_HANDED + 1), "in flight or waiting, all put back"


async def test_handed_rows_are_held_like_claimed_ones_when_the_trust_list_goes_stale(
    manual: tuple[Federation, ManualClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    federation, clock = manual
    node = federation.node(0)
    worker = _worker(federation)
    lease, items = await _claimed_as_if_handed(federation, clock, worker)
    # Stale between the submission (which checked it) and the attempt.
    monkeypatch.setattr(node.context, "trust_staleness", lambda now: "stale for the test")

    worker.hand_over(lease, items)

    await _until_released(node)
    assert await _lease(node) == 0, "back to the outbox, held there until a newer list"
    pending = await _recipient(federation, items[0].message_id)
    assert (pending.state, pending.attempts) == (apb.DELIVERY_STATE_PENDING, 0), "not sent"


async def test_the_worker_takes_rows_in_memory_only_while_it_has_room(
    manual: tuple[Federation, ManualClock],
) -> None:
    federation, _ = manual
    worker = _worker(federation)
    config = federation.node(0).context.config.delivery
    now, small = 1_800_000_000_000, 1000
    full = worker.lease_for(config.batch_size, small, now)
    assert full == Lease(now + int(config.lease_seconds * 1000), config.batch_size, small)
    assert worker.lease_for(1, small, now) is None, "full: inserted due, and claimed as usual"
    worker.hand_over(full, [])  # their transaction failed
    large = worker.lease_for(1, CLAIM_BYTES * 2, now)
    assert large is not None, "one envelope larger than a batch goes alone"
    assert worker.lease_for(1, 1, now) is None, "and nothing goes with it"
    worker.hand_over(large, [])
    assert worker.lease_for(2, CLAIM_BYTES // 2, now) is not None
    assert worker.lease_for(1, CLAIM_BYTES // 2 + 1, now) is None, "bytes bound the batch too"
    await worker.finish(grace=0)
    assert worker.lease_for(1, small, now) is None, "a stopping worker takes nothing more"


@dataclasses.dataclass
class Failing:
    """Answers every envelope with the same error, as the transport reports it."""

    error: PeerUnreachableError

    async def deliver(self, peer: TrustedNode, envelope: Envelope, timeout: float) -> SignedReceipt:
        raise self.error


OUTAGE_CASES = [
    pytest.param(PeerUnreachableError("UNAVAILABLE: connection refused"), True, id="not-reached"),
    pytest.param(
        PeerUnreachableError("UNAVAILABLE: the store is busy; retry", refused=True),
        False,
        id="refused-by-the-peer",
    ),
    pytest.param(PeerUnreachableError("DEADLINE_EXCEEDED: too slow"), False, id="deadline"),
]


@pytest.mark.parametrize(("error", "down"), OUTAGE_CASES)
async def test_only_a_peer_not_reached_is_taken_for_down(
    manual: tuple[Federation, ManualClock], error: PeerUnreachableError, down: bool
) -> None:
    """Down, a peer's next rows wait for its next try unattempted; a refusal (the peer
    answered) or a deadline (perhaps one large envelope's) leaves the next rows tried."""
    federation, _ = manual
    client, b_id = federation.client(0), federation.sim(1).node_id
    worker = _worker(federation, Failing(error))
    first = await client.submit(_referral(b_id))
    assert await worker.run_once() == 1
    second = await client.submit(_referral(b_id))
    assert await worker.run_once() == 1
    assert (await _recipient(federation, first.message_id)).attempts == 1
    assert (await _recipient(federation, second.message_id)).attempts == (0 if down else 1)
