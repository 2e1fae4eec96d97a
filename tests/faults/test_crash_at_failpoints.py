"""SIGKILL of a node at each failpoint of sending and receiving, then a restart.

Each case runs two `exchange serve` processes (XA sends to XB), arms one
failpoint (`exchange.failpoints`) in one of them, waits for the process to die
of it, checks what is on disk at that moment, restarts it without the failpoint,
and then checks both stores and both authorities' views: one notice, one
envelope, one receipt (the same on both sides), one audit entry and one inbox
event, and no pending outbox row (`tests.faults.processes.assert_exactly_once`).

The last case kills at random points over a bounded loop and prints its counts:
a few iterations in CI; for a long run

    EXCHANGE_CRASH_ITERATIONS=200 EXCHANGE_CRASH_SEED=7 \\
      .venv/bin/python -m pytest tests/faults/test_crash_at_failpoints.py \\
      -k random -s -p no:cacheprovider
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import os
import random
import uuid

import grpc
import pytest

from exchange import _wire
from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange._proto.exchange.v1 import notices_pb2 as npb
from exchange.harness import samples
from tests.faults.processes import (
    ProcessFederation,
    assert_exactly_once,
    delivered,
)

SENDER, RECIPIENT = 0, 1
ITERATIONS = int(os.environ.get("EXCHANGE_CRASH_ITERATIONS", "2"))
SEED = int(os.environ.get("EXCHANGE_CRASH_SEED", str(random.SystemRandom().randrange(1 << 30))))


def referral(federation: ProcessFederation, request_id: str) -> apb.SubmitNoticeRequest:
    request = samples.case_referral(
        [federation.node_id(RECIPIENT)], "XA-2026-77", "Referred before a crash."
    )
    request.client_request_id = request_id
    return request


async def submit(federation: ProcessFederation, request: apb.SubmitNoticeRequest) -> str:
    async with federation.client(SENDER) as client:
        return (await client.submit(request)).message_id


async def submit_into_a_crash(
    federation: ProcessFederation, request: apb.SubmitNoticeRequest
) -> None:
    """Submit to a sender armed to die while submitting: the authority gets no answer."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await submit(federation, request)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await federation.killed(SENDER)


def stored(federation: ProcessFederation, index: int, table: str = "notices") -> int:
    return federation.count(index, f"SELECT COUNT(*) FROM {table}")


async def test_sender_killed_before_the_submission_commits_stores_it_once_on_retry(
    processes: ProcessFederation,
) -> None:
    await asyncio.gather(
        processes.start(SENDER, failpoint="submit.before_commit"), processes.start(RECIPIENT)
    )
    request = referral(processes, "crash-before-commit")
    await submit_into_a_crash(processes, request)
    # Rolled back with the process: not a row of it, not even its audit entry.
    assert stored(processes, SENDER) == 0
    assert stored(processes, SENDER, "outbox") == 0
    assert (
        processes.count(
            SENDER, "SELECT COUNT(*) FROM audit_entries WHERE action='notice.submitted'"
        )
        == 0
    )

    await processes.start(SENDER)
    # The authority retries with the same request id, as it must after no answer.
    message_id = await submit(processes, request)
    await assert_exactly_once(processes, SENDER, RECIPIENT, [message_id])


async def test_sender_killed_after_the_submission_commits_answers_the_retry_with_it(
    processes: ProcessFederation,
) -> None:
    await asyncio.gather(
        processes.start(SENDER, failpoint="submit.after_commit"), processes.start(RECIPIENT)
    )
    request = referral(processes, "crash-after-commit")
    await submit_into_a_crash(processes, request)
    [(committed,)] = processes.rows(SENDER, "SELECT message_id FROM notices")

    await processes.start(SENDER)
    # The retry is answered with the notice committed before the crash, not a second one.
    assert await submit(processes, request) == committed
    await assert_exactly_once(processes, SENDER, RECIPIENT, [committed])


async def test_sender_killed_before_sending_delivers_once_after_restart(
    processes: ProcessFederation,
) -> None:
    await asyncio.gather(
        processes.start(SENDER, failpoint="deliver.before_send"), processes.start(RECIPIENT)
    )
    message_id = await submit(processes, referral(processes, "crash-before-send"))
    assert await processes.killed(SENDER)
    assert stored(processes, RECIPIENT) == 0
    assert processes.rows(SENDER, "SELECT state FROM outbox") == [("pending",)]

    await processes.start(SENDER)
    await assert_exactly_once(processes, SENDER, RECIPIENT, [message_id])


