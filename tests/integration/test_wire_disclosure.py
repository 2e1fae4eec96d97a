"""Proof of minimal disclosure on the wire (OPSC art. 8).

The whole scenario (every notice type, a disclosure round, onward sharing and a
withdrawal) runs between real nodes while every byte string that one node
delivers to another, and every receipt it gets back, is captured. None of the
values the authorities put into their notices (summaries, contact units,
tokens, hashes, the victim's identity, a street address) appears in clear in
that traffic, while the scenario's own checks show each recipient read them.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from exchange.envelope import Envelope
from exchange.errors import PeerUnreachableError
from exchange.harness.scenario import PREMISES, VICTIM, Scenario
from exchange.receipt import SignedReceipt
from exchange.rpc.peers import PeerTransport
from exchange.trust import TrustedNode
from tests.live import Federation


async def test_no_personal_or_case_value_crosses_the_wire_in_clear(
    federation: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    wire: list[bytes] = []
    deliver, deliver_many = PeerTransport.deliver, PeerTransport.deliver_many

    async def capturing(
        self: PeerTransport, peer: TrustedNode, envelope: Envelope, timeout: float
    ) -> SignedReceipt:
        # Exactly the message gRPC serializes onto the connection, and its answer.
        wire.append(envelope.to_proto().SerializeToString())
        receipt = await deliver(self, peer, envelope, timeout)
        wire.append(receipt.to_proto().SerializeToString())
        return receipt

    async def capturing_many(
        self: PeerTransport, peer: TrustedNode, envelopes: Sequence[Envelope], timeout: float
    ) -> list[SignedReceipt | PeerUnreachableError]:
        # The messages of a DeliverStream call, and the receipts it streams back.
        wire.extend(envelope.to_proto().SerializeToString() for envelope in envelopes)
        answers = await deliver_many(self, peer, envelopes, timeout)
        wire.extend(
            answer.to_proto().SerializeToString()
            for answer in answers
            if isinstance(answer, SignedReceipt)
        )
        return answers

    monkeypatch.setattr(PeerTransport, "deliver", capturing)
    monkeypatch.setattr(PeerTransport, "deliver_many", capturing_many)
    report = await Scenario(federation.nodes, federation, timeout=20).run()
    failed = [check for check in report.checks if not check.passed]
    assert not failed, failed

    traffic = b"".join(wire)
    assert len(wire) > 40  # every delivery and receipt of the scenario
    # The capture does see clear header fields (sender-scoped case references, by design).
    assert b"XA-2026-0001" in traffic
    sensitive = set(report.sensitive)
    assert VICTIM.encode() in sensitive
    assert any(PREMISES.encode() in value for value in sensitive)
    assert len(sensitive) > 50
    leaked = [value for value in sensitive if value in traffic]
    assert not leaked, f"{len(leaked)} values crossed in clear, e.g. {leaked[0]!r}"
