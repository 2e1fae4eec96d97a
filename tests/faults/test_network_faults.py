"""Network faults between two nodes: dropped, delayed and cut connections.

XA reaches XB only through a `FaultyProxy` on loopback (XB's trust-list
endpoint is the proxy; XB listens behind it), so mTLS passes through it
untouched. Whatever the proxy does, each notice ends up stored once on both
sides with one receipt, as `assert_exactly_once` checks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange.harness import samples
from exchange.harness.setup import free_port
from tests.conftest import DatabaseFactory
from tests.faults.processes import (
    DEADLINE_SECONDS,
    POLL_SECONDS,
    ProcessFederation,
    assert_exactly_once,
    delivered,
    start_processes,
)
from tests.faults.proxy import FaultyProxy, Mode

SENDER, RECIPIENT = 0, 1
# Past the attempt timeout of `FAULT_CONFIG` (3 s): the sender gives up on the call.
LATE_REPLY_SECONDS = 4.0


@pytest.fixture
async def proxied(
    tmp_path: Path, databases: DatabaseFactory
) -> AsyncIterator[tuple[ProcessFederation, FaultyProxy]]:
    """XA and XB running, XA dialling XB through the proxy (passing, to begin with)."""
    port = free_port()
    federation = start_processes(tmp_path, databases, endpoint_ports=[None, port])
    proxy = FaultyProxy(port, federation.nodes[RECIPIENT].federation_port)
    await proxy.start()
    try:
        await federation.start_all()
        yield federation, proxy
    finally:
        federation.close()
        await proxy.close()


async def submit(federation: ProcessFederation, summary: str) -> str:
    request = samples.case_referral([federation.node_id(RECIPIENT)], "XA-2026-20", summary)
    async with federation.client(SENDER) as client:
        return (await client.submit(request)).message_id


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(POLL_SECONDS)


async def failed_attempts(federation: ProcessFederation, message_id: str) -> int:
    async with federation.client(SENDER) as client:
        status = await client.delivery_status(message_id)
    [recipient] = status.recipients
    assert recipient.state == apb.DELIVERY_STATE_PENDING
    return recipient.attempts


def stored_at_recipient(federation: ProcessFederation, message_id: str) -> int:
    return federation.count(
        RECIPIENT, "SELECT COUNT(*) FROM notices WHERE message_id=:m", m=message_id
    )


async def test_dropped_connections_delay_delivery_until_the_link_returns_once(
    proxied: tuple[ProcessFederation, FaultyProxy],
) -> None:
    federation, proxy = proxied
    proxy.mode = Mode.DROP
    message_ids = [await submit(federation, f"Sent into a dropped link ({n}).") for n in range(3)]

    async def retried() -> bool:
        return await failed_attempts(federation, message_ids[0]) >= 2

    await until(retried, "the sender has retried through the dropped link")
    assert proxy.dropped >= 1
    assert all(stored_at_recipient(federation, m) == 0 for m in message_ids)

    proxy.mode = Mode.PASS
    await assert_exactly_once(federation, SENDER, RECIPIENT, message_ids)


async def test_replies_delayed_past_the_deadline_leave_one_stored_copy(
    proxied: tuple[ProcessFederation, FaultyProxy],
) -> None:
    federation, proxy = proxied
    # The connection is up (handshake done) before the replies are slowed.
    first = await submit(federation, "Sent over a healthy link.")
    await delivered(federation, SENDER, [first])
    proxy.delay = LATE_REPLY_SECONDS
    proxy.mode = Mode.DELAY
    late = await submit(federation, "Answered too late.")

    async def timed_out() -> bool:
        return await failed_attempts(federation, late) >= 1

    await until(timed_out, "the sender's attempt has timed out")
    # The recipient stored it at the first attempt; only its answer was late.
    assert stored_at_recipient(federation, late) == 1

    proxy.mode = Mode.PASS
    await assert_exactly_once(federation, SENDER, RECIPIENT, [first, late])


async def test_connection_cut_mid_reply_after_the_commit_gets_the_original_receipt(
    proxied: tuple[ProcessFederation, FaultyProxy],
) -> None:
    federation, proxy = proxied
    first = await submit(federation, "Sent over a healthy link.")
    await delivered(federation, SENDER, [first])
    proxy.mode = Mode.HOLD
    cut = await submit(federation, "Its receipt is cut off on the way back.")

    async def committed() -> bool:
        return stored_at_recipient(federation, cut) == 1

    await until(committed, "the recipient has committed the notice")
    # The receipt is on its way back when the connection goes down.
    proxy.cut()
    assert proxy.cut_connections >= 1
    proxy.mode = Mode.PASS
    await assert_exactly_once(federation, SENDER, RECIPIENT, [first, cut])
    # One attempt cut off, one answered with the receipt signed at the commit.
    assert federation.count(SENDER, "SELECT attempts FROM outbox WHERE message_id=:m", m=cut) >= 2
