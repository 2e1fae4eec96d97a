"""Two `serve` processes of one node on one PostgreSQL database.

XB runs as two processes (its own ports each; XA's channel spreads its calls
over both, `rpc.peers` round_robin over `ipv4:...,...`); XA runs as one. XB's
watchers re-read the store only every `WATCH_POLL_SECONDS` (far beyond the
cases' deadlines), so an event reaches a watcher on the other process than
the one that stored it only through PostgreSQL's LISTEN/NOTIFY
(`store.coordination`). Each case checks every notice exactly once on both
sides (`assert_exactly_once`: one notice, envelope, receipt and audit entry,
the outbox row delivered) and every inbox event seen exactly once by a watcher
on each process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange.harness import samples
from exchange.layout import NodeLayout
from tests.conftest import DatabaseFactory, _postgres_admin_url, terminate_backends
from tests.faults.processes import (
    DEADLINE_SECONDS,
    ProcessFederation,
    assert_exactly_once,
    delivered,
    start_processes,
)

A, B = 0, 1
# Far beyond every wait below: an event that arrives in time was announced by NOTIFY.
WATCH_POLL_SECONDS = 600


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory("postgresql", tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def processes(tmp_path: Path, postgres: DatabaseFactory) -> Iterator[ProcessFederation]:
    """XA (one process) and XB (two processes), set up but not started."""
    federation = start_processes(tmp_path, postgres, replicas=(0, 1))
    config = NodeLayout(federation.nodes[B].directory).config
    toml = config.read_text()
    assert "[store]\n" in toml
    config.write_text(
        toml.replace("[store]\n", f"[store]\nwatch_poll_seconds = {WATCH_POLL_SECONDS}\n")
    )
    try:
        yield federation
    finally:
        federation.close()


class Watcher:
    """WatchInbox on one process of XB, collecting (event, wall time seen)."""

    def __init__(self, federation: ProcessFederation, instance: int) -> None:
        self.instance = instance
        self.seen: list[tuple[apb.WatchInboxResponse, float]] = []
        self._client = federation.client(B, instance)
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        async for event in self._client.watch(timeout=DEADLINE_SECONDS * 2):
            self.seen.append((event, time.time()))

    def received(self) -> list[str]:
        return [
            event.message_id
            for event, _ in self.seen
            if event.type == apb.INBOX_EVENT_TYPE_NOTICE_RECEIVED
        ]

    async def wait_for(self, message_ids: set[str]) -> None:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not message_ids <= set(self.received()):
            if self._task.done():
                self._task.result()
                raise AssertionError(f"watcher on XB#{self.instance} ended early")
            if time.monotonic() > deadline:
                missing = len(message_ids - set(self.received()))
                raise AssertionError(f"watcher on XB#{self.instance}: {missing} events never came")
            await asyncio.sleep(0.05)

    def delays(self, message_ids: set[str]) -> dict[str, float]:
        """Seconds from each event's commit (its occurred_at) to this watcher seeing it."""
        return {
            event.message_id: seen_at - event.occurred_at.ToMilliseconds() / 1000
            for event, seen_at in self.seen
            if event.message_id in message_ids
        }

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._client.close()


@contextlib.asynccontextmanager
async def watchers(federation: ProcessFederation) -> AsyncIterator[list[Watcher]]:
    opened = [Watcher(federation, instance) for instance in (0, 1)]
    try:
        await asyncio.sleep(0.5)  # both streams open: they watch from sequence 0 anyway
        yield opened
    finally:
        for watcher in opened:
            await watcher.close()


def stored_by(federation: ProcessFederation) -> dict[str, int]:
    """Which of XB's processes stored each received notice, from their logs."""
    writers: dict[str, int] = {}
    for process in federation.instances(B):
        for line in process.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") == "notice.received":
                    assert entry["message_id"] not in writers, "stored by both processes"
                    writers[entry["message_id"]] = process.instance
    return writers


async def submit(
    federation: ProcessFederation, sender: int, instance: int, count: int, tag: str
) -> list[str]:
    """`count` referrals submitted at once through process `instance` of node `sender`."""
    recipient = federation.node_id(B if sender == A else A)
    async with federation.client(sender, instance) as client:
        submitted = await asyncio.gather(
            *(
                client.submit(samples.case_referral([recipient], f"{tag}-{i}", "Scale-out case."))
                for i in range(count)
            )
        )
    return [s.message_id for s in submitted]


async def submit_twice_at_once(federation: ProcessFederation, pairs: int) -> list[str]:
    """The same client_request_id to both of XB's processes at once: one notice each."""
    ids = []
    clients = [federation.client(B, 0), federation.client(B, 1)]
    try:
        for i in range(pairs):
            request = samples.case_referral([federation.node_id(A)], f"XB-TWICE-{i}", "Retried.")
            request.client_request_id = str(uuid.uuid4())
            first, second = await asyncio.gather(*(c.submit(request) for c in clients))
            assert first.message_id == second.message_id, "one request, two notices"
            ids.append(first.message_id)
    finally:
        for client in clients:
            await client.close()
    return ids


