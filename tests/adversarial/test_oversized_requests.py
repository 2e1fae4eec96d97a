"""Oversized messages and oversized fields on both ports (issue 6, item 8).

A message over the port's limit, a large request to a method that takes small
ones, and a field over its bound are refused with RESOURCE_EXHAUSTED or
INVALID_ARGUMENT naming it, and store nothing. Memory stays bounded: a large
request is parsed only for an admitted caller, and repeated fields are counted
before they are copied. XB is the target; one federation per engine.
"""

from __future__ import annotations

import json
import resource
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager

import grpc
import pytest
from google.protobuf.message import Message

from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange._proto.exchange.v1 import matching_pb2 as mpb
from exchange._proto.exchange.v1 import notices_pb2 as npb
from exchange.disclosure import MAX_HASHES
from exchange.envelope import Envelope
from exchange.harness import samples
from exchange.registering import MAX_IDENTIFIERS
from exchange.rpc._decoding import LARGE_REQUESTS, REGISTRATION_BYTES, SMALL_REQUEST_BYTES
from exchange.rpc.peers import MAX_MESSAGE_BYTES
from tests.adversarial._calls import (
    AUTHORITY,
    FEDERATION,
    admin_token,
    audit_size,
    audited_since,
    authority_channel,
    bearer,
    module_federation,
    raw_call,
    serving,
    stored,
)
from tests.live import Federation
from tests.peers import craft_envelope, deliver_as, federation_channel, referral_notice

__all__ = ["module_federation"]

pytestmark = pytest.mark.asyncio(loop_scope="module")

PAGE = resource.getpagesize()


@contextmanager
def peak_growth() -> Iterator[list[int]]:
    """The largest growth of this process's resident memory (the nodes run in it), in bytes."""

    def resident() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * PAGE

    base, peak, done = resident(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident() - base)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()


async def refused_raw(
    federation: Federation, path: str, data: bytes, token: str | None
) -> grpc.StatusCode:
    """XB's answer to `data` on `path` (the authority port with `token`, or as XA)."""
    if path.startswith(f"/{FEDERATION.full_name}/"):
        async with federation_channel(federation.node(0), federation.node(1)) as channel:
            return await raw_call(channel, path, data)
    async with authority_channel(federation, 1) as channel:
        metadata = bearer(token) if token is not None else ()
        return await raw_call(channel, path, data, metadata=metadata)


async def test_a_message_over_the_ports_limit_is_resource_exhausted(
    module_federation: Federation,
) -> None:
    federation = module_federation
    xb = federation.node(1)
    before = await stored(xb)
    token = federation.sim(1).case_worker_token
    too_big = b"\x0a" + b"\x00" * MAX_MESSAGE_BYTES
    for path in ("/exchange.v1.Authority/SubmitNotice", "/exchange.v1.Federation/Deliver"):
        code = await refused_raw(federation, path, too_big, token)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, path
    assert await stored(xb) == before
    assert await serving(xb)


