"""Receipts that prove nothing (issue 6, attacks 3 and 12), at the sender's delivery worker.

XA runs on a manual clock and its outbox moves only when a test drives its
delivery worker. The worker is answered with a receipt that is not signed by
the recipient, or that the recipient signed about something else (another
digest, another message, another recipient), or XB's genuine receipt with one
bit flipped. None of them may end the delivery, as delivered or as failed:
the row stays pending, no receipt is stored, each attempt is audited as a
failed one naming an invalid receipt, and the genuine receipt then ends it.

The receipt flips hit one bit of every byte in CI; EXCHANGE_EXHAUSTIVE_FLIPS=1
flips every bit (see tests/adversarial/test_tampering.py for the command).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from exchange._encoding import encode
from exchange._proto.exchange.v1 import envelope_pb2 as env_pb
from exchange.clock import ManualClock
from exchange.delivery import DeliveryWorker
from exchange.envelope import Envelope
from exchange.errors import VerificationFailure
from exchange.harness import samples
from exchange.node import Node
from exchange.receipt import Receipt, SignedReceipt
from exchange.store import outbox
from exchange.store.notices import load_envelope
from exchange.trust import TrustedNode
from tests.adversarial._envelopes import audit_size, audited
from tests.adversarial.test_tampering import bits, flipped
from tests.conftest import DatabaseFactory
from tests.live import Federation, start_federation
from tests.peers import craft_envelope, deliver_as, referral_notice
from tests.unit.test_bit_flips import UNAUTHENTIC_RECEIPT

F = VerificationFailure


@dataclasses.dataclass
class Answering:
    """A transport that answers each delivery to XB with the next receipt of a list,
    and deliveries to others with the receipt given for them."""

    receipts: Iterator[SignedReceipt]
    others: dict[str, SignedReceipt] = dataclasses.field(default_factory=dict)

    async def deliver(self, peer: TrustedNode, envelope: Envelope, timeout: float) -> SignedReceipt:
        if peer.node_id in self.others:
            return self.others[peer.node_id]
        return next(self.receipts)


@pytest.fixture
async def manual(
    tmp_path: Path, databases: DatabaseFactory
) -> AsyncIterator[tuple[Federation, ManualClock]]:
    """XA on a manual clock; no node delivers on its own."""
    clock = ManualClock(dt.datetime.now(dt.UTC))
    running = await start_federation(
        tmp_path, databases, clocks={"xa-police": clock}, deliver=False
    )
    try:
        yield running, clock
    finally:
        await running.close()


@dataclasses.dataclass
class Pending:
    """A notice XA submitted for `recipients`: its envelope, as stored in XA's outbox."""

    message_id: str
    envelope: Envelope


async def _submit(federation: Federation, recipients: list[int]) -> Pending:
    ids = [federation.sim(i).node_id for i in recipients]
    request = samples.case_referral(ids, "XA-2026-0043", "Awaiting a receipt.")
    request.time_to_live.seconds = 3 * 24 * 3600
    sent = await federation.client(0).submit(request)
    a = federation.node(0)
    envelope = await a.context.store.read(lambda c: load_envelope(c, sent.message_id))
    assert envelope is not None
    return Pending(sent.message_id, envelope)


async def _deliveries(node: Node, message_id: str) -> dict[str, outbox.DeliveryRecord]:
    records = await node.context.store.read(lambda c: outbox.delivery_status(c, message_id))
    return {record.recipient_node_id: record for record in records}


async def _refused_receipts(
    federation: Federation,
    clock: ManualClock,
    pending: Pending,
    receipts: list[SignedReceipt],
    others: dict[str, SignedReceipt] | None = None,
) -> list[str]:
    """Answer XA's worker with each of `receipts` in turn; none may end the delivery.

    Returns:
        The failure named in each audited attempt, in order.
    """
    a, b_id = federation.node(0), federation.sim(1).node_id
    size = await audit_size(a)
    others = others or {}
    worker = DeliveryWorker(a.context, Answering(iter(receipts), others))
    for attempt, _ in enumerate(receipts, start=1):
        # The other recipients' rows end on the first attempt, with their genuine receipts.
        assert await worker.run_once() == (1 + len(others) if attempt == 1 else 1)
        record = (await _deliveries(a, pending.message_id))[b_id]
        assert (record.state, record.attempts, record.receipt) == ("pending", attempt, None), (
            f"receipt {attempt}: {record}"
        )
        assert record.last_error.startswith("invalid receipt: "), record.last_error
        # Past the simulation's largest backoff (2 s): the row is due again.
        clock.advance(dt.timedelta(seconds=3))
    failed = await audited(a, "delivery.attempt_failed", size)
    assert [entry["peer_node_id"] for entry in failed] == [b_id] * len(receipts)
    reasons = [entry["error"].removeprefix("invalid receipt: ") for entry in failed]
    assert set(reasons) <= {failure.value for failure in UNAUTHENTIC_RECEIPT}, reasons
    delivered = await audited(a, "notice.delivered", size)
    assert [entry["peer_node_id"] for entry in delivered] == list(others)
    assert await audited(a, "delivery.failed", size) == []
    return reasons