def _writers(federation: ProcessFederation, message_ids: list[str]) -> set[int]:
    """The processes of XB that stored some of `message_ids`."""
    wanted = set(message_ids)
    return {instance for m, instance in stored_by(federation).items() if m in wanted}


async def submit_to_both(federation: ProcessFederation, wave: int, waves: int) -> list[str]:
    """XA's referrals to XB in waves, each delivered before the next is submitted.

    Each wave is a new call on XA's channel, which round_robin gives to the next of
    XB's processes once both are connected. A burst drained in one or two calls
    may all land on one process, or all before the second connection is up; so
    this goes on past `waves` until both processes stored some of this call's
    notices (or the deadline).
    """
    ids: list[str] = []
    deadline = time.monotonic() + DEADLINE_SECONDS
    while len(ids) < wave * waves or len(_writers(federation, ids)) < 2:
        if time.monotonic() > deadline:
            raise AssertionError(f"one process of XB stored all {len(ids)} notices")
        sent = await submit(federation, A, 0, wave, f"XA-SCALE-{len(ids) // wave}")
        await delivered(federation, A, sent)
        ids.extend(sent)
    return ids


def check_watchers(
    federation: ProcessFederation, opened: list[Watcher], message_ids: set[str]
) -> dict[int, int]:
    """Each watcher saw each event once; returns how many each process stored."""
    writers = stored_by(federation)
    assert set(writers) == message_ids
    stored = {instance: list(writers.values()).count(instance) for instance in (0, 1)}
    for watcher in opened:
        received = watcher.received()
        assert sorted(received) == sorted(message_ids), f"XB#{watcher.instance} saw repeats"
        sequences = [event.sequence for event, _ in watcher.seen]
        assert sequences == sorted(set(sequences)), "events out of order or repeated"
        # Those the other process stored came through NOTIFY: the watcher's own
        # re-read is WATCH_POLL_SECONDS away, beyond the whole case.
        other = {m for m, instance in writers.items() if instance != watcher.instance}
        delays = sorted(watcher.delays(other).values())
        assert delays, f"XB#{watcher.instance}: the other process stored nothing"
        assert delays[-1] < WATCH_POLL_SECONDS / 10, f"XB#{watcher.instance}: {delays[-1]:.1f} s"
        print(
            f"XB#{watcher.instance} saw the other process's {len(delays)} events after "
            f"{delays[len(delays) // 2] * 1000:.0f} ms (median), {delays[-1] * 1000:.0f} ms (max)"
        )
    return stored


async def test_two_processes_of_one_node_deliver_and_watch_exactly_once(
    processes: ProcessFederation,
) -> None:
    federation = processes
    # XB first: XA's channel then finds both of its processes listening.
    await federation.start_instances(B)
    await federation.start(A)
    async with watchers(federation) as opened:
        to_b, from_b0, from_b1, twice = await asyncio.gather(
            submit_to_both(federation, wave=10, waves=6),
            submit(federation, B, 0, 15, "XB0-SCALE"),
            submit(federation, B, 1, 15, "XB1-SCALE"),
            submit_twice_at_once(federation, 5),
        )
        await assert_exactly_once(federation, A, B, to_b)
        await assert_exactly_once(federation, B, A, [*from_b0, *from_b1, *twice])
        for watcher in opened:
            await watcher.wait_for(set(to_b))
        stored = check_watchers(federation, opened, set(to_b))
    # XA's channel spread its deliveries over both processes (round_robin).
    assert stored[0], f"XB#1 stored everything: {stored}"
    assert stored[1], f"XB#0 stored everything: {stored}"
    print(f"XB#0 stored {stored[0]}, XB#1 stored {stored[1]} of {len(to_b)}")


def _sessions(url: str) -> set[int]:
    """Backend pids of the node's processes' sessions (`store.coordination`)."""
    schema = make_url(url).query["options"].removeprefix("-csearch_path=")
    engine = create_engine(_postgres_admin_url())
    try:
        with engine.begin() as connection:
            rows = connection.execute(
                text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
                {"name": f"exchange-session:{schema}"},
            )
            return {int(row.pid) for row in rows}
    finally:
        engine.dispose()


async def test_sessions_come_back_after_their_connections_are_killed(
    processes: ProcessFederation,
) -> None:
    federation = processes
    url = federation.urls[federation.node_id(B)]
    # XB first: XA's channel then finds both of its processes listening.
    await federation.start_instances(B)
    await federation.start(A)
    async with watchers(federation) as opened:
        before = _sessions(url)
        assert len(before) == 2, f"one session per process, found {len(before)}"
        first = await submit(federation, A, 0, 10, "XA-BEFORE")
        for watcher in opened:
            await watcher.wait_for(set(first))
        terminate_backends(before)
        deadline = time.monotonic() + DEADLINE_SECONDS
        while len(after := _sessions(url)) != 2 or after & before:
            assert time.monotonic() < deadline, f"sessions not back: {after} (were {before})"
            await asyncio.sleep(0.2)
        second = await submit_to_both(federation, wave=5, waves=4)
        await assert_exactly_once(federation, A, B, [*first, *second])
        for watcher in opened:
            await watcher.wait_for({*first, *second})
        check_watchers(federation, opened, {*first, *second})
