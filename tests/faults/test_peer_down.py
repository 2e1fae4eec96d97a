"""A peer down for a long time: backoff within bounds, each notice delivered once on recovery,
and past expiry the sender's authority is told it failed.

All three nodes read one manual clock; XA runs with the production backoff
(1 s doubling to 600 s) and without its own worker: the test drives
`DeliveryWorker.run_once`, moving the clock to the moment the next row is due,
so hours of outage pass in a few hundred attempts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import func, select

from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange.clock import ManualClock, from_millis, to_millis
from exchange.delivery import DeliveryWorker
from exchange.envelope import Envelope
from exchange.errors import PeerUnreachableError
from exchange.harness import samples
from exchange.node import Node
from exchange.receipt import SignedReceipt
from exchange.rpc.peers import PeerTransport
from exchange.store import audit_log
from exchange.store.tables import INBOX_EVENTS, NOTICES, RECEIPTS
from exchange.trust import TrustedNode
from tests.conftest import DatabaseFactory
from tests.live import Federation, start_federation

XA, XB = 0, 1
INITIAL, MAXIMUM = 1.0, 600.0
PARK = 600.0  # how long a down peer's rows wait parked, as in production
PRODUCTION_BACKOFF = (
    f"[delivery]\ninitial_backoff_seconds = {INITIAL}\nmax_backoff_seconds = {MAXIMUM}\n"
)
OUTAGE = dt.timedelta(hours=3)


@pytest.fixture
async def down(
    tmp_path: Path, databases: DatabaseFactory
) -> AsyncIterator[tuple[Federation, ManualClock, DeliveryWorker]]:
    """XB is down; XA, on the production backoff, delivers only when the test says."""
    clock = ManualClock(dt.datetime.now(dt.UTC).replace(microsecond=0))
    ids = ["xa-police", "xb-prosecution", "xc-childprotection"]
    running = await start_federation(tmp_path, databases, clocks=dict.fromkeys(ids, clock))
    transport: PeerTransport | None = None
    try:
        a = running.sim(XA)
        await running.crash(a.node_id)
        toml = a.directory / "node.toml"
        text = toml.read_text()
        # The simulation's fast retries give way to the production values.
        start = text.index("[delivery]\n")
        end = text.index("\n[", start + 1) + 1
        toml.write_text(text[:start] + PRODUCTION_BACKOFF + text[end:])
        node = await running.start(a.node_id, deliver=False)
        assert node.config.delivery.max_backoff_seconds == MAXIMUM
        assert node.config.delivery.park_seconds == PARK
        await running.crash(running.sim(XB).node_id)
        transport = PeerTransport(node.tls.channel_credentials())
        yield running, clock, DeliveryWorker(node.context, transport)
    finally:
        if transport is not None:
            await transport.close()
        await running.close()


def _referral(recipient: str, reference: str, ttl: dt.timedelta) -> apb.SubmitNoticeRequest:
    request = samples.case_referral([recipient], reference, "Sent while the peer is down.")
    request.time_to_live.CopyFrom(Duration(seconds=int(ttl.total_seconds())))
    return request


async def _row(federation: Federation, message_id: str) -> apb.RecipientDelivery:
    (only,) = (await federation.client(XA).delivery_status(message_id)).recipients
    return only


async def _submit(federation: Federation, count: int, ttl: dt.timedelta = OUTAGE) -> list[str]:
    """The message ids of `count` referrals XA submits to XB, XA-0 onwards."""
    b_id = federation.sim(XB).node_id
    client = federation.client(XA)
    return [(await client.submit(_referral(b_id, f"XA-{i}", ttl))).message_id for i in range(count)]


async def _next_attempts(federation: Federation, message_ids: list[str]) -> list[dt.datetime]:
    """When each of `message_ids` is next due at XA (parked or not)."""
    return [(await _row(federation, m)).next_attempt_at.ToDatetime(dt.UTC) for m in message_ids]


async def _count(node: Node, table: object, message_id: str) -> int:
    query = (
        select(func.count())
        .select_from(table)  # type: ignore[arg-type]
        .where(table.c.message_id == message_id)  # type: ignore[attr-defined]
    )
    return await node.context.store.read(lambda c: int(c.execute(query).scalar_one()))


async def _attempt_each_when_due(
    federation: Federation,
    clock: ManualClock,
    worker: DeliveryWorker,
    message_ids: list[str],
    until: dt.datetime,
) -> dict[str, list[tuple[dt.datetime, dt.datetime]]]:
    """Run XA's worker at each moment a row falls due, until `until`; for each message, the
    (attempted at, next attempt at) of every failed attempt."""
    schedule: dict[str, list[tuple[dt.datetime, dt.datetime]]] = {m: [] for m in message_ids}
    while True:
        due = await worker.next_due()
        if due is None or from_millis(due) >= until:
            return schedule
        clock.set(max(clock.now(), from_millis(due)))
        assert await worker.run_once() >= 1
        for message_id in message_ids:
            row = await _row(federation, message_id)
            if row.state == apb.DELIVERY_STATE_PENDING and row.attempts > len(schedule[message_id]):
                assert row.attempts == len(schedule[message_id]) + 1, "one attempt at a time"
                schedule[message_id].append((clock.now(), row.next_attempt_at.ToDatetime(dt.UTC)))


def _assert_backoff(attempts: list[tuple[dt.datetime, dt.datetime]], expires: dt.datetime) -> None:
    """Each wait is at least 50 % of min(600 s, 1 s * 2**failures before), never past expiry,
    and at most a park (600 s here) past the peer's next try (600 s at most). (Not at most
    100 % of its own backoff: the row also waits for its peer's next try, whose backoff
    counts the peer's failed tries, not the row's; and while the peer is down its rows
    are parked until a try of it is answered.)"""
    for failures, (attempted, next_at) in enumerate(attempts):
        exponential = min(MAXIMUM, INITIAL * 2**failures)
        wait = (next_at - attempted).total_seconds()
        assert wait <= MAXIMUM + PARK + 0.001, (failures, wait)
        if next_at != expires:
            assert exponential * 0.5 - 0.001 <= wait, (failures, wait)


async def test_a_peer_down_for_hours_is_retried_with_bounded_backoff_and_gets_each_notice_once(
    down: tuple[Federation, ManualClock, DeliveryWorker],
) -> None:
    federation, clock, worker = down
    a = federation.node(XA)
    b_id = federation.sim(XB).node_id
    sent = await _submit(federation, 2, 3 * OUTAGE)
    start = clock.now()
    schedule = await _attempt_each_when_due(federation, clock, worker, sent, start + OUTAGE)

    # Bounded: the peer is tried (with one envelope, once it is known down) at least once
    # per 600 s once the backoff is at its cap, at most once per 300 s, after the ten
    # doublings that lead there; each row waits within its own bounds.
    doublings = 10
    tries = sorted({attempted for m in sent for attempted, _ in schedule[m]})
    for failures, (before, after) in enumerate(itertools.pairwise(tries)):
        wait = (after - before).total_seconds()
        assert 0.5 * min(MAXIMUM, INITIAL * 2**failures) - 0.001 <= wait <= MAXIMUM + 0.001
    assert OUTAGE / dt.timedelta(seconds=MAXIMUM) <= len(tries)
    assert len(tries) <= doublings + 1 + OUTAGE / dt.timedelta(seconds=MAXIMUM / 2)
    for message_id in sent:
        assert schedule[message_id], "each row was tried"
        _assert_backoff(schedule[message_id], start + 3 * OUTAGE)
        row = await _row(federation, message_id)
        assert row.state == apb.DELIVERY_STATE_PENDING
        assert row.last_error.startswith("UNAVAILABLE")
        assert not row.receipt.body

    # XB comes back. Its channel reconnects within its own short backoff (real seconds).
    b = await federation.start(b_id, deliver=False)
    async with asyncio.timeout(60):  # hang protection only
        while {(await _row(federation, m)).state for m in sent} != {apb.DELIVERY_STATE_DELIVERED}:
            due = await worker.next_due()
            if due is not None:
                clock.set(max(clock.now(), from_millis(due)))
            if not await worker.run_once():
                await asyncio.sleep(0.25)  # the channel's reconnect runs on real time

    clock.advance(dt.timedelta(days=5))
    assert await worker.run_once() == 0, "delivered rows are never sent again"
    for message_id in sent:
        assert await _count(b, NOTICES, message_id) == 1
        assert await _count(b, INBOX_EVENTS, message_id) == 1
        assert await _count(a, RECEIPTS, message_id) == 1
        entries = await a.context.store.read(
            lambda c, m=message_id: audit_log.entries_for_message(c, m)
        )
        actions = [e.action for e in entries]
        assert actions.count("notice.delivered") == 1
        assert actions.count("delivery.attempt_failed") >= len(schedule[message_id])


async def test_past_expiry_the_senders_authority_is_told_delivery_failed(
    down: tuple[Federation, ManualClock, DeliveryWorker],
) -> None:
    federation, clock, worker = down
    a = federation.node(XA)
    b_id = federation.sim(XB).node_id
    ttl = dt.timedelta(hours=2)
    submitted = await federation.client(XA).submit(_referral(b_id, "XA-9", ttl))
    message_id = submitted.message_id
    expires = submitted.expires_at.ToDatetime(dt.UTC)
    assert expires - clock.now() == ttl

    schedule = await _attempt_each_when_due(federation, clock, worker, [message_id], expires)
    attempts = schedule[message_id]
    _assert_backoff(attempts, expires)
    assert attempts[-1][1] == expires, "the last wait ends at expiry, not past it"
    clock.set(expires)
    assert await worker.run_once() == 1
    failed = await _row(federation, message_id)
    assert failed.state == apb.DELIVERY_STATE_FAILED
    assert failed.last_error == "expired before delivery"
    assert to_millis(clock.now()) == to_millis(expires)

    # The authority is told in its inbox, once.
    async with asyncio.timeout(30):  # hang protection only
        async for event in federation.client(XA).watch(0):
            if event.message_id == message_id:
                break
    assert (event.type, event.peer_node_id) == (apb.INBOX_EVENT_TYPE_DELIVERY_FAILED, b_id)
    assert await _count(a, INBOX_EVENTS, message_id) == 1
    entries = await a.context.store.read(lambda c: audit_log.entries_for_message(c, message_id))
    actions = [e.action for e in entries]
    assert actions[0] == "notice.submitted"
    assert actions[-1] == "delivery.failed"
    assert actions[1:-1] == ["delivery.attempt_failed"] * len(attempts)

    # XB comes back: the expired notice is never sent.
    b = await federation.start(b_id, deliver=False)
    clock.advance(dt.timedelta(hours=1))
    assert await worker.run_once() == 0
    assert await _count(b, NOTICES, message_id) == 0
    assert (await _row(federation, message_id)).state == apb.DELIVERY_STATE_FAILED


async def test_rows_to_a_peer_known_down_are_parked_unattempted_and_one_tries_it_next(
    down: tuple[Federation, ManualClock, DeliveryWorker],
) -> None:
    """One batch finds the peer down; what falls due meanwhile is parked, with no attempt
    counted and nothing audited (a row update and an audit entry per row and retry, all
    through an outage, otherwise), and one row tries the peer at its next try."""
    federation, clock, worker = down
    a = federation.node(XA)
    b_id = federation.sim(XB).node_id
    client = federation.client(XA)
    first = (await client.submit(_referral(b_id, "XA-1", OUTAGE))).message_id
    assert await worker.run_once() == 1
    assert (await _row(federation, first)).attempts == 1

    later = [
        (await client.submit(_referral(b_id, f"XA-{i}", OUTAGE))).message_id for i in (2, 3, 4)
    ]
    assert await worker.run_once() == 3, "claimed at once"
    rows = [await _row(federation, message_id) for message_id in later]
    assert [row.attempts for row in rows] == [0, 0, 0]
    assert all(row.last_error.startswith("UNAVAILABLE") for row in rows)
    # The peer's first wait: within [50 %, 100 %] of the initial backoff; its rows are
    # parked a park past it.
    next_try = from_millis(await worker.next_due())  # type: ignore[arg-type]
    assert clock.now() < next_try <= clock.now() + dt.timedelta(seconds=INITIAL)
    park = dt.timedelta(seconds=PARK)
    assert {row.next_attempt_at.ToDatetime(dt.UTC) for row in rows} == {next_try + park}
    for message_id in later:
        entries = await a.context.store.read(
            lambda c, m=message_id: audit_log.entries_for_message(c, m)
        )
        assert [e.action for e in entries] == ["notice.submitted"]

    # Then the peer is tried again, with one of the rows that waited for it.
    clock.set(next_try)
    assert await worker.run_once() == 1
    assert await worker.run_once() == 0
    rows = [await _row(federation, message_id) for message_id in [first, *later]]
    assert sum(row.attempts for row in rows) == 1 + 1
    assert await worker.next_due() > to_millis(clock.now())  # type: ignore[operator]


class _Draws(random.Random):
    """Jitter from a list, in the order drawn: the test chooses whose wait is longer."""

    def __init__(self, draws: list[float]) -> None:
        super().__init__()
        self._draws = iter(draws)

    def random(self) -> float:
        return next(self._draws)


async def test_a_row_that_found_its_peer_down_waits_for_the_peers_next_try_or_its_expiry(
    down: tuple[Federation, ManualClock, DeliveryWorker],
) -> None:
    """A row's own backoff and its peer's are jittered apart; were the row due first, it
    would be claimed only to be put back, or, expiring before the peer's next try, be
    left due before its expiry, when its failure must be reported. Rows that outlive
    the park are parked; those that expire first keep their time."""
    federation, clock, worker = down
    b_id = federation.sim(XB).node_id
    client = federation.client(XA)
    soon = await client.submit(_referral(b_id, "XA-1", dt.timedelta(minutes=1)))
    within = await client.submit(_referral(b_id, "XA-2", dt.timedelta(minutes=2)))
    later = await client.submit(_referral(b_id, "XA-3", OUTAGE))
    expires = soon.expires_at.ToDatetime(dt.UTC)
    # Drawn in this order: the peer's wait (99 % jitter: 0.995 s), then each row's own
    # (0 %: 0.5 s), from 0.7 s before the first row expires.
    federation.node(XA).context.rng = _Draws([0.99, 0.0, 0.0, 0.0])
    clock.set(expires - dt.timedelta(seconds=0.7))
    assert await worker.run_once() == 3

    peers_next_try = clock.now() + dt.timedelta(seconds=0.995)
    parked = peers_next_try + dt.timedelta(seconds=PARK)
    rows = [await _row(federation, m.message_id) for m in (soon, within, later)]
    assert [row.attempts for row in rows] == [1, 1, 1]
    due = [row.next_attempt_at.ToDatetime(dt.UTC) for row in rows]
    assert due == [expires, peers_next_try, parked]


class _Gated:
    """XA's peer transport behind a gate: a send waits until the test opens it."""

    def __init__(self, inner: PeerTransport) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.sent: list[int] = []  # envelopes per call, as calls begin

    async def deliver(self, peer: TrustedNode, envelope: Envelope, timeout: float) -> SignedReceipt:
        (answer,) = await self.deliver_many(peer, [envelope], timeout)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def deliver_many(
        self, peer: TrustedNode, envelopes: list[Envelope], timeout: float
    ) -> list[SignedReceipt | PeerUnreachableError | Exception]:
        self.sent.append(len(envelopes))
        self.entered.set()
        await self.gate.wait()
        return list(await self.inner.deliver_many(peer, envelopes, timeout))


