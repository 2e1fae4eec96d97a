"""`Signal.wait`: a wake-up, a timeout, and a cancellation that is never lost.

Every background loop of a node sleeps in `Signal.wait`; a stop cancels them
and waits for them to end. A cancellation swallowed there leaves the loop
running and the stop hanging (Python 3.11's `asyncio.wait_for` returns the
result when the awaited future finished as the cancel arrived).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from exchange.runtime import Signal


async def test_a_fire_wakes_the_waiter() -> None:
    signal = Signal()
    waiter = asyncio.create_task(Signal.wait(signal.snapshot(), 60))
    await asyncio.sleep(0)
    signal.fire()
    await asyncio.wait_for(waiter, 5)


async def test_the_wait_ends_at_its_timeout_without_an_error() -> None:
    started = time.monotonic()
    await Signal.wait(Signal().snapshot(), 0.05)
    assert time.monotonic() - started >= 0.05


async def test_a_fire_taken_before_the_wait_is_not_missed() -> None:
    signal = Signal()
    snapshot = signal.snapshot()
    signal.fire()
    await asyncio.wait_for(Signal.wait(snapshot, 60), 5)


@pytest.mark.parametrize("fire_first", [True, False])
async def test_a_cancel_arriving_with_the_fire_still_cancels(fire_first: bool) -> None:
    signal = Signal()
    waiter = asyncio.create_task(Signal.wait(signal.snapshot(), 60))
    await asyncio.sleep(0)
    # Both in one turn of the loop: the event's waiter and the cancel wake together.
    if fire_first:
        signal.fire()
        waiter.cancel()
    else:
        waiter.cancel()
        signal.fire()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert waiter.cancelled()


async def test_a_cancel_arriving_with_the_timeout_still_cancels() -> None:
    waiter = asyncio.create_task(Signal.wait(Signal().snapshot(), 0.01))
    await asyncio.sleep(0)
    # Cancel the waiter in the very turn its timeout fires.
    loop = asyncio.get_running_loop()
    loop.call_at(loop.time() + 0.01, waiter.cancel)
    with pytest.raises(asyncio.CancelledError):
        await waiter
