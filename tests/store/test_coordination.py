"""The processes of one node on PostgreSQL: change notifications and leadership.

Notifications on one session arrive in commit order, so "a later commit's
notification arrived and no other" shows that an earlier write sent none,
without waiting for something not to happen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url

from exchange.logs import get_logger
from exchange.runtime import Signal
from exchange.store import coordination, inbox, migrate, outbox
from exchange.store.engine import Store
from tests.conftest import DatabaseFactory, _postgres_admin_url

from ._builders import Notices

pytestmark = pytest.mark.parametrize("databases", ["postgresql"], indirect=True)

WAIT_SECONDS = 20.0


class CountingSignal(Signal):
    def __init__(self) -> None:
        super().__init__()
        self.fired = 0

    def fire(self) -> None:
        self.fired += 1
        super().fire()


@pytest.fixture
def stores(databases: DatabaseFactory) -> Iterator[tuple[str, Store, Store]]:
    """The node's store URL, its store, and another node's store in the same database."""
    url = databases.new_url()
    opened = [Store.open(url), Store.open(databases.new_url())]
    for store in opened:
        migrate.upgrade(store)
    try:
        yield url, opened[0], opened[1]
    finally:
        for store in opened:
            store.dispose()


@contextlib.asynccontextmanager
async def session(
    url: str, outbox_signal: Signal | None = None, own: Store | None = None
) -> AsyncIterator[tuple[coordination.ProcessSession, CountingSignal]]:
    """A process session (of the process that writes with `own`); its inbox signal counts."""
    signal = CountingSignal()
    signals = {coordination.INBOX: signal, coordination.OUTBOX: outbox_signal or Signal()}
    running = coordination.ProcessSession(
        url, signals, get_logger("test"), own=own.sender if own else None
    )
    task = asyncio.create_task(running.run())
    try:
        await asyncio.wait_for(running.listening.wait(), WAIT_SECONDS)
        yield running, signal
    finally:
        await running.close(task)


def event(sequence: int) -> inbox.InboxEvent:
    return inbox.InboxEvent(sequence, inbox.NOTICE_RECEIVED, "", "xa-police", "", 0)


async def fired(signal: CountingSignal, snapshot: asyncio.Event) -> int:
    await asyncio.wait_for(snapshot.wait(), WAIT_SECONDS)
    return signal.fired


async def test_only_a_committed_inbox_event_of_this_node_wakes_its_watchers(
    stores: tuple[str, Store, Store],
) -> None:
    url, store, other_node = stores
    async with session(url) as (_, signal):
        assert signal.fired == 1, "a (re)connect wakes waiters once: they re-read the store"
        snapshot = signal.snapshot()

        def rolled_back(connection: Connection) -> None:
            inbox.insert_event(connection, event(1))
            raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError):
            await asyncio.to_thread(store.write, rolled_back)
        await asyncio.to_thread(other_node.write, lambda c: inbox.insert_event(c, event(1)))
        await asyncio.to_thread(store.write, lambda c: inbox.insert_event(c, event(2)))
        assert await fired(signal, snapshot) == 2, "the rolled-back or other node's event woke it"


async def test_a_process_does_not_hear_its_own_changes_again(
    stores: tuple[str, Store, Store],
) -> None:
    # Its own writes fired its signals already: hearing them again costs every watcher a read.
    url, store, _ = stores
    elsewhere = Store.open(url)  # another process of the same node
    try:
        async with session(url, own=store) as (_, signal):
            snapshot = signal.snapshot()
            await asyncio.to_thread(store.write, lambda c: inbox.insert_event(c, event(1)))
            await asyncio.to_thread(elsewhere.write, lambda c: inbox.insert_event(c, event(2)))
            # Notifications arrive in commit order: once the later one is in, the earlier
            # one would have been.
            assert await fired(signal, snapshot) == 2
            await asyncio.sleep(0.2)
            assert signal.fired == 2, "its own change woke it"
    finally:
        elsewhere.dispose()


async def test_outbox_rows_born_leased_wake_no_other_process(
    stores: tuple[str, Store, Store],
) -> None:
    # Leased at insertion to the submitting process's own worker: others would claim nothing.
    url, store, _ = stores
    notices = Notices()

    def submitted(lease_until: int) -> Callable[[Connection], object]:
        signed = notices.envelope()
        return lambda c: outbox.insert_outgoing(
            c,
            header=signed.header,
            envelope=signed.envelope,
            client_id=None,
            client_request_id=None,
            request_digest=None,
            now=1,
            lease_until=lease_until,
        )

    outbox_signal = CountingSignal()
    async with session(url, outbox_signal) as (_, inbox_signal):
        assert outbox_signal.fired == 1, "a (re)connect wakes waiters once"
        await asyncio.to_thread(store.write, submitted(lease_until=60_000))
        # Notifications arrive in commit order: once a later one is in, an earlier one
        # would have been.
        marker = inbox_signal.snapshot()
        await asyncio.to_thread(store.write, lambda c: inbox.insert_event(c, event(1)))
        await fired(inbox_signal, marker)
        assert outbox_signal.fired == 1, "the leased rows woke it"
        snapshot = outbox_signal.snapshot()
        await asyncio.to_thread(store.write, submitted(lease_until=0))
        assert await fired(outbox_signal, snapshot) == 2


async def test_a_session_killed_by_the_server_comes_back_and_wakes_its_waiters(
    stores: tuple[str, Store, Store],
) -> None:
    url, store, _ = stores
    schema = make_url(url).query["options"].removeprefix("-csearch_path=")
    async with session(url) as (running, signal):
        snapshot = signal.snapshot()
        engine = create_engine(_postgres_admin_url())
        try:
            with engine.begin() as connection:
                killed = connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = :name"
                    ),
                    {"name": f"exchange-session:{schema}"},
                ).all()
        finally:
            engine.dispose()
        assert len(killed) == 1
        assert await fired(signal, snapshot) == 2, "the reconnect wakes waiters"
        assert running.connections == 2
        snapshot = signal.snapshot()
        await asyncio.to_thread(store.write, lambda c: inbox.insert_event(c, event(1)))
        assert await fired(signal, snapshot) == 3, "listening again"


async def test_one_session_of_a_node_leads(stores: tuple[str, Store, Store]) -> None:
    url, _, _ = stores
    async with session(url) as (first, _), session(url) as (second, _):
        deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
        while not (first.is_leader or second.is_leader):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(2 * coordination.HEARTBEAT_SECONDS)  # the other has tried since
        assert [first.is_leader, second.is_leader].count(True) == 1