@pytest.mark.parametrize(("path", "limit"), sorted(LARGE_REQUESTS.items()))
async def test_a_request_over_its_methods_limit_is_resource_exhausted_and_stores_nothing(
    module_federation: Federation, path: str, limit: int
) -> None:
    """Notices take the port's largest message; registrations keep a bound of their own."""
    federation = module_federation
    xb = federation.node(1)
    before = await stored(xb)
    code = await refused_raw(
        federation, path, b"\x0a" + b"\x00" * limit, federation.sim(1).case_worker_token
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await stored(xb) == before


SMALL = [
    m
    for m in [*FEDERATION.methods, *AUTHORITY.methods]
    if f"/{m.containing_service.full_name}/{m.name}" not in LARGE_REQUESTS
]


@pytest.mark.parametrize(
    "method", SMALL, ids=[f"{m.containing_service.name}.{m.name}" for m in SMALL]
)
async def test_a_large_request_to_a_method_that_takes_small_ones_is_refused_unparsed(
    module_federation: Federation, method
) -> None:
    """Bytes that would not even parse get RESOURCE_EXHAUSTED: they were never parsed."""
    xb = module_federation.node(1)
    name = f"large-{method.containing_service.name}-{method.name}".lower()
    token = admin_token(module_federation, 1, name)
    size = await audit_size(xb)
    path = f"/{method.containing_service.full_name}/{method.name}"
    code = await refused_raw(module_federation, path, b"\xff" * (SMALL_REQUEST_BYTES + 1), token)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    (entry,) = await audited_since(xb, size, "call.refused")
    on_federation = method.containing_service is FEDERATION
    assert entry.actor == ("node:xa-police" if on_federation else "unauthenticated")
    assert json.loads(entry.details_json) == {
        "method": method.name,
        "reason": "too large",
        "refusals": "1",
    }


# A port's largest message of empty entries in a repeated field: millions of objects if
# parsed and copied (over a gigabyte for 7.5 million identifiers before the fix).
# SubmitNoticeRequest.recipient_node_ids, RegisterIdentifiersRequest.identifiers:
EMPTY_RECIPIENTS = b"\x0a\x00" * (MAX_MESSAGE_BYTES // 2 - 8)
EMPTY_IDENTIFIERS = b"\x1a\x00" * (REGISTRATION_BYTES // 2 - 8)


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/exchange.v1.Authority/SubmitNotice", EMPTY_RECIPIENTS),
        ("/exchange.v1.Authority/RegisterIdentifiers", EMPTY_IDENTIFIERS),
    ],
    ids=["SubmitNotice", "RegisterIdentifiers"],
)
async def test_a_stranger_cannot_make_the_node_parse_a_large_request(
    module_federation: Federation, path: str, data: bytes
) -> None:
    xb = module_federation.node(1)
    before, size = await stored(xb), await audit_size(xb)
    with peak_growth() as peak:
        code = await refused_raw(module_federation, path, data, None)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    # gRPC holds the bytes received (a few copies of up to 24 MiB); nothing is parsed.
    assert peak[0] < 160 * 2**20, f"grew {peak[0] // 2**20} MiB"
    assert await stored(xb) == before
    assert [e.action for e in await audited_since(xb, size)] == ["call.refused"]


@pytest.mark.parametrize(
    ("path", "data", "code", "field"),
    [
        (
            "/exchange.v1.Authority/SubmitNotice",
            EMPTY_RECIPIENTS,
            grpc.StatusCode.INVALID_ARGUMENT,
            "recipient_node_ids",
        ),
        (
            "/exchange.v1.Authority/RegisterIdentifiers",
            EMPTY_IDENTIFIERS,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "identifiers",
        ),
    ],
    ids=["SubmitNotice", "RegisterIdentifiers"],
)
async def test_millions_of_empty_entries_are_counted_not_copied(
    module_federation: Federation, path: str, data: bytes, code: grpc.StatusCode, field: str
) -> None:
    """An admitted submitter's request is parsed, then refused by its count before any copy."""
    federation = module_federation
    xb = federation.node(1)
    before = await stored(xb)
    async with authority_channel(federation, 1) as channel:
        with peak_growth() as peak, pytest.raises(grpc.aio.AioRpcError) as refused:
            await channel.unary_unary(path)(
                data, metadata=bearer(federation.sim(1).case_worker_token), timeout=120
            )
    assert refused.value.code() == code
    assert (refused.value.details() or "").startswith(field)
    # Parsing takes a few hundred MiB for 8 to 12 million entries; copying 7.5 million took
    # over a GiB.
    assert peak[0] < 768 * 2**20, f"grew {peak[0] // 2**20} MiB"
    assert await stored(xb) == before


@pytest.mark.parametrize(
    ("data", "code", "details"),
    [
        (
            b"\x12\x00" * (MAX_MESSAGE_BYTES // 2 - 8),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "request: more than 256 envelopes in one message",
        ),
        # Millions of other fields (here `sequence` again and again): not read through.
        (
            b"\x08\x00" * (MAX_MESSAGE_BYTES // 2 - 8),
            grpc.StatusCode.INVALID_ARGUMENT,
            "request: is not a valid exchange.v1.DeliverBatchesRequest message",
        ),
    ],
    ids=["empty-envelopes", "repeated-sequence"],
)
async def test_a_batch_of_millions_of_entries_is_refused_before_it_is_parsed(
    module_federation: Federation, data: bytes, code: grpc.StatusCode, details: str
) -> None:
    """From a member: counted on the wire and refused; parsed, 24 MiB of empty envelopes
    took the node past 24 GB (the kernel killed it)."""
    federation = module_federation
    xb = federation.node(1)
    before, size = await stored(xb), await audit_size(xb)
    async with federation_channel(federation.node(0), xb) as channel:
        call = channel.stream_stream("/exchange.v1.Federation/DeliverBatches")(
            iter([data]), timeout=120
        )
        with peak_growth() as peak, pytest.raises(grpc.aio.AioRpcError) as refused:
            await _drain(call)
    assert refused.value.code() == code
    assert refused.value.details() == details
    # gRPC holds the bytes received (a few copies of up to 24 MiB); nothing is parsed.
    assert peak[0] < 160 * 2**20, f"grew {peak[0] // 2**20} MiB"
    assert await stored(xb) == before
    (entry,) = await audited_since(xb, size, "call.refused")
    reason = "too large" if code == grpc.StatusCode.RESOURCE_EXHAUSTED else "invalid request"
    assert json.loads(entry.details_json)["reason"] == reason


async def _drain(call: AsyncIterator[object]) -> None:
    async for _ in call:
        pass


def referral(federation: Federation) -> apb.SubmitNoticeRequest:
    return samples.case_referral([federation.sim(0).node_id], "XB-2026-8", "A referral.")


def _with(change: Callable[[apb.SubmitNoticeRequest], None]) -> Callable[[Federation], Message]:
    def build(federation: Federation) -> Message:
        request = referral(federation)
        change(request)
        return request

    return build


def _hash_referral(count: int) -> Callable[[Federation], Message]:
    def build(federation: Federation) -> Message:
        hashes = [n.to_bytes(32, "big") for n in range(count)]
        return samples.content_hash_referral(federation.sim(0).node_id, "XB-2026-9", hashes)

    return build


def _sections(count: int) -> Callable[[apb.SubmitNoticeRequest], None]:
    def add(request: apb.SubmitNoticeRequest) -> None:
        for _ in range(count):
            request.restricted_sections.append(
                npb.RestrictedSection(type=npb.SECTION_TYPE_VICTIM_IDENTITY, content="held back")
            )

    return add


def _identifiers(count: int, **fields: str) -> Callable[[Federation], Message]:
    def build(_: Federation) -> Message:
        return apb.RegisterIdentifiersRequest(
            case_reference=fields.get("case_reference", "XB-2026-10"),
            contact_point=fields.get("contact_point", "desk"),
            identifiers=[
                mpb.IdentifierValue(type=mpb.IDENTIFIER_TYPE_PHONE, value=b"+442079460958")
            ]
            * count,
        )

    return build


Call = Callable[[object, Message], Awaitable[object]]
# (case, the request, how XB's case worker (submitter and reader) sends it, code, field)
OVERSIZED_FIELDS: list[tuple[str, Callable[[Federation], Message], Call, str, str]] = [
    (
        "33-recipients",
        _with(lambda r: r.recipient_node_ids.extend(f"xz-{n}" for n in range(32))),
        lambda c, r: c.submit(r),
        "INVALID_ARGUMENT",
        "recipient_node_ids",
    ),
    (
        "9-restricted-sections",
        _with(_sections(9)),
        lambda c, r: c.submit(r),
        "INVALID_ARGUMENT",
        "restricted_sections",
    ),
    (
        "case-reference-of-65",
        _with(lambda r: setattr(r, "case_reference", "X" * 65)),
        lambda c, r: c.submit(r),
        "INVALID_ARGUMENT",
        "case_reference",
    ),
    (
        "idempotency-key-of-100k",
        _with(lambda r: setattr(r, "client_request_id", "k" * 100_000)),
        lambda c, r: c.submit(r),
        "INVALID_ARGUMENT",
        "client_request_id",
    ),
    (
        "summary-of-100k",
        _with(lambda r: setattr(r.notice.case_referral, "summary", "x" * 100_000)),
        lambda c, r: c.submit(r),
        "INVALID_ARGUMENT",
        "notice.case_referral.summary",
    ),
    (
        "500001-hashes",
        _hash_referral(MAX_HASHES + 1),
        lambda c, r: c.submit(r),
        "INVALID_ARGUMENT",
        "notice.content_hash_referral.hashes",
    ),
    (
        "identifiers-over-the-batch",
        _identifiers(MAX_IDENTIFIERS + 1),
        lambda c, r: c.register_identifiers(r),
        "RESOURCE_EXHAUSTED",
        "identifiers",
    ),
    (
        "contact-point-of-100k",
        _identifiers(1, contact_point="d" * 100_000),
        lambda c, r: c.register_identifiers(r),
        "INVALID_ARGUMENT",
        "contact_point",
    ),
    (
        "65-query-identifiers",
        lambda f: mpb.QueryRequest(
            identifiers=[mpb.IdentifierValue(type=mpb.IDENTIFIER_TYPE_PHONE, value=b"+4420794")]
            * 65
        ),
        lambda c, r: c.query(r),
        "INVALID_ARGUMENT",
        "identifiers",
    ),
    (
        "page-token-of-100k",
        lambda f: apb.ListInboxRequest(page_token="A" * 100_000),
        lambda c, r: c._stub.ListInbox(r, metadata=c._metadata, timeout=30),
        "INVALID_ARGUMENT",
        "page_token",
    ),
]


@pytest.mark.parametrize(
    ("build", "call", "code", "field"),
    [c[1:] for c in OVERSIZED_FIELDS],
    ids=[c[0] for c in OVERSIZED_FIELDS],
)
async def test_an_oversized_field_is_refused_naming_it_and_stores_nothing(
    module_federation: Federation, build, call: Call, code: str, field: str
) -> None:
    xb = module_federation.node(1)
    before = await stored(xb)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(module_federation.client(1), build(module_federation))
    assert refused.value.code() == getattr(grpc.StatusCode, code)
    assert (refused.value.details() or "").startswith(field)
    assert await stored(xb) == before


async def test_an_envelope_with_an_oversized_header_is_refused(
    module_federation: Federation,
) -> None:
    federation = module_federation
    xa, xb = federation.node(0), federation.node(1)
    before = await stored(xb)
    envelope = craft_envelope(xa, [xb.context.node_id], referral_notice())
    padded = Envelope(
        header=envelope.header + b"\x00" * 9000,
        sealed_payload=envelope.sealed_payload,
        signature=envelope.signature,
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await deliver_as(xa, xb, padded)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "header" in (refused.value.details() or "")
    assert await stored(xb) == before