async def _genuine_ends_it(
    federation: Federation, pending: Pending, genuine: SignedReceipt
) -> None:
    a, b_id = federation.node(0), federation.sim(1).node_id
    size = await audit_size(a)
    await DeliveryWorker(a.context, Answering(iter([genuine]))).run_once()
    record = (await _deliveries(a, pending.message_id))[b_id]
    assert (record.state, record.receipt) == ("delivered", genuine)
    assert len(await audited(a, "notice.delivered", size)) == 1


def _signed_as(
    signer: Node,
    recipient: Node,
    message: str,
    digest: bytes,
    *,
    accepted: bool = True,
    key_id_of: Node | None = None,
) -> SignedReceipt:
    """A receipt `signer` signs claiming `recipient` got `message` with `digest`.

    Args:
        key_id_of: the node whose key id the receipt names (by default the signer).
    """
    key = signer.context.identity.signing_key
    receipt = Receipt(
        message_id=message,
        envelope_digest=digest,
        recipient_node_id=recipient.context.node_id,
        recipient_key_id=(key_id_of or signer).context.identity.signing_key_id,
        received_at=signer.context.clock.now(),
        accepted=accepted,
        rejection=0 if accepted else env_pb.REJECTION_REASON_EXPIRED,
    )
    body = receipt.to_bytes()
    return SignedReceipt(body, key.sign(encode("exchange.v1.ReceiptBody", body)))


async def _another_delivery(
    federation: Federation, created_at: dt.datetime | None = None
) -> SignedReceipt:
    """XB's genuine receipt for another envelope of XA's."""
    a, b = federation.node(0), federation.node(1)
    other = craft_envelope(a, [b.context.node_id], referral_notice(), created_at=created_at)
    return SignedReceipt.from_proto((await deliver_as(a, b, other)).receipt)


async def test_forged_receipts_are_ignored_and_the_message_stays_pending(
    manual: tuple[Federation, ManualClock],
) -> None:
    federation, clock = manual
    a, b, c = federation.node(0), federation.node(1), federation.node(2)
    pending = await _submit(federation, [1, 2])
    digest = pending.envelope.digest()
    # C is a recipient too: its genuine receipt is at hand to be passed off as B's.
    from_c = SignedReceipt.from_proto((await deliver_as(a, c, pending.envelope)).receipt)
    other = hashlib.sha256(b"another envelope").digest()
    forged = {
        "signed by another node, naming its own key": (
            _signed_as(c, b, pending.message_id, digest),
            F.UNKNOWN_KEY,
        ),
        "signed by another node, naming the recipient's key": (
            _signed_as(c, b, pending.message_id, digest, key_id_of=b),
            F.BAD_SIGNATURE,
        ),
        "signed by the recipient over another digest": (
            _signed_as(b, b, pending.message_id, other),
            F.RECEIPT_MISMATCH,
        ),
        "the recipient's rejection of this message over another digest": (
            _signed_as(b, b, pending.message_id, other, accepted=False),
            F.RECEIPT_MISMATCH,
        ),
        "the recipient's genuine receipt for another message": (
            await _another_delivery(federation),
            F.RECEIPT_MISMATCH,
        ),
        "the recipient's genuine rejection of another message": (
            await _another_delivery(federation, created_at=clock.now() - dt.timedelta(hours=2)),
            F.RECEIPT_MISMATCH,
        ),
        "another recipient's genuine receipt for this message": (from_c, F.RECEIPT_MISMATCH),
    }
    receipts = [receipt for receipt, _ in forged.values()]
    reasons = await _refused_receipts(
        federation, clock, pending, receipts, others={c.context.node_id: from_c}
    )
    expected = [failure.value for _, failure in forged.values()]
    assert dict(zip(forged, reasons, strict=True)) == dict(zip(forged, expected, strict=True))
    genuine = SignedReceipt.from_proto((await deliver_as(a, b, pending.envelope)).receipt)
    await _genuine_ends_it(federation, pending, genuine)


async def test_no_flipped_bit_of_a_receipt_marks_the_message_delivered(
    manual: tuple[Federation, ManualClock], databases: DatabaseFactory
) -> None:
    federation, clock = manual
    a, b = federation.node(0), federation.node(1)
    pending = await _submit(federation, [1])
    genuine = SignedReceipt.from_proto((await deliver_as(a, b, pending.envelope)).receipt)
    flips = [
        dataclasses.replace(genuine, **{part: flipped(getattr(genuine, part), bit)})
        for part in ("body", "signature")
        for bit in bits(getattr(genuine, part))
    ]
    reasons = Counter(await _refused_receipts(federation, clock, pending, flips))
    print(f"\nreceipt flips on {databases.engine}: {len(flips)} refused, {dict(reasons)}")
    await _genuine_ends_it(federation, pending, genuine)