async def _actions(federation: Federation, message_id: str) -> list[str]:
    """The audit actions on XA of one message, in order."""
    node = federation.node(XA)
    entries = await node.context.store.read(lambda c: audit_log.entries_for_message(c, message_id))
    return [entry.action for entry in entries]


@dataclasses.dataclass
class _OutageOver:
    federation: Federation
    clock: ManualClock
    worker: DeliveryWorker  # XA's, claiming two rows at a time through `gated`
    gated: _Gated  # closed
    sent: list[str]  # the rows' message ids, oldest first

    def __iter__(self) -> Iterator[Any]:
        return iter((self.federation, self.clock, self.worker, self.gated, self.sent))


@pytest.fixture
async def over(down: tuple[Federation, ManualClock, DeliveryWorker]) -> _OutageOver:
    """Three rows to XB, the first two of which found it down, all three parked; the
    clock at the end of that outage, when the peer is to be tried again."""
    federation, clock, down_worker = down
    gated = _Gated(down_worker._transport)  # type: ignore[arg-type]
    node = federation.node(XA)
    config = node.context.config
    two_at_a_time = dataclasses.replace(
        config, delivery=dataclasses.replace(config.delivery, batch_size=2)
    )
    context = dataclasses.replace(node.context, config=two_at_a_time)
    worker = DeliveryWorker(context, gated)
    sent = await _submit(federation, 3)
    # Drawn in this order: the peer's wait (0.995 s), then each row's own (0.5 s), which
    # then waits for the peer's next try like the third.
    context.rng = _Draws([0.99, 0.0, 0.0])
    gated.gate.set()
    assert await worker.run_once() == 2
    assert gated.sent == [2]
    next_try = from_millis(await worker.next_due())  # type: ignore[arg-type]
    assert next_try == clock.now() + dt.timedelta(seconds=0.995)
    for message_id in sent:
        assert (await _row(federation, message_id)).next_attempt_at.ToDatetime(dt.UTC) > next_try
    clock.set(next_try)
    context.rng = random.Random()
    gated.gate.clear()
    gated.entered.clear()
    gated.sent.clear()
    return _OutageOver(federation, clock, worker, gated, sent)


