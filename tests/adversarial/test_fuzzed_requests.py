"""Malformed and fuzzed requests on every RPC of both ports (issue 6, item 9).

Every answer is a typed status (never INTERNAL or UNKNOWN) and the node still
answers health SERVING afterwards. Authority calls carry an admin token, so
the fuzzed requests reach every handler's checks rather than stopping at the
token; federation calls come from a member node over mTLS.

CI runs `EXCHANGE_FUZZ_EXAMPLES` (default 50) examples of each kind per RPC
and engine, derandomized; `scripts/fuzz` runs 10,000 or more with fresh seeds.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.harness import samples
from tests.adversarial._calls import (
    AUTHORITY,
    FEDERATION,
    UNTYPED,
    admin_token,
    audit_size,
    audited_since,
    authority_channel,
    bearer,
    module_federation,
    raw_call,
    serving,
)
from tests.adversarial._fuzzing import EXAMPLES, messages, raw_requests
from tests.live import Federation
from tests.peers import federation_channel

__all__ = ["module_federation"]

pytestmark = pytest.mark.asyncio(loop_scope="module")

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("EXCHANGE_FUZZ_RANDOM") != "1",
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


class Target:
    """XB's two ports, called by XA's node (federation) and an admin client (authority)."""

    def __init__(self, federation: Federation) -> None:
        self.federation = federation
        self.node = federation.node(1)
        self.federation_channel = federation_channel(federation.node(0), self.node)
        self.authority_channel = authority_channel(federation, 1)
        self.metadata = bearer(admin_token(federation, 1, "fuzzer"))
        self.audit_size = 0
        self.started = time.monotonic()

    async def call(self, method: MethodDescriptor, data: bytes) -> grpc.StatusCode:
        on_federation = method.containing_service is FEDERATION
        return await raw_call(
            self.federation_channel if on_federation else self.authority_channel,
            f"/{method.containing_service.full_name}/{method.name}",
            data,
            metadata=() if on_federation else self.metadata,
            streaming=method.server_streaming,
        )

    async def close(self) -> None:
        await self.federation_channel.close()
        await self.authority_channel.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def target(module_federation: Federation) -> AsyncIterator[Target]:
    fuzzed = Target(module_federation)
    fuzzed.audit_size = await audit_size(fuzzed.node)
    # Rate limits would soon answer every hit/no-hit call before its checks (item 15 tests them).
    for node in module_federation.running.values():
        for limiter in (node.peer_limiter, node.client_limiter):
            assert limiter is not None
            limiter.per_minute = 10**9
    # Something in XB's inbox and audit log, so that reads and proofs have data to work on.
    xb = module_federation.sim(1).node_id
    await module_federation.client(0).submit(samples.case_referral([xb], "XA-1", "Seed."))
    try:
        yield fuzzed
    finally:
        await fuzzed.close()


METHODS = list(FEDERATION.methods) + list(AUTHORITY.methods)
IDS = [f"{m.containing_service.name}.{m.name}" for m in METHODS]


@pytest.mark.parametrize("method", METHODS, ids=IDS)
@FUZZ
@given(data=st.data())
async def test_undecodable_request_bytes_get_a_typed_status(
    target: Target, method: MethodDescriptor, data: st.DataObject
) -> None:
    request = data.draw(raw_requests(method.input_type), label="request")
    code = await target.call(method, request)
    assert code not in UNTYPED, f"{method.full_name} answered {code.name} to {request!r}"


@pytest.mark.parametrize("method", METHODS, ids=IDS)
@FUZZ
@given(data=st.data())
async def test_hostile_field_values_get_a_typed_status(
    target: Target, method: MethodDescriptor, data: st.DataObject
) -> None:
    request = data.draw(messages(method.input_type), label="request")
    code = await target.call(method, request.SerializeToString())
    assert code not in UNTYPED, f"{method.full_name} answered {code.name} to {request}"


@pytest.mark.parametrize(
    ("method", "data"),
    [
        (FEDERATION.methods_by_name["Deliver"], b"\xff\xff\xff"),
        (AUTHORITY.methods_by_name["SubmitNotice"], b"\x12\x02\xc3\x28"),  # not UTF-8
        (AUTHORITY.methods_by_name["WatchInbox"], b"\x08" + b"\xff" * 10 + b"\x01"),
    ],
    ids=["noise", "string-not-utf8", "varint-too-long"],
)
async def test_bytes_that_are_not_the_request_message_are_invalid_argument(
    target: Target, method: MethodDescriptor, data: bytes
) -> None:
    """gRPC's own decoding failure used to reach the caller as UNKNOWN."""
    assert await target.call(method, data) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("method", ["WatchInbox", "ListAuditEntries"])
async def test_a_sequence_beyond_the_stores_integers_is_invalid_argument(
    target: Target, method: str
) -> None:
    """uint64 in the contract, signed 64-bit in the stores: used to be INTERNAL."""
    request = AUTHORITY.methods_by_name[method].input_type
    data = message_factory.GetMessageClass(request)(after_sequence=2**63).SerializeToString()
    assert await target.call(AUTHORITY.methods_by_name[method], data) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_the_fuzzed_node_still_serves(target: Target) -> None:
    """Runs last in the module: nothing fuzzed above stopped either port."""
    assert await serving(target.node)
    assert await serving(target.federation.node(0))


async def test_the_fuzzed_refusals_are_audited_without_flooding_the_log(target: Target) -> None:
    """Runs last in the module: thousands of bad requests, at most one entry per kind and minute."""
    entries = await audited_since(target.node, target.audit_size, "call.refused")
    kinds = Counter(
        (e.actor, json.loads(e.details_json)["method"], json.loads(e.details_json)["reason"])
        for e in entries
    )
    assert ("node:xa-police", "Deliver", "invalid request") in kinds
    assert ("unauthenticated", "SubmitNotice", "invalid request") in kinds
    minutes = (time.monotonic() - target.started) / 60
    assert max(kinds.values()) <= math.ceil(minutes) + 1, kinds
