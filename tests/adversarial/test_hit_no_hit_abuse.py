"""Hit/no-hit abuse: flooding beyond the rate limits, malformed group elements (item 15).

A peer past its evaluation limit and a client past its query limit get
RESOURCE_EXHAUSTED; malformed elements and bucket requests INVALID_ARGUMENT
naming the field. Nothing is evaluated, indexed or read for a refused call,
and each refusal is audited as `call.refused` (one entry per kind and minute
with the count, so a flood cannot grow the log: exchange.refusals).
XA asks, XB holds; one federation per engine and one manual clock, which
drives the rate limits' refill.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
import pytest_asyncio

from exchange import matching
from exchange._proto.exchange.v1 import federation_pb2_grpc
from exchange._proto.exchange.v1 import matching_pb2 as mpb
from exchange.clock import ManualClock
from exchange.identifiers import IdentifierType, normalize
from exchange.refusals import DEFAULT_WINDOW
from tests.adversarial._calls import (
    audit_size,
    audited_since,
    clocked_federation,
    stored,
)
from tests.live import Federation
from tests.peers import federation_channel

__all__ = ["clocked_federation"]

pytestmark = pytest.mark.asyncio(loop_scope="module")

Clocked = tuple[Federation, ManualClock]
UNKNOWN = (mpb.IDENTIFIER_TYPE_EMAIL, "", b"nobody@example.org")


@pytest_asyncio.fixture(loop_scope="module")
async def limits(clocked_federation: Clocked) -> AsyncIterator[Clocked]:
    """Full rate-limit buckets and a new refusal window for each test; limits restored after."""
    federation, clock = clocked_federation
    clock.advance(DEFAULT_WINDOW + dt.timedelta(minutes=1))
    limiters = [federation.node(0).client_limiter, federation.node(1).peer_limiter]
    saved = [(limiter, limiter.per_minute) for limiter in limiters if limiter is not None]
    try:
        yield federation, clock
    finally:
        for limiter, per_minute in saved:
            limiter.per_minute = per_minute
            limiter._buckets.clear()


def ask(*identifiers: tuple[int, str, bytes], peers: tuple[str, ...] = ()) -> mpb.QueryRequest:
    return mpb.QueryRequest(
        identifiers=[mpb.IdentifierValue(type=t, qualifier=q, value=v) for t, q, v in identifiers],
        peer_node_ids=list(peers),
        deadline_ms=5000,
    )


def refusal(entry_details: str) -> dict[str, str]:
    return json.loads(entry_details)


async def test_a_peer_flooding_evaluations_beyond_its_rate_limit_is_refused_and_audited(
    limits: Clocked,
) -> None:
    federation, clock = limits
    xa, xb = federation.sim(0).node_id, federation.sim(1).node_id
    holder = federation.node(1)
    limiter = holder.peer_limiter
    assert limiter is not None
    limiter.per_minute = 2
    before, size = await stored(holder), await audit_size(holder)
    # Through XA's own querying path: three identifiers, two allowed a minute.
    response = await federation.client(0).query(ask(UNKNOWN, UNKNOWN, UNKNOWN, peers=(xb,)))
    assert {a.outcome for a in response.answers} == {mpb.QUERY_OUTCOME_UNAVAILABLE}
    assert "RESOURCE_EXHAUSTED" in response.answers[0].reason
    # Straight at the port, as a flooding node would.
    element = matching.blind_query(normalize(IdentifierType.EMAIL, b"a@example.org"))[1]
    async with federation_channel(federation.node(0), holder) as channel:
        stub = federation_pb2_grpc.FederationStub(channel)

        async def evaluate() -> grpc.StatusCode:
            try:
                await stub.EvaluateBlinded(
                    mpb.EvaluateBlindedRequest(blinded_elements=[element]), timeout=30
                )
            except grpc.aio.AioRpcError as refused:
                details.add(refused.details() or "")
                return refused.code()
            return grpc.StatusCode.OK

        details: set[str] = set()

        codes = [await evaluate() for _ in range(50)]
        assert codes == [grpc.StatusCode.OK] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 48
        assert all("rate limit of 2 a minute" in d for d in details)
        entries = await audited_since(holder, size)
        assert [(e.action, e.actor, e.peer_node_id) for e in entries] == [
            ("call.refused", f"node:{xa}", xa),
            ("match.evaluated", f"node:{xa}", xa),
            ("match.evaluated", f"node:{xa}", xa),
        ]
        assert refusal(entries[0].details_json) == {
            "method": "EvaluateBlinded",
            "reason": "rate limit",
            "refusals": "1",
        }
        # A minute on, the bucket has refilled; the next refusal puts those held back on record.
        clock.advance(DEFAULT_WINDOW)
        assert [await evaluate() for _ in range(3)] == [*codes[:2], codes[-1]]
    refused = await audited_since(holder, size, "call.refused")
    assert [refusal(e.details_json)["refusals"] for e in refused] == ["1", "49"]
    assert await stored(holder) == before


async def test_a_client_querying_beyond_its_rate_limit_is_resource_exhausted_and_audited(
    limits: Clocked,
) -> None:
    federation, _ = limits
    querier, holder = federation.node(0), federation.node(1)
    limiter = querier.client_limiter
    assert limiter is not None
    limiter.per_minute = 3
    sizes = await audit_size(querier), await audit_size(holder)
    for _ in range(5):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await federation.client(0).query(ask(UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "rate limit of 3 a minute" in (refused.value.details() or "")
    (entry,) = await audited_since(querier, sizes[0])
    assert (entry.action, entry.actor) == ("call.refused", "client:case-management")
    assert refusal(entry.details_json) == {
        "method": "Query",
        "reason": "rate limit",
        "refusals": "1",
    }
    # Refused before any peer was asked.
    assert await audited_since(holder, sizes[1]) == []


def evaluate(*elements: bytes) -> Callable[[federation_pb2_grpc.FederationStub], Awaitable[object]]:
    return lambda stub: stub.EvaluateBlinded(
        mpb.EvaluateBlindedRequest(blinded_elements=list(elements)), timeout=30
    )


def bucket(
    key_version: int, prefix: int, prefix_bits: int
) -> Callable[[federation_pb2_grpc.FederationStub], Awaitable[object]]:
    return lambda stub: stub.GetBucket(
        mpb.GetBucketRequest(key_version=key_version, prefix=prefix, prefix_bits=prefix_bits),
        timeout=30,
    )


VALID = matching.blind_query(normalize(IdentifierType.EMAIL, b"b@example.org"))[1]
MALFORMED = [
    ("identity", evaluate(bytes(32)), "EvaluateBlinded", "blinded_elements[0]"),
    ("not-a-point", evaluate(b"\xff" * 32), "EvaluateBlinded", "blinded_elements[0]"),
    ("short", evaluate(VALID[:31]), "EvaluateBlinded", "blinded_elements[0]"),
    ("long", evaluate(VALID + b"\x00"), "EvaluateBlinded", "blinded_elements[0]"),
    ("empty-element", evaluate(b""), "EvaluateBlinded", "blinded_elements[0]"),
    ("second-bad", evaluate(VALID, b"\x01" * 32), "EvaluateBlinded", "blinded_elements[1]"),
    ("none", evaluate(), "EvaluateBlinded", "blinded_elements"),
    ("too-many", evaluate(*[VALID] * 65), "EvaluateBlinded", "blinded_elements"),
    ("prefix-too-short", bucket(1, 1, 4), "GetBucket", "prefix_bits"),
    ("prefix-too-long", bucket(1, 1, 25), "GetBucket", "prefix_bits"),
    ("prefix-beyond-its-bits", bucket(1, 2**16, 16), "GetBucket", "prefix"),
    ("unknown-key", bucket(9, 1, 16), "GetBucket", "key_version"),
]


@pytest.mark.parametrize(
    ("call", "method", "field"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
async def test_malformed_group_elements_and_buckets_from_a_peer_are_invalid_argument(
    limits: Clocked, call, method: str, field: str
) -> None:
    federation, _ = limits
    xa = federation.sim(0).node_id
    holder = federation.node(1)
    before, size = await stored(holder), await audit_size(holder)
    async with federation_channel(federation.node(0), holder) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(federation_pb2_grpc.FederationStub(channel))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith(field)
    assert await stored(holder) == before
    # Nothing was evaluated or read: the only entry is the refusal.
    (entry,) = await audited_since(holder, size)
    assert (entry.action, entry.actor) == ("call.refused", f"node:{xa}")
    assert refusal(entry.details_json) == {
        "method": method,
        "reason": "invalid request",
        "refusals": "1",
    }


class _ForgingKey:
    """A holder's OPRF key that answers every blinded element with `forged`."""

    def __init__(self, forged: bytes) -> None:
        self.forged = forged

    def blind_evaluate(self, blinded: bytes) -> bytes:
        return self.forged


@pytest.mark.parametrize(
    "forged",
    [b"\xff" * 32, bytes(32), VALID[:31]],
    ids=["not-a-point", "identity", "short"],
)
async def test_a_holder_answering_with_malformed_elements_is_unavailable_to_the_querier(
    limits: Clocked, forged: bytes
) -> None:
    """The other direction: a malicious holder's evaluations are refused, never trusted."""
    federation, _ = limits
    xb = federation.sim(1).node_id
    keys = federation.node(1).match_keys
    version = keys.active_version
    honest = keys.keys[version]
    size = await audit_size(federation.node(0))
    keys.keys[version] = _ForgingKey(forged)  # type: ignore[assignment]
    try:
        response = await federation.client(0).query(ask(UNKNOWN, UNKNOWN, peers=(xb,)))
    finally:
        keys.keys[version] = honest
    assert [(a.outcome, a.hits) for a in response.answers] == [
        (mpb.QUERY_OUTCOME_UNAVAILABLE, [])
    ] * 2
    assert "evaluated element" in response.answers[0].reason
    (entry,) = await audited_since(federation.node(0), size)
    assert entry.action == "match.queried"
    assert refusal(entry.details_json)["unavailable"] == xb