async def test_when_a_peers_outage_ends_one_envelope_tries_it_and_the_others_wait_for_it(
    over: _OutageOver,
) -> None:
    federation, clock, worker, gated, sent = over
    parked = set(await _next_attempts(federation, sent))

    probe = asyncio.create_task(worker.run_once())  # the oldest row, parked
    async with asyncio.timeout(10):  # hang protection only
        await gated.entered.wait()
        # A row submitted while the probe is out waits for its answer, parked too.
        b_id = federation.sim(XB).node_id
        fresh = (await federation.client(XA).submit(_referral(b_id, "XA-5", OUTAGE))).message_id
        assert await worker.run_once() == 1
        assert await worker.run_once() == 0
        assert gated.sent == [1], "one envelope tries the peer"
        gated.gate.set()
        assert await probe == 1

    rows = [await _row(federation, m) for m in [*sent, fresh]]
    assert [row.attempts for row in rows] == [2, 1, 0, 0]
    failed = [(await _actions(federation, m)).count("delivery.attempt_failed") for m in sent]
    assert failed == [2, 1, 0]
    # The probe found the peer down again: the peer's next try is about 2 s away, and the
    # probe's row waits for it (or its own backoff); the others stay parked as they were.
    next_try = from_millis(await worker.next_due())  # type: ignore[arg-type]
    assert clock.now() < next_try <= clock.now() + dt.timedelta(seconds=2 * INITIAL)
    probe_due = rows[0].next_attempt_at.ToDatetime(dt.UTC)
    assert next_try <= probe_due <= clock.now() + dt.timedelta(seconds=2 * INITIAL)
    assert {row.next_attempt_at.ToDatetime(dt.UTC) for row in rows[1:]} == parked