async def test_sender_killed_after_sending_before_the_receipt_is_stored_gets_the_original(
    processes: ProcessFederation,
) -> None:
    await asyncio.gather(
        processes.start(SENDER, failpoint="deliver.after_send"), processes.start(RECIPIENT)
    )
    message_id = await submit(processes, referral(processes, "crash-after-send"))
    assert await processes.killed(SENDER)
    # The recipient holds it; the sender holds no receipt and will send it again.
    assert stored(processes, RECIPIENT) == 1
    assert stored(processes, SENDER, "receipts") == 0
    assert processes.rows(SENDER, "SELECT state FROM outbox") == [("pending",)]

    await processes.start(SENDER)
    await assert_exactly_once(processes, SENDER, RECIPIENT, [message_id])


async def test_recipient_killed_before_its_commit_stores_the_redelivery_once(
    processes: ProcessFederation,
) -> None:
    await asyncio.gather(
        processes.start(SENDER), processes.start(RECIPIENT, failpoint="receive.before_commit")
    )
    message_id = await submit(processes, referral(processes, "recipient-before-commit"))
    assert await processes.killed(RECIPIENT)
    assert stored(processes, RECIPIENT) == 0
    assert stored(processes, RECIPIENT, "inbox_events") == 0

    await processes.start(RECIPIENT)
    await assert_exactly_once(processes, SENDER, RECIPIENT, [message_id])


async def test_recipient_killed_after_its_commit_before_replying_sends_the_original_receipt(
    processes: ProcessFederation,
) -> None:
    await asyncio.gather(
        processes.start(SENDER), processes.start(RECIPIENT, failpoint="receive.after_commit")
    )
    message_id = await submit(processes, referral(processes, "recipient-after-commit"))
    assert await processes.killed(RECIPIENT)
    assert stored(processes, RECIPIENT) == 1
    [(first_receipt,)] = processes.rows(RECIPIENT, "SELECT body FROM receipts")

    await processes.start(RECIPIENT)
    await assert_exactly_once(processes, SENDER, RECIPIENT, [message_id])
    # What the sender holds is the receipt signed before the crash, not a new one.
    assert processes.rows(SENDER, "SELECT body FROM receipts") == [(first_receipt,)]


