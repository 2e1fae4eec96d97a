"""Unknown protocol versions and algorithms (issue 6, attack 11): no downgrade, no fallback.

Each envelope is signed by its real sender with its real key, so only the
version or suite it names is wrong. A protocol version other than the one the
node implements (a newer one, or 0: a header from before versioning) and a
seal suite it does not implement are refused before anything is opened or
stored; a payload that names another suite than its header is not opened by
any other means: it is answered with a signed rejection as unreadable.
"""

from __future__ import annotations

from exchange._proto.exchange.v1 import envelope_pb2 as env_pb
from exchange.envelope import PROTOCOL_VERSION
from exchange.errors import VerificationFailure
from exchange.seal import SUITE
from tests.adversarial._envelopes import (
    Trace,
    accepted_delivery,
    refused_delivery,
    rejected_delivery,
    resigned,
    trace,
)
from tests.live import Federation
from tests.peers import craft_envelope, referral_notice

UNKNOWN_SUITE = max(env_pb.SealSuite.values()) + 1


async def test_unknown_protocol_version_or_seal_suite_is_refused(federation: Federation) -> None:
    a, b = federation.node(0), federation.node(1)
    key = a.context.identity.signing_key
    cases = [
        ({"protocol_version": PROTOCOL_VERSION + 1}, VerificationFailure.UNSUPPORTED_PROTOCOL),
        ({"protocol_version": 0}, VerificationFailure.UNSUPPORTED_PROTOCOL),
        ({"seal_suite": UNKNOWN_SUITE}, VerificationFailure.UNSUPPORTED_SUITE),
        ({"seal_suite": env_pb.SEAL_SUITE_UNSPECIFIED}, VerificationFailure.UNSUPPORTED_SUITE),
    ]
    for changes, failure in cases:
        genuine = craft_envelope(a, [b.context.node_id], referral_notice())
        named = str(next(iter(changes.values())))
        await refused_delivery(a, b, resigned(genuine, key, **changes), failure, detail=named)
        # The same message in the version and suite the node implements is taken.
        await accepted_delivery(a, b, genuine)
    assert (await trace(b)).inbox_events == len(cases)


async def test_payload_naming_another_suite_is_not_opened(federation: Federation) -> None:
    a, b = federation.node(0), federation.node(1)
    genuine = craft_envelope(a, [b.context.node_id], referral_notice())
    payload = env_pb.SealedPayload.FromString(genuine.sealed_payload)
    assert payload.suite == SUITE
    payload.suite = UNKNOWN_SUITE  # type: ignore[assignment]
    other = resigned(
        genuine, a.context.identity.signing_key, sealed_payload=payload.SerializeToString()
    )
    await rejected_delivery(a, b, other, VerificationFailure.UNREADABLE_PAYLOAD)
    assert await trace(b) == Trace(notices=1, envelopes=1, receipts=1, inbox_events=0, outbox=0)