@pytest.mark.parametrize("put_back_late", [False, True], ids=["before", "after"])
async def test_a_receipt_after_an_outage_makes_the_peers_waiting_rows_due_at_once(
    over: _OutageOver,
    monkeypatch: pytest.MonkeyPatch,
    put_back_late: bool,
) -> None:
    """Rows put back while the probe is out are due once it is answered, whether they
    were put back before the answer came or (`put_back_late`) after it."""
    federation, clock, worker, gated, sent = over
    b = await federation.start(federation.sim(XB).node_id, deliver=False)
    # A new channel: the old one's reconnect to the restarted XB runs on real time.
    gated.inner = PeerTransport(federation.node(XA).tls.channel_credentials())
    # The waiting batch's commit (nothing attempted), held back while the test says.
    committing, held = asyncio.Event(), asyncio.Event()
    commit = worker._commit

    async def late_commit(outcomes: list[Any]) -> None:
        if all(outcome.postponed_until for outcome in outcomes):
            committing.set()
            await held.wait()
        await commit(outcomes)

    monkeypatch.setattr(worker, "_commit", late_commit)
    if not put_back_late:
        held.set()
    try:
        probe = asyncio.create_task(worker.run_once())
        async with asyncio.timeout(10):  # hang protection only
            await gated.entered.wait()
            # A row submitted while the probe is out: claimed and parked.
            b_id = federation.sim(XB).node_id
            fresh = await federation.client(XA).submit(_referral(b_id, "XA-5", OUTAGE))
            sent.append(fresh.message_id)
            waiting = asyncio.create_task(worker.run_once())
            await committing.wait()
            if not put_back_late:
                assert await waiting == 1
            gated.gate.set()
            assert await probe == 1
            held.set()
            assert await waiting == 1
        assert gated.sent == [1]

        assert (await _row(federation, sent[0])).state == apb.DELIVERY_STATE_DELIVERED
        rows = [await _row(federation, m) for m in sent[1:]]
        assert all(row.next_attempt_at.ToDatetime(dt.UTC) <= clock.now() for row in rows)
        assert [row.attempts for row in rows] == [1, 0, 0]
        async with asyncio.timeout(10):
            assert await worker.run_once() == 2  # two at a time
            assert await worker.run_once() == 1
        for message_id in sent:
            assert (await _row(federation, message_id)).state == apb.DELIVERY_STATE_DELIVERED
            assert await _count(b, NOTICES, message_id) == 1
    finally:
        await gated.inner.close()


