"""Single-bit flips of a captured envelope, delivered to a live node (issue 6, attack 3).

Envelope: XA submits a referral for XB through its authority API; once XB has
it, the envelope XA sent is taken from XA's store and delivered again by XA,
one flipped bit at a time. Every flip must be refused as unauthentic (a header
flip at or before the signature check, a payload flip as a digest mismatch, a
signature flip as a bad signature) with its status code, leave XB's tables as
they were and add one "envelope.refused" audit entry naming the reason.

Flipped receipts: tests/adversarial/test_forged_receipts.py.

CI runs a deterministic subset: one bit of every byte of the header and the
signature (the bit position rotating with the byte, so every field and every
bit position is hit) and a stride through the sealed payload. The exhaustive
run flips every bit of every part, of envelopes and of receipts:

    EXCHANGE_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\
    EXCHANGE_EXHAUSTIVE_FLIPS=1 \\
      python -m pytest tests/adversarial/test_tampering.py \\
        tests/adversarial/test_forged_receipts.py -p no:cacheprovider -s

(-s shows the counts.) The last exhaustive run, on both engines with two cores
shared with other test runs, took 3.5 minutes: 4,536 flipped envelopes per engine
(1,520 header, 2,504 payload and 512 signature bits) each refused as unauthentic
and audited, nothing stored; about 1,600 flipped receipts per engine (1,616 on
SQLite, 1,608 on PostgreSQL: the body's length varies with its timestamp), none
accepted.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Iterator

from exchange.envelope import Envelope
from exchange.errors import VerificationFailure
from exchange.harness import samples
from exchange.store.notices import load_envelope, stored_digest
from tests.adversarial._envelopes import refused_delivery, trace
from tests.conftest import DatabaseFactory
from tests.live import Federation
from tests.peers import deliver_as
from tests.unit.test_bit_flips import UNAUTHENTIC_HEADER

F = VerificationFailure
EXHAUSTIVE = os.environ.get("EXCHANGE_EXHAUSTIVE_FLIPS") == "1"
PAYLOAD_STRIDE = 53  # bits: a prime, so the bit position within a byte keeps moving

EXPECTED = {
    "header": UNAUTHENTIC_HEADER,
    "sealed_payload": frozenset({F.PAYLOAD_DIGEST_MISMATCH}),
    "signature": frozenset({F.BAD_SIGNATURE}),
}


def bits(data: bytes, *, stride: int | None = None) -> Iterator[int]:
    """The bit indexes to flip in `data`: all of them in the exhaustive run; else one
    per byte (the position rotating), or every `stride`-th bit."""
    if EXHAUSTIVE:
        yield from range(len(data) * 8)
    elif stride is not None:
        yield from range(0, len(data) * 8, stride)
    else:
        yield from (index * 8 + index % 8 for index in range(len(data)))


def flipped(data: bytes, bit: int) -> bytes:
    index, shift = divmod(bit, 8)
    return data[:index] + bytes([data[index] ^ (1 << shift)]) + data[index + 1 :]


async def _captured(federation: Federation) -> Envelope:
    """The envelope XA's submission path made and its worker delivered to XB."""
    b_id = federation.sim(1).node_id
    request = samples.case_referral([b_id], "XA-2026-0042", "A referral to be tampered with.")
    sent = await federation.client(0).submit(request)
    async for event in federation.client(1).watch(0, timeout=60):
        assert event.message_id == sent.message_id
        break
    a, b = federation.node(0), federation.node(1)
    envelope = await a.context.store.read(lambda c: load_envelope(c, sent.message_id))
    assert envelope is not None
    held = await b.context.store.read(lambda c: stored_digest(c, sent.message_id))
    assert held == envelope.digest(), "XB holds the bytes XA sent"
    return envelope


async def test_every_flipped_bit_of_a_captured_envelope_is_refused(
    federation: Federation, databases: DatabaseFactory
) -> None:
    a, b = federation.node(0), federation.node(1)
    envelope = await _captured(federation)
    held = await trace(b)
    seen: dict[str, Counter[str]] = {}
    for part, expected in EXPECTED.items():
        data: bytes = getattr(envelope, part)
        stride = PAYLOAD_STRIDE if part == "sealed_payload" else None
        counts: Counter[str] = Counter()
        for bit in bits(data, stride=stride):
            tampered = dataclasses.replace(envelope, **{part: flipped(data, bit)})
            try:
                failure = await refused_delivery(a, b, tampered, None)
            except AssertionError as exc:
                raise AssertionError(f"{part} bit {bit}: {exc}") from exc
            assert failure in expected, f"{part} bit {bit}: refused as {failure.name}"
            counts[failure.name] += 1
        seen[part] = counts
    assert await trace(b) == held
    # The genuine envelope is still what XB holds: a repeat gets the original receipt.
    assert (await deliver_as(a, b, envelope)).receipt.body
    assert await trace(b) == held
    print(f"\nenvelope flips on {databases.engine}: { {p: dict(c) for p, c in seen.items()} }")
    assert all(seen.values()), seen
