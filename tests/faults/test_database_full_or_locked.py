"""A node whose database is full or locked: UNAVAILABLE, never a receipt without a durable write.

XB's database is made unwritable under the running node: "full" by capping
SQLite's page count at the pages it has (SQLite then answers SQLITE_FULL, as
on a full disk), "locked" by another session holding the write lock (SQLite's
BEGIN IMMEDIATE; on PostgreSQL an EXCLUSIVE lock on the audit head, which
every write takes and plain reads do not). XB runs with a short lock timeout,
so a locked write gives up in half a second instead of the default ten.

While the fault lasts, XB's SubmitNotice and Deliver answer UNAVAILABLE and
say why; XA's worker keeps its row pending with no receipt; XB holds nothing of
either call. When the space or the lock returns, XB carries on: the same
envelope is delivered once, with one receipt, and XB's own notices go out.

PostgreSQL has no cheap "full" (a tablespace on a small file system would need
root and a mount); its "full" case is left to the SQLite cap, its "locked"
case runs here.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from sqlalchemy import Connection, event, func, select

from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange.clock import ManualClock
from exchange.delivery import DeliveryWorker
from exchange.envelope import Header
from exchange.harness import samples
from exchange.node import Node
from exchange.receipt import Receipt
from exchange.rpc.peers import PeerTransport
from exchange.runtime import Signal
from exchange.store.tables import (
    AUDIT_ENTRIES,
    ENVELOPES,
    INBOX_EVENTS,
    NOTICES,
    OUTBOX,
    RECEIPTS,
)
from tests.conftest import DatabaseFactory
from tests.live import Federation, start_federation
from tests.peers import craft_envelope, deliver_as, referral_notice

XA, XB = 0, 1
LOCK_TIMEOUT = "lock_timeout_seconds = 0.5"
TABLES = {
    "notices": NOTICES,
    "envelopes": ENVELOPES,
    "outbox": OUTBOX,
    "receipts": RECEIPTS,
    "inbox_events": INBOX_EVENTS,
    "audit_entries": AUDIT_ENTRIES,
}


@pytest.fixture
async def federation(tmp_path: Path, databases: DatabaseFactory) -> AsyncIterator[Federation]:
    """XA on a manual clock whose worker the test drives; XB with a 0.5 s lock timeout."""
    clock = ManualClock(dt.datetime.now(dt.UTC))
    running = await start_federation(tmp_path, databases, clocks={"xa-police": clock})
    try:
        a_id, b = running.sim(XA).node_id, running.sim(XB)
        await running.crash(a_id)
        await running.start(a_id, deliver=False)
        await running.crash(b.node_id)
        toml = b.directory / "node.toml"
        toml.write_text(toml.read_text().replace("[store]\n", f"[store]\n{LOCK_TIMEOUT}\n", 1))
        await running.start(b.node_id)
        yield running
    finally:
        await running.close()


def _clock(federation: Federation) -> ManualClock:
    clock = federation.clocks["xa-police"]
    assert isinstance(clock, ManualClock)
    return clock


async def _counts(node: Node) -> dict[str, int]:
    def read(connection: Connection) -> dict[str, int]:
        return {
            name: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for name, table in TABLES.items()
        }

    return await node.context.store.read(read)


def _referral(recipient: str, reference: str) -> apb.SubmitNoticeRequest:
    return samples.case_referral([recipient], reference, "A referral while the database fails.")


# --- the faults --------------------------------------------------------------------------------


@contextlib.contextmanager
def _full(node: Node) -> Iterator[None]:
    """XB's disk fills up: something else takes the free pages, and no page may be added.

    Every connection XB's store opens or reuses is capped at the pages the file
    has; a filler table (not the node's) takes the free pages and what it can of
    the last ones. Writes that fit in the space left in the node's own pages
    still succeed, as on a real full disk; the first that needs a page fails.
    """
    engine = node.context.store.store.engine

    def cap(dbapi_connection: Any, _record: Any = None, _proxy: Any = None) -> None:
        cursor = dbapi_connection.cursor()
        pages = cursor.execute("PRAGMA page_count").fetchone()[0]
        cursor.execute(f"PRAGMA max_page_count={pages}")
        cursor.close()

    filler = sqlite3.connect(engine.url.database or "", isolation_level=None, timeout=30)
    try:
        filler.execute("CREATE TABLE fault_filler (x BLOB)")
        cap(filler)
        for size in (3000, 1000, 300, 100, 30, 10, 1):
            with contextlib.suppress(sqlite3.OperationalError):  # database or disk is full
                while True:
                    filler.execute("INSERT INTO fault_filler VALUES (zeroblob(?))", (size,))
        assert filler.execute("PRAGMA freelist_count").fetchone()[0] == 0
        event.listen(engine, "checkout", cap)
        try:
            yield
        finally:
            event.remove(engine, "checkout", cap)
            filler.execute("DROP TABLE fault_filler")
            # Space returns: connections opened from now on have no cap.
            engine.dispose()
    finally:
        filler.close()


@contextlib.contextmanager
def _locked(node: Node) -> Iterator[None]:
    """Another session holds the write lock of XB's database until the block ends."""
    url = node.context.store.store.engine.url
    if url.get_backend_name() == "sqlite":
        holder = sqlite3.connect(url.database or "", isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            yield
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        return
    plain = url.set(drivername="postgresql")
    with psycopg.connect(plain.render_as_string(hide_password=False)) as holder:
        # Every write appends to the audit log, whose head it locks FOR UPDATE.
        holder.execute("LOCK TABLE audit_head IN EXCLUSIVE MODE")
        yield
        holder.rollback()


# --- the cases ---------------------------------------------------------------------------------


async def _refused(call: Awaitable[object], why: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert why in (refused.value.details() or ""), refused.value.details()


async def _until_refused(call: Callable[[int], Awaitable[object]], why: str) -> int:
    """Make calls until one is refused (the space runs out); returns how many were taken."""
    for taken in range(200):
        try:
            await call(taken)
        except grpc.aio.AioRpcError as refused:
            failure = refused
            break
    else:
        raise AssertionError("200 calls and the database never filled up")
    assert failure.code() == grpc.StatusCode.UNAVAILABLE
    assert why in (failure.details() or ""), failure.details()
    return taken


async def _xb_sends_again(federation: Federation, reference: str) -> None:
    """XB's writers and worker carry on: a new submission is stored and delivered."""
    sent = await federation.client(XB).submit(_referral(federation.sim(XA).node_id, reference))
    a = federation.node(XA)
    async with asyncio.timeout(60):  # hang protection only
        while True:
            arrived = a.context.inbox_changed.snapshot()
            status = await federation.client(XB).delivery_status(sent.message_id)
            if status.recipients[0].state == apb.DELIVERY_STATE_DELIVERED:
                return
            await Signal.wait(arrived, 1)


async def _held_by_xb(federation: Federation, message_ids: list[str]) -> list[str]:
    query = select(NOTICES.c.message_id).where(NOTICES.c.message_id.in_(message_ids))
    node = federation.node(XB)
    return await node.context.store.read(lambda c: sorted(c.execute(query).scalars()))


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
async def test_a_full_database_answers_unavailable_and_recovers_when_space_returns(
    federation: Federation,
) -> None:
    a, b = federation.node(XA), federation.node(XB)
    a_id, b_id = a.context.node_id, b.context.node_id
    crafted = [craft_envelope(a, [b_id], referral_notice()) for _ in range(200)]
    receipts: list[bytes] = []

    async def deliver(i: int) -> None:
        receipts.append((await deliver_as(a, b, crafted[i])).receipt.body)

    submitted: list[str] = []

    async def submit(i: int) -> None:
        submitted.append(
            (await federation.client(XB).submit(_referral(a_id, f"XB-{i}"))).message_id
        )

    with _full(b):
        delivered = await _until_refused(deliver, "database is full")
        before = await _counts(b)
        # The same write finds the same lack of space: nothing of it is stored.
        await _refused(deliver_as(a, b, crafted[delivered]), "database is full")
        assert await _counts(b) == before
        taken = await _until_refused(submit, "database is full")
        refused_counts = await _counts(b)

    # Every receipt XB gave stands for a notice it holds; the refused calls left nothing.
    ids = [Header.from_bytes(e.header).message_id for e in crafted[: delivered + 1]]
    assert await _held_by_xb(federation, ids) == sorted(ids[:delivered])
    assert [Receipt.from_bytes(r).accepted for r in receipts] == [True] * delivered
    assert len(submitted) == taken
    assert await _held_by_xb(federation, submitted) == sorted(submitted)
    assert refused_counts["notices"] == before["notices"] + taken

    # Space returns: the refused envelope is taken, once.
    answer = await deliver_as(a, b, crafted[delivered])
    assert Receipt.from_bytes(answer.receipt.body).accepted
    assert (await deliver_as(a, b, crafted[delivered])).receipt.body == answer.receipt.body
    assert await _held_by_xb(federation, ids) == sorted(ids)
    await _xb_sends_again(federation, "XB-again")
    after = await _counts(b)
    assert after["notices"] == refused_counts["notices"] + 2
    assert after["inbox_events"] == refused_counts["inbox_events"] + 1


async def test_a_held_write_lock_answers_unavailable_and_recovers_when_released(
    federation: Federation,
) -> None:
    a, b = federation.node(XA), federation.node(XB)
    a_id, b_id = a.context.node_id, b.context.node_id
    transport = PeerTransport(a.tls.channel_credentials())
    worker = DeliveryWorker(a.context, transport)
    try:
        queued = await federation.client(XA).submit(_referral(b_id, "XA-1"))
        crafted = craft_envelope(a, [b_id], referral_notice())
        before = await _counts(b)

        with _locked(b):
            await _refused(federation.client(XB).submit(_referral(a_id, "XB-1")), "locked")
            await _refused(deliver_as(a, b, crafted), "locked")
            # XA's own worker meets the same refusal: the row stays pending, no receipt.
            assert await worker.run_once() == 1
            status = await federation.client(XA).delivery_status(queued.message_id)
            (pending,) = status.recipients
            assert pending.state == apb.DELIVERY_STATE_PENDING
            assert pending.last_error.startswith("UNAVAILABLE")
            assert not pending.receipt.body
            assert await _counts(b) == before, "nothing of a refused call is stored"

        # The lock is released: the same envelope is taken, once.
        answer = await deliver_as(a, b, crafted)
        assert Receipt.from_bytes(answer.receipt.body).accepted
        assert (await deliver_as(a, b, crafted)).receipt.body == answer.receipt.body
        _clock(federation).advance(dt.timedelta(minutes=5))  # XA's retry is due
        assert await worker.run_once() == 1
        status = await federation.client(XA).delivery_status(queued.message_id)
        (delivered,) = status.recipients
        assert delivered.state == apb.DELIVERY_STATE_DELIVERED
        assert Receipt.from_bytes(delivered.receipt.body).accepted
        await _xb_sends_again(federation, "XB-2")

        after = await _counts(b)
        grown = {name: after[name] - before[name] for name in TABLES}
        # Two notices received (each with XB's own receipt), one submitted and sent (with
        # XA's receipt): nothing of the refused calls, nothing twice.
        assert (grown["notices"], grown["envelopes"], grown["inbox_events"]) == (3, 3, 2)
        assert (grown["outbox"], grown["receipts"]) == (1, 3)
    finally:
        await transport.close()
