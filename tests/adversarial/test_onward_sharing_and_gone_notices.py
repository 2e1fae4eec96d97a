"""Onward forwarding against the handling code; reading a withdrawn or purged notice (item 14).

Each refusal is FAILED_PRECONDITION saying why, stores nothing at the
forwarder or the would-be recipient, and is audited at the node that refused
(`forward.refused`, `notice.read_refused`). XA originates, XB receives, XC is
the third party; one federation per engine and one manual clock for the module.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import grpc
import pytest

from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange._proto.exchange.v1 import envelope_pb2 as epb
from exchange.clock import ManualClock
from exchange.node import Node
from tests.adversarial._calls import audit_size, audited_since, clocked_federation, quiet, stored
from tests.integration.test_lifecycle import (
    eventually,
    forward,
    received,
    referral,
    shared_with_consent,
    withdraw,
)
from tests.live import Federation

__all__ = ["clocked_federation"]

pytestmark = pytest.mark.asyncio(loop_scope="module")

Clocked = tuple[Federation, ManualClock]


@dataclasses.dataclass
class Before:
    """What a refused forward must leave as it was: both stores, and the refusing node's log."""

    forwarder: dict[str, int]
    recipient: dict[str, int]
    audit: int

    @staticmethod
    async def take(forwarder: Node, recipient: Node) -> Before:
        return Before(await stored(forwarder), await stored(recipient), await audit_size(forwarder))


async def refused_forward(
    federation: Federation, client: int, request: apb.ForwardRequest, why: str
) -> None:
    """`client`'s node refuses to forward with FAILED_PRECONDITION naming `why`; nothing changed."""
    forwarder = federation.node(client)
    recipient = next(
        federation.node(i)
        for i in range(3)
        if federation.sim(i).node_id == request.recipient_node_ids[0]
    )
    await quiet(federation)
    before = await Before.take(forwarder, recipient)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await federation.client(client).forward(request)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert why in (refused.value.details() or "")
    assert await stored(forwarder) == before.forwarder
    assert await stored(recipient) == before.recipient
    entries = await audited_since(forwarder, before.audit)
    assert [(e.action, e.message_id) for e in entries] == [("forward.refused", request.message_id)]
    assert why in json.loads(entries[0].details_json)["reason"]


@pytest.mark.parametrize(
    ("sharing", "why"),
    [
        (epb.ONWARD_SHARING_NONE, "forbids onward sharing"),
        (epb.ONWARD_SHARING_WITHIN_RECEIVING_AUTHORITY, "within this authority only"),
        (epb.ONWARD_SHARING_WITH_ORIGINATOR_CONSENT, "no signed consent"),
    ],
    ids=["none", "within-authority", "consent-not-yet-given"],
)
async def test_forwarding_against_the_handling_code_is_refused_and_audited(
    clocked_federation: Clocked, sharing: int, why: str
) -> None:
    federation, _ = clocked_federation
    xb, xc = federation.sim(1).node_id, federation.sim(2).node_id
    sent = await federation.client(0).submit(referral([xb], sharing))
    await received(federation.client(1), sent.message_id)
    await refused_forward(federation, 1, forward(sent.message_id, xc), why)


async def test_forwarding_beyond_the_originators_consent_is_refused(
    clocked_federation: Clocked,
) -> None:
    """Consent names XC only: not XA's own node, and the copy XC gets goes no further."""
    federation, _ = clocked_federation
    xa, xc = federation.sim(0).node_id, federation.sim(2).node_id
    sent, _ = await shared_with_consent(federation, xc)
    await refused_forward(federation, 1, forward(sent.message_id, xa), "no signed consent")
    copy = await federation.client(1).forward(forward(sent.message_id, xc))
    await received(federation.client(2), copy.message_id)
    onward = forward(copy.message_id, xa)
    await refused_forward(federation, 2, onward, "forbids onward sharing")


async def withdrawn_at_xb(federation: Federation, message_id: str) -> None:
    await federation.client(0).withdraw(withdraw(message_id))

    async def gone() -> bool:
        inbox = (await federation.client(1).list_inbox()).notices
        return any(
            n.message_id == message_id and n.state == apb.INBOX_STATE_WITHDRAWN for n in inbox
        )

    await eventually(gone)


async def test_forwarding_a_withdrawn_notice_is_refused_even_with_consent(
    clocked_federation: Clocked,
) -> None:
    federation, _ = clocked_federation
    xc = federation.sim(2).node_id
    sent, _ = await shared_with_consent(federation, xc)
    await withdrawn_at_xb(federation, sent.message_id)
    await refused_forward(federation, 1, forward(sent.message_id, xc), "is withdrawn")


async def refused_read(federation: Federation, message_id: str, why: str) -> None:
    """XB's reader is refused the notice: FAILED_PRECONDITION, audited, its state unchanged."""
    xb = federation.node(1)
    client = federation.client(1)
    state = {n.message_id: n.state for n in (await client.list_inbox()).notices}[message_id]
    await quiet(federation)
    before, size = await stored(xb), await audit_size(xb)
    for _ in range(2):  # asking again changes nothing either
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.get_notice(message_id)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert why in (refused.value.details() or "")
    assert await stored(xb) == before
    entries = await audited_since(xb, size)
    assert [(e.action, e.message_id, e.actor) for e in entries] == [
        ("notice.read_refused", message_id, "client:case-management")
    ] * 2
    after = {n.message_id: n.state for n in (await client.list_inbox()).notices}[message_id]
    assert after == state


async def test_reading_a_withdrawn_notice_is_refused_and_audited(
    clocked_federation: Clocked,
) -> None:
    federation, _ = clocked_federation
    sent = await federation.client(0).submit(referral([federation.sim(1).node_id]))
    await received(federation.client(1), sent.message_id)
    await withdrawn_at_xb(federation, sent.message_id)
    await refused_read(federation, sent.message_id, "withdrawn by its originator")


async def test_reading_or_forwarding_a_purged_notice_is_refused_and_audited(
    clocked_federation: Clocked,
) -> None:
    """Runs last in the module: it moves the shared clock a day on."""
    federation, clock = clocked_federation
    xc = federation.sim(2).node_id
    request = referral([federation.sim(1).node_id], epb.ONWARD_SHARING_WITH_ORIGINATOR_CONSENT)
    request.handling.retention_days = 1
    sent = await federation.client(0).submit(request)
    await received(federation.client(1), sent.message_id)
    clock.advance(dt.timedelta(days=1, minutes=1))
    assert await federation.node(1).purge() >= 1
    await refused_read(federation, sent.message_id, "purged")
    await refused_forward(federation, 1, forward(sent.message_id, xc), "is purged")
