"""Replays on Federation.Deliver (issue 6, attacks 1 and 2), on both store engines.

A replayed envelope that was delivered before is answered with its original
receipt and changes nothing: one notice row, one envelope, one receipt, one
inbox event, one "notice.received" audit entry, before and after a restart of
the recipient, when copies race each other, after expiry and after the content
was purged. Only when the key that signed the original receipt has been revoked
since is the same statement signed anew, so that the sender can still verify it.
Other content under a delivered id is refused and audited, also when the
conflict shows only at commit. An envelope older than the maximum message age
is refused even when its id was never seen, since a node need not remember ids
that old.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from exchange.admin import federation as federation_admin
from exchange.admin import node as node_admin
from exchange.clock import ManualClock
from exchange.delivery import DeliveryWorker
from exchange.envelope import Header
from exchange.errors import VerificationFailure
from exchange.harness import samples
from exchange.layout import NodeLayout
from exchange.node import Node
from exchange.receipt import Receipt, SignedReceipt
from exchange.rpc.peers import PeerTransport
from exchange.store import inbox, lifecycle, outbox
from exchange.store.notices import find_notice, load_envelope
from tests.adversarial._envelopes import (
    Trace,
    audit_size,
    audited,
    message_id,
    refused_delivery,
    resigned,
    trace,
    verified,
)
from tests.conftest import DatabaseFactory
from tests.live import Federation, start_federation
from tests.peers import craft_envelope, deliver_as, referral_notice

# One notice held: its row, its envelope, the recipient's own receipt, one inbox event.
HELD_ONCE = Trace(notices=1, envelopes=1, receipts=1, inbox_events=1, outbox=0)


async def _received(node: Node) -> list[dict[str, str]]:
    return await audited(node, "notice.received")


async def test_replay_before_and_after_a_restart_gets_the_original_receipt(
    federation: Federation,
) -> None:
    a, b = federation.node(0), federation.node(1)
    envelope = craft_envelope(a, [b.context.node_id], referral_notice())
    first = await deliver_as(a, b, envelope)
    assert verified(SignedReceipt.from_proto(first.receipt), a, b, envelope).accepted
    assert await trace(b) == HELD_ONCE
    size = await audit_size(b)

    again = await deliver_as(a, b, envelope)
    await federation.crash(b.context.node_id)
    b = await federation.start(b.context.node_id)
    after_restart = await deliver_as(a, b, envelope)

    # Byte for byte the receipt stored with the notice: not a new one, not re-signed.
    assert first.receipt == again.receipt == after_restart.receipt
    assert await trace(b) == HELD_ONCE
    events = await b.context.store.read(lambda c: inbox.events_after(c, 0, 100))
    assert [(e.event_type, e.message_id) for e in events] == [
        (inbox.NOTICE_RECEIVED, message_id(envelope))
    ]
    assert len(await _received(b)) == 1
    # A replay is answered, not refused: nothing about it is written to the log.
    assert await audit_size(b) == size
    assert await audited(b, "envelope.refused") == []


async def test_replay_racing_the_first_delivery_is_stored_once(federation: Federation) -> None:
    """The same envelope arriving on several connections at once (a retry overtaking the
    first attempt): every answer is the one receipt, and one notice is stored."""
    a, b = federation.node(0), federation.node(1)
    envelope = craft_envelope(a, [b.context.node_id], referral_notice())
    answers = await asyncio.gather(*(deliver_as(a, b, envelope) for _ in range(6)))
    assert len({answer.receipt.SerializeToString() for answer in answers}) == 1
    assert await trace(b) == HELD_ONCE
    assert len(await _received(b)) == 1


async def test_replays_with_other_content_racing_the_first_are_refused_and_audited(
    federation: Federation,
) -> None:
    """Several contents under one message id at once: one is stored, every other one is
    refused and audited, also when the conflict is found only at commit."""
    a, b = federation.node(0), federation.node(1)
    first = craft_envelope(a, [b.context.node_id], referral_notice())
    contenders = [first]
    for i in range(5):
        other = referral_notice()
        other.case_referral.summary = f"Other content {i}."
        contenders.append(
            craft_envelope(a, [b.context.node_id], other, message_id=message_id(first))
        )
    answers = await asyncio.gather(
        *(deliver_as(a, b, envelope) for envelope in contenders), return_exceptions=True
    )
    refused = [answer for answer in answers if isinstance(answer, grpc.aio.AioRpcError)]
    assert len(refused) == len(contenders) - 1, answers
    assert {answer.code() for answer in refused} == {grpc.StatusCode.ALREADY_EXISTS}
    assert await trace(b) == HELD_ONCE
    entries = await audited(b, "envelope.refused")
    assert len(entries) == len(refused)
    assert all("already delivered with other content" in e["reason"] for e in entries)
    winner = contenders[next(i for i, answer in enumerate(answers) if answer not in refused)]
    losers = {e.digest().hex() for e in contenders if e is not winner}
    assert {entry["envelope_digest"] for entry in entries} == losers


async def test_replay_after_the_envelope_expired_still_gets_the_original_receipt(
    tmp_path: Path, databases: DatabaseFactory
) -> None:
    """The first receipt was lost; the sender's retry arrives after the envelope expired."""
    clock = ManualClock(dt.datetime.now(dt.UTC))
    federation = await start_federation(tmp_path, databases, clocks={"xb-prosecution": clock})
    try:
        a, b = federation.node(0), federation.node(1)
        envelope = craft_envelope(a, [b.context.node_id], referral_notice())
        first = await deliver_as(a, b, envelope)
        clock.advance(dt.timedelta(hours=2))  # past the envelope's one-hour expiry
        again = await deliver_as(a, b, envelope)
        assert again.receipt == first.receipt
        assert verified(SignedReceipt.from_proto(again.receipt), a, b, envelope).accepted
        assert await trace(b) == HELD_ONCE
    finally:
        await federation.close()