class _Answering:
    """A transport whose every envelope gets the same answer, reaching no peer."""

    def __init__(self, answer: Exception) -> None:
        self._answer = answer

    async def deliver(self, peer: TrustedNode, envelope: Envelope, timeout: float) -> SignedReceipt:
        raise self._answer

    async def deliver_many(
        self, peer: TrustedNode, envelopes: list[Envelope], timeout: float
    ) -> list[SignedReceipt | PeerUnreachableError | Exception]:
        return [self._answer for _ in envelopes]


async def test_a_probe_that_runs_out_of_time_neither_ends_the_outage_nor_resumes_the_backlog(
    over: _OutageOver,
) -> None:
    """A deadline may be one large envelope's: only an answer says the peer is back."""
    federation, clock, worker, gated, sent = over
    gated.inner = _Answering(PeerUnreachableError("DEADLINE_EXCEEDED: Deadline Exceeded"))  # type: ignore[assignment]
    gated.gate.set()

    parked = set(await _next_attempts(federation, sent))
    assert await worker.run_once() == 1  # the probe
    assert await worker.run_once() == 0  # the outage goes on: nothing resumed
    assert gated.sent == [1]
    rows = [await _row(federation, m) for m in sent]
    assert [row.attempts for row in rows] == [2, 1, 0]
    assert {row.next_attempt_at.ToDatetime(dt.UTC) for row in rows[1:]} == parked
    # The peer is tried again an attempt's timeout after the probe went, not before (the
    # probe's row, due again by its own backoff before then, is parked).
    went = clock.now()
    timeout = dt.timedelta(seconds=federation.node(XA).config.delivery.attempt_timeout_seconds)
    while (due := from_millis(await worker.next_due())) < went + timeout:  # type: ignore[arg-type]
        clock.set(due)
        await worker.run_once()
    assert gated.sent == [1]
    clock.set(went + timeout)
    assert await worker.run_once() == 1
    assert gated.sent == [1, 1]

    # Past the park, the peer still unanswering: the rows are parked anew, not put back
    # due to be claimed again at once, over and over.
    clock.set(max(parked) + dt.timedelta(milliseconds=1))
    async with asyncio.timeout(10):  # hang protection: the loop ends
        while await worker.run_once():
            pass
    rows = [await _row(federation, m) for m in sent]
    assert all(row.next_attempt_at.ToDatetime(dt.UTC) > clock.now() for row in rows)
    assert len(gated.sent) == 3, "one more probe"


