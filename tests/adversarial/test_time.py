"""Time attacks on Federation.Deliver with an injected clock (issue 6, attack 7).

XB reads a `ManualClock`; each envelope is made on XA's real clock and the
test sets XB's clock relative to the envelope's `created_at`, so skews and
expiry are exact to the microsecond. An envelope made too far in the future
(beyond `[receive] max_clock_skew_seconds`, 300 s) is refused and nothing is
stored; up to the tolerance it is taken. An expired envelope is authentic: it
is answered with a signed rejection (DESIGN.md) that stops the sender's retries,
kept as evidence in state "rejected", never shown to the authority.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from exchange.clock import ManualClock
from exchange.envelope import Envelope, Header
from exchange.errors import VerificationFailure
from exchange.node import Node
from tests.adversarial._envelopes import (
    accepted_delivery,
    refused_delivery,
    rejected_delivery,
    trace,
)
from tests.conftest import DatabaseFactory
from tests.live import Federation, start_federation
from tests.peers import craft_envelope, referral_notice

SKEW = dt.timedelta(seconds=300)  # the default [receive] max_clock_skew_seconds
TICK = dt.timedelta(microseconds=1)


@pytest.fixture
async def clocked(
    tmp_path: Path, databases: DatabaseFactory
) -> AsyncIterator[tuple[Federation, ManualClock]]:
    clock = ManualClock(dt.datetime.now(dt.UTC))
    running = await start_federation(tmp_path, databases, clocks={"xb-prosecution": clock})
    try:
        yield running, clock
    finally:
        await running.close()


def _made(envelope: Envelope) -> Header:
    return Header.from_bytes(envelope.header)


def _envelope(a: Node, b: Node, ttl: dt.timedelta = dt.timedelta(hours=1)) -> Envelope:
    return craft_envelope(a, [b.context.node_id], referral_notice(), ttl=ttl)


async def test_clock_skew_inside_the_tolerance_is_accepted_and_outside_refused(
    clocked: tuple[Federation, ManualClock],
) -> None:
    federation, clock = clocked
    a, b = federation.node(0), federation.node(1)
    assert b.context.policy.max_clock_skew == SKEW

    # XB's clock runs behind XA's: the envelope seems made in the future.
    for behind in (SKEW + TICK, SKEW + dt.timedelta(hours=1)):
        ahead = _envelope(a, b)
        clock.set(_made(ahead).created_at - behind)
        await refused_delivery(a, b, ahead, VerificationFailure.CLOCK_SKEW)
    assert (await trace(b)).notices == 0

    for behind in (SKEW, dt.timedelta(seconds=1)):
        inside = _envelope(a, b)
        clock.set(_made(inside).created_at - behind)
        await accepted_delivery(a, b, inside)
    # XB's clock runs ahead: the envelope seems old, but is still within its lifetime.
    late = _envelope(a, b)
    clock.set(_made(late).expires_at - TICK)
    await accepted_delivery(a, b, late)
    assert (await trace(b)).inbox_events == 3


async def test_expired_message_is_answered_with_a_signed_rejection(
    clocked: tuple[Federation, ManualClock],
) -> None:
    federation, clock = clocked
    a, b = federation.node(0), federation.node(1)
    for past in (dt.timedelta(0), TICK, dt.timedelta(days=1)):
        expired = _envelope(a, b)
        clock.set(_made(expired).expires_at + past)
        await rejected_delivery(a, b, expired, VerificationFailure.EXPIRED)
    assert (await trace(b)).inbox_events == 0
