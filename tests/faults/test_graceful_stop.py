"""SIGTERM, again and again, while a node drains its outbox: nothing is lost or repeated.

Two `exchange serve` processes; XA holds a backlog for XB. Each round stops one
of them with SIGTERM mid-drain (XA most rounds, XB some): the process must exit
on its own (status 0, not killed after its grace period), and a stopped XA must
leave no row claimed in its outbox: what its worker was sending is either
recorded or put back, never left leased for its successor to wait out. At the
end every notice is delivered exactly once (`assert_exactly_once`).
"""

from __future__ import annotations

import asyncio
import random

import pytest

from exchange.harness import samples
from tests.faults.processes import ProcessFederation, assert_exactly_once

pytestmark = pytest.mark.slow

SENDER, RECIPIENT = 0, 1
NOTICES = 120
ROUNDS = 5


async def terminate(federation: ProcessFederation, index: int) -> int | None:
    """SIGTERM node `index` and wait for it; its exit status (None if still running)."""
    process = federation.processes[federation.node_id(index)]
    await asyncio.to_thread(process.stop)
    return await asyncio.to_thread(process.wait_exit, 0)


def claimed_rows(federation: ProcessFederation) -> int:
    return federation.count(
        SENDER, "SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND lease_until > 0"
    )


async def test_repeated_sigterms_during_a_drain_lose_and_repeat_nothing(
    processes: ProcessFederation,
) -> None:
    federation = processes
    rng = random.Random(7)
    await federation.start(SENDER)
    async with federation.client(SENDER) as client:
        sent = [
            (
                await client.submit(
                    samples.case_referral(
                        [federation.node_id(RECIPIENT)], f"XA-2026-{i:04}", "Sent through stops."
                    )
                )
            ).message_id
            for i in range(NOTICES)
        ]
    await federation.start(RECIPIENT)
    for round_ in range(ROUNDS):
        await asyncio.sleep(rng.uniform(0.05, 0.4))  # mid-drain, at no chosen point
        stopped = RECIPIENT if round_ % 3 == 2 else SENDER
        status = await terminate(federation, stopped)
        assert status == 0, f"round {round_}: exit status {status}\n{federation.log_tails()}"
        if stopped == SENDER:
            assert claimed_rows(federation) == 0, f"round {round_}: rows left claimed"
        await federation.start(stopped)
    await assert_exactly_once(federation, SENDER, RECIPIENT, sent)