async def test_a_peer_at_a_new_endpoint_gets_one_probe_even_while_its_outage_lasts(
    over: _OutageOver,
) -> None:
    federation, clock, worker, gated, sent = over
    clock.advance(dt.timedelta(milliseconds=-1))  # the outage not over yet
    b_id = federation.sim(XB).node_id
    # A newer trust list names another endpoint (the worker's context: a copy, see above).
    context = worker._context
    moved = dataclasses.replace(context.trust.nodes[b_id], endpoint="127.0.0.1:1")  # refuses
    context.trust = dataclasses.replace(context.trust, nodes={**context.trust.nodes, b_id: moved})

    # Nothing is due (the rows are parked): the worker claims one of them to try the
    # new endpoint all the same.
    probe = asyncio.create_task(worker.run_once())
    async with asyncio.timeout(10):  # hang protection only
        await gated.entered.wait()
        # A row submitted while the probe is out waits for its answer, parked.
        fresh = (await federation.client(XA).submit(_referral(b_id, "XA-7", OUTAGE))).message_id
        assert await worker.run_once() == 1
        assert gated.sent == [1], "one envelope tries the new endpoint"
        gated.gate.set()
        assert await probe == 1
    assert [(await _row(federation, m)).attempts for m in sent] == [2, 1, 0]
    row = await _row(federation, fresh)
    assert row.attempts == 0
    assert row.next_attempt_at.ToDatetime(dt.UTC) > clock.now()