async def test_replay_after_the_content_was_purged_gets_the_original_receipt(
    tmp_path: Path, databases: DatabaseFactory
) -> None:
    """Retention ended and the content is gone: a replay must not bring it back."""
    clock = ManualClock(dt.datetime.now(dt.UTC))
    federation = await start_federation(tmp_path, databases, clocks={"xb-prosecution": clock})
    try:
        a, b = federation.node(0), federation.node(1)
        crafted = craft_envelope(
            a, [b.context.node_id], referral_notice(), ttl=dt.timedelta(days=3)
        )
        envelope = resigned(
            crafted,
            a.context.identity.signing_key,
            handling=dataclasses.replace(
                Header.from_bytes(crafted.header).handling, retention_days=1
            ),
        )
        first = await deliver_as(a, b, envelope)
        clock.advance(dt.timedelta(days=1, minutes=1))
        assert await b.purge() == 1
        again = await deliver_as(a, b, envelope)
        assert again.receipt == first.receipt
        assert await trace(b) == HELD_ONCE
        stored = await b.context.store.read(lambda c: load_envelope(c, message_id(envelope)))
        assert stored is not None
        assert stored.sealed_payload == b""
        record = await b.context.store.read(lambda c: find_notice(c, message_id(envelope)))
        assert record is not None
        assert record.state == lifecycle.PURGED
    finally:
        await federation.close()


async def _rotate_and_revoke(federation: Federation, root: Path, clock: ManualClock) -> str:
    """XB rotates its signing key; the stewards publish the new one and revoke the old one
    30 s on; XA and XB install that list. Returns the revoked key id."""
    fed, b_sim = root / "federation", federation.sim(1)
    b = federation.node(1)
    old_key_id = b.context.identity.signing_key_id
    node_admin.rotate_keys(b_sim.directory, signing=True, sealing=False, passphrase=None)
    clock.advance(dt.timedelta(minutes=1))
    federation_admin.add_node(fed, b_sim.directory / "enrolment.json", now=clock.now())
    revoke_at = clock.now() + dt.timedelta(seconds=30)
    federation_admin.revoke_key(fed, b_sim.node_id, old_key_id, at=revoke_at, now=clock.now())
    for steward in ("steward-1", "steward-2"):
        federation_admin.sign_draft(fed, steward, None)
    path, _ = federation_admin.publish(fed, now=clock.now())
    for index in (0, 1):
        node_admin.update_trust(federation.sim(index).directory, path, now=clock.now())
        assert await federation.node(index).refresh_trust()
    return old_key_id