async def test_reply_committed_before_a_crash_is_answered_on_retry_after_a_withdrawal(
    processes: ProcessFederation,
) -> None:
    """The retry of a reply that was committed gets that reply, whatever happened since.

    XB's authority acknowledges a referral; XB dies after the commit, before its
    answer. XA withdraws the referral meanwhile. The authority's retry (same
    request id) must be told the acknowledgement it already sent, not that the
    referral is withdrawn: that would say it was not sent, while it is delivered.
    """
    await asyncio.gather(
        processes.start(SENDER), processes.start(RECIPIENT, failpoint="submit.after_commit")
    )
    referral_id = await submit(processes, referral(processes, "to-be-acknowledged"))
    await delivered(processes, SENDER, [referral_id])
    acknowledge = apb.AcknowledgeRequest(
        message_id=referral_id,
        status=npb.ACKNOWLEDGEMENT_STATUS_ACCEPTED_FOR_ACTION,
        client_request_id="ack-before-crash",
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async with processes.client(RECIPIENT) as client:
            await client.acknowledge(acknowledge)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await processes.killed(RECIPIENT)
    [(acknowledgement_id,)] = processes.rows(
        RECIPIENT, "SELECT message_id FROM notices WHERE direction='outgoing'"
    )

    await processes.start(RECIPIENT)
    async with processes.client(SENDER) as client:
        withdrawal = await client.withdraw(
            apb.WithdrawRequest(
                message_id=referral_id,
                reason=npb.WITHDRAWAL_REASON_SENT_IN_ERROR,
                client_request_id="withdraw-it",
            )
        )
    await delivered(processes, SENDER, [withdrawal.message_id])
    [(confirmation_id,)] = processes.rows(
        RECIPIENT,
        "SELECT message_id FROM notices WHERE direction='outgoing' AND in_reply_to=:w",
        w=withdrawal.message_id,
    )

    async with processes.client(RECIPIENT) as client:
        retried = await client.acknowledge(acknowledge)
    assert retried.message_id == acknowledgement_id
    await delivered(processes, RECIPIENT, [confirmation_id])
    await assert_exactly_once(processes, RECIPIENT, SENDER, [acknowledgement_id])


async def test_request_committed_before_a_crash_is_answered_on_retry_after_its_deadline(
    processes: ProcessFederation,
) -> None:
    """The retry of a submission that was committed gets it, even once the request is due.

    An urgent request due in seconds is committed; XA dies before answering and
    is back only after the deadline. The retry must not be judged as a new
    request (a deadline in the past is refused): it was sent, and is delivered.
    """
    await asyncio.gather(
        processes.start(SENDER, failpoint="submit.after_commit"), processes.start(RECIPIENT)
    )
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    request = samples.assistance_request(
        processes.node_id(RECIPIENT), "XA-2026-78", deadline, "Urgent, due in seconds."
    )
    request.notice.assistance_request.urgency = npb.URGENCY_URGENT
    request.notice.assistance_request.response_deadline.CopyFrom(_wire.timestamp(deadline))
    request.client_request_id = "urgent-before-crash"
    await submit_into_a_crash(processes, request)
    [(committed,)] = processes.rows(SENDER, "SELECT message_id FROM notices")

    await processes.start(SENDER)
    # The authority's retry comes once the deadline has passed (the wait is for the clock).
    await asyncio.sleep(max(0.0, (deadline - dt.datetime.now(dt.UTC)).total_seconds()) + 0.5)
    assert await submit(processes, request) == committed
    await assert_exactly_once(processes, SENDER, RECIPIENT, [committed])


# --- random kill points ---------------------------------------------------------------------

# Which node each failpoint kills.
_SIDE = {
    "submit.before_commit": SENDER,
    "submit.after_commit": SENDER,
    "deliver.before_send": SENDER,
    "deliver.after_send": SENDER,
    "receive.before_commit": RECIPIENT,
    "receive.after_commit": RECIPIENT,
}
NOTICES_PER_ITERATION = 4
KILL_WAIT_SECONDS = 15.0


async def _submit_all(
    federation: ProcessFederation, requests: list[apb.SubmitNoticeRequest]
) -> dict[str, str]:
    """Submit each request once; request id -> message id for those answered."""
    answered: dict[str, str] = {}
    async with federation.client(SENDER) as client:
        for request in requests:
            try:
                answered[request.client_request_id] = (await client.submit(request)).message_id
            except grpc.aio.AioRpcError as exc:
                # The node died under the call; anything else is a failure of its own.
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                break
    return answered


async def test_random_kill_points_lose_and_duplicate_nothing(
    processes: ProcessFederation,
) -> None:
    rng = random.Random(SEED)
    outcomes: collections.Counter[str] = collections.Counter()
    message_ids: list[str] = []
    await asyncio.gather(processes.start(SENDER), processes.start(RECIPIENT))
    for iteration in range(ITERATIONS):
        point = rng.choice(sorted(_SIDE))
        hit = rng.randint(1, NOTICES_PER_ITERATION)
        side = _SIDE[point]
        # Both start afresh: a sender's channel that saw the recipient die waits out a
        # reconnect backoff, and the attempts it fails meanwhile go again together, so
        # the recipient would see fewer batches (and failpoint hits) than notices.
        processes.kill(SENDER)
        processes.kill(RECIPIENT)
        await asyncio.gather(
            processes.start(side, failpoint=f"{point}@{hit}"),
            processes.start(RECIPIENT if side == SENDER else SENDER),
        )
        requests = [
            referral(processes, f"random-{iteration}-{n}-{uuid.uuid4().hex[:8]}")
            for n in range(NOTICES_PER_ITERATION)
        ]
        answered = await _submit_all(processes, requests)
        # Every notice answered is sent on, so every armed point is reached in time.
        killed = await processes.killed(side, timeout=KILL_WAIT_SECONDS)
        outcomes[f"{point}@{hit}: {'killed' if killed else 'not reached'}"] += 1
        if killed:
            await processes.start(side)
        else:
            processes.kill(side)
            await processes.start(side)
        # The authority retries what got no answer, with the same request ids.
        answered |= await _submit_all(
            processes, [r for r in requests if r.client_request_id not in answered]
        )
        assert len(answered) == NOTICES_PER_ITERATION
        message_ids.extend(answered.values())
        await assert_exactly_once(processes, SENDER, RECIPIENT, list(answered.values()))
    # Nothing else was stored either: one row per notice the authority was told of.
    assert stored(processes, SENDER) == stored(processes, RECIPIENT) == len(set(message_ids))
    assert len(set(message_ids)) == ITERATIONS * NOTICES_PER_ITERATION
    kills = sum(n for outcome, n in outcomes.items() if outcome.endswith("killed"))
    engine = processes.urls[processes.node_id(SENDER)].split(":")[0]
    print(
        f"\nrandom kill points (seed {SEED}, {engine}): "
        f"{ITERATIONS} iterations, {kills} killed, {ITERATIONS - kills} not reached; "
        f"{len(message_ids)} notices each stored once on both sides, one receipt each"
    )
    for outcome, n in sorted(outcomes.items()):
        print(f"  {outcome}: {n}")
    # Every point is reached within its iteration's notices: a kill is the rule.
    assert kills == ITERATIONS, outcomes