async def test_a_peer_known_down_with_nothing_left_to_send_it_is_not_tried_again(
    down: tuple[Federation, ManualClock, DeliveryWorker],
) -> None:
    """Its next try claims nothing: the worker forgets the outage instead of waking for
    it again and again, and the next row to the peer, if any comes, finds out."""
    federation, clock, worker = down
    b_id = federation.sim(XB).node_id
    client = federation.client(XA)
    submitted = await client.submit(_referral(b_id, "XA-1", dt.timedelta(minutes=1)))
    assert await worker.run_once() == 1
    clock.set(submitted.expires_at.ToDatetime(dt.UTC))
    assert await worker.run_once() == 1  # expired: failed, the authority told
    assert (await _row(federation, submitted.message_id)).state == apb.DELIVERY_STATE_FAILED

    assert await worker.run_once() == 0
    assert await worker.next_due() is None


async def test_a_worker_that_stops_leaves_the_rows_it_parked_due(
    down: tuple[Federation, ManualClock, DeliveryWorker],
) -> None:
    """No one tries their peer once it has stopped: the next start, or another process,
    finds out whether the peer is still down, instead of waiting for the park to end."""
    federation, clock, worker = down
    sent = await _submit(federation, 2)
    assert await worker.run_once() == 2
    rows = [await _row(federation, m) for m in sent]
    assert all(row.next_attempt_at.ToDatetime(dt.UTC) > clock.now() for row in rows)

    running = asyncio.create_task(worker.run())
    await worker.finish(grace=5)
    await running
    rows = [await _row(federation, m) for m in sent]
    assert all(row.next_attempt_at.ToDatetime(dt.UTC) <= clock.now() for row in rows)
    assert [row.attempts for row in rows] == [1, 1]


async def test_a_sqlite_node_that_died_resumes_the_rows_it_parked_when_it_starts(
    down: tuple[Federation, ManualClock, DeliveryWorker],
) -> None:
    """One process serves a SQLite store: at its start no one knows the peer down, and the
    rows go at once. On PostgreSQL another process may still hold the outage: the rows
    wait for the park to end (or that process's probe)."""
    federation, clock, worker = down
    a_id = federation.sim(XA).node_id
    sent = await _submit(federation, 2)
    assert await worker.run_once() == 2
    parked = await _next_attempts(federation, sent)
    assert all(at > clock.now() for at in parked)

    await federation.crash(a_id)
    node = await federation.start(a_id, deliver=False)
    due = await _next_attempts(federation, sent)
    if node.context.store.store.is_sqlite:
        assert all(at <= clock.now() for at in due)
    else:
        assert due == parked


async def test_a_peers_backlog_is_parked_again_before_its_park_ends_while_the_peer_is_down(
    down: tuple[Federation, ManualClock, DeliveryWorker],
) -> None:
    """Through an outage longer than the park, each try of the peer sends one row and the
    rest never fall due: before their park would end, they are parked anew, once."""
    federation, clock, worker = down
    sent = await _submit(federation, 3)
    assert await worker.run_once() == 3
    (first_park_end,) = set(await _next_attempts(federation, sent))

    tries = 0
    while clock.now() < first_park_end + dt.timedelta(seconds=MAXIMUM):
        due = await worker.next_due()
        assert due is not None
        clock.set(from_millis(due))
        assert await worker.run_once() == 1, "only the probe"
        tries += 1
    rows = [await _row(federation, m) for m in sent]
    assert sum(row.attempts for row in rows) == 3 + tries
    waiting = [row for row in rows if row.next_attempt_at.ToDatetime(dt.UTC) > first_park_end]
    assert waiting, "parked anew"
    assert all(row.next_attempt_at.ToDatetime(dt.UTC) > clock.now() for row in rows)