async def test_replay_after_the_recipients_key_was_revoked_gets_a_receipt_that_verifies(
    tmp_path: Path, databases: DatabaseFactory
) -> None:
    """XB stored the message but its receipt never reached XA; XB's signing key is revoked
    meanwhile (a compromise). XA's retry must get an answer it can verify: the original
    receipt, signed by a revoked key, proves nothing any more."""
    clock = ManualClock(dt.datetime.now(dt.UTC))
    ids = ["xa-police", "xb-prosecution", "xc-childprotection"]
    federation = await start_federation(
        tmp_path, databases, clocks=dict.fromkeys(ids, clock), deliver=False
    )
    transport = PeerTransport(federation.node(0).tls.channel_credentials())
    try:
        a, b = federation.node(0), federation.node(1)
        request = samples.case_referral([ids[1]], "XA-2026-0044", "Receipt lost.")
        request.time_to_live.seconds = 3 * 24 * 3600
        sent = await federation.client(0).submit(request)
        envelope = await a.context.store.read(lambda c: load_envelope(c, sent.message_id))
        assert envelope is not None
        first = await deliver_as(a, b, envelope)  # arrives; the answer is lost on the way back
        revoked = await _rotate_and_revoke(federation, tmp_path, clock)
        assert Receipt.from_bytes(first.receipt.body).recipient_key_id == revoked
        clock.advance(dt.timedelta(hours=1))  # past the revocation, and the row is due

        assert await DeliveryWorker(a.context, transport).run_once() == 1
        (record,) = await a.context.store.read(lambda c: outbox.delivery_status(c, sent.message_id))
        assert (record.state, record.last_error) == ("delivered", "")
        assert record.receipt is not None
        answer = Receipt.from_bytes(record.receipt.body)
        assert answer.recipient_key_id == b.context.identity.signing_key_id != revoked
        assert answer.envelope_digest == envelope.digest()
        assert await trace(b) == HELD_ONCE
        assert len(await _received(b)) == 1
        (resigned_receipt,) = await audited(b, "receipt.resigned")
        assert resigned_receipt["previous_key_id"] == revoked
        assert resigned_receipt["envelope_digest"] == envelope.digest().hex()
    finally:
        await transport.close()
        await federation.close()


async def test_replay_of_a_delivered_id_with_other_content_is_refused(
    federation: Federation,
) -> None:
    a, b = federation.node(0), federation.node(1)
    first = craft_envelope(a, [b.context.node_id], referral_notice())
    await deliver_as(a, b, first)
    other = referral_notice()
    other.case_referral.summary = "Something else under the same id."
    second = craft_envelope(a, [b.context.node_id], other, message_id=message_id(first))
    size = await audit_size(b)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await deliver_as(a, b, second)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "already delivered with other content" in (refused.value.details() or "")
    assert await trace(b) == HELD_ONCE
    (entry,) = await audited(b, "envelope.refused", size)
    assert "already delivered with other content" in entry["reason"]
    assert entry["envelope_digest"] == second.digest().hex()


@pytest.fixture
async def two_day_memory(tmp_path: Path, databases: DatabaseFactory) -> AsyncIterator[Federation]:
    """XB accepts envelopes up to two days old (`[receive] max_message_age_days`), in a
    federation set up five days ago, so that keys were valid when the old envelope was made
    (the default 31 days outlasts a trust list's 30-day validity)."""
    now = dt.datetime.now(dt.UTC)
    federation = await start_federation(tmp_path, databases, now=now - dt.timedelta(days=5))
    b = federation.sim(1)
    await federation.crash(b.node_id)
    with NodeLayout(b.directory).config.open("a") as config:
        config.write("\n[receive]\nmax_message_age_days = 2\n")
    try:
        await federation.start(b.node_id)
        yield federation
    finally:
        await federation.close()


async def test_replay_older_than_the_maximum_message_age_is_refused(
    two_day_memory: Federation,
) -> None:
    """An id never seen, in an authentic envelope made three days ago: a node forgets ids
    after the maximum message age, so anything older must be refused, not stored."""
    a, b = two_day_memory.node(0), two_day_memory.node(1)
    assert b.context.policy.max_message_age == dt.timedelta(days=2)
    made = b.context.clock.now() - dt.timedelta(days=3)
    old = craft_envelope(a, [b.context.node_id], referral_notice(), created_at=made)
    await refused_delivery(a, b, old, VerificationFailure.TOO_OLD)
    # Not a case of expiry: an envelope made now that claims a lifetime longer than the
    # maximum age would outlive the memory of its id, and is refused the same way.
    long_lived = craft_envelope(
        a, [b.context.node_id], referral_notice(), ttl=dt.timedelta(days=2, minutes=1)
    )
    await refused_delivery(a, b, long_lived, VerificationFailure.TOO_OLD)
    assert await trace(b) == Trace(0, 0, 0, 0, 0)
    # Just inside the maximum age, the same kind of envelope is taken.
    recent = craft_envelope(
        a,
        [b.context.node_id],
        referral_notice(),
        created_at=b.context.clock.now() - dt.timedelta(days=1, hours=23),
        ttl=dt.timedelta(days=2),
    )
    signed = SignedReceipt.from_proto((await deliver_as(a, b, recent)).receipt)
    assert verified(signed, a, b, recent).accepted
    assert await trace(b) == HELD_ONCE
