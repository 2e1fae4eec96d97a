"""The Authority service as an authority system sees it: results, errors, roles."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import func, select

from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange._proto.exchange.v1 import notices_pb2 as npb
from exchange.harness import samples
from exchange.node import Node
from exchange.reading import _events_page
from exchange.rpc.client import AuthorityClient
from exchange.store import audit_log
from exchange.store.tables import NOTICES, OUTBOX
from tests.live import Federation

OTHER_ID = "01a22193-ba6a-7340-a22f-e02a78122912"


async def _count(node: Node, table: object) -> int:
    return await node.context.store.read(
        lambda c: int(c.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]
    )


async def _wait_delivered(
    client: AuthorityClient, message_id: str
) -> apb.GetDeliveryStatusResponse:
    for _ in range(200):
        status = await client.delivery_status(message_id)
        if all(r.state == apb.DELIVERY_STATE_DELIVERED for r in status.recipients):
            return status
        await __import__("asyncio").sleep(0.05)
    raise AssertionError(f"not delivered: {status}")


def _referral(*recipients: str) -> apb.SubmitNoticeRequest:
    return samples.case_referral(list(recipients), "XA-2026-0001", "A referral.")


Mutation = Callable[[apb.SubmitNoticeRequest], None]

BAD_SUBMISSIONS: list[tuple[str, Mutation, str]] = [
    ("no recipients", lambda r: r.ClearField("recipient_node_ids"), "recipient_node_ids"),
    (
        "malformed recipient",
        lambda r: r.recipient_node_ids.append("Not A Node"),
        "recipient_node_ids[1]",
    ),
    (
        "duplicate recipient",
        lambda r: r.recipient_node_ids.append(r.recipient_node_ids[0]),
        "recipient_node_ids",
    ),
    (
        "case reference with spaces",
        lambda r: setattr(r, "case_reference", "John Smith"),
        "case_reference",
    ),
    ("no handling code", lambda r: r.ClearField("handling"), "handling"),
    (
        "retention of zero days",
        lambda r: setattr(r.handling, "retention_days", 0),
        "handling.retention_days",
    ),
    ("no notice", lambda r: r.ClearField("notice"), "notice"),
    ("no body", lambda r: r.notice.ClearField("case_referral"), "notice.body"),
    (
        "no urgency",
        lambda r: r.notice.case_referral.ClearField("urgency"),
        "notice.case_referral.urgency",
    ),
    (
        "summary too long",
        lambda r: setattr(r.notice.case_referral, "summary", "x" * 501),
        "notice.case_referral.summary",
    ),
    (
        "time to live beyond any date",
        lambda r: r.time_to_live.CopyFrom(Duration(seconds=10**15)),
        "time_to_live",
    ),
    (
        "time to live of a year",
        lambda r: r.time_to_live.CopyFrom(Duration(seconds=365 * 86400)),
        "time_to_live",
    ),
    (
        "a reply kind without Respond",
        lambda r: r.notice.CopyFrom(samples.assistance_response("", "X", "s").notice),
        "notice.body",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "field"), [c[1:] for c in BAD_SUBMISSIONS], ids=[c[0] for c in BAD_SUBMISSIONS]
)
async def test_bad_submission_names_the_field_and_stores_nothing(
    federation: Federation, mutate: Mutation, field: str
) -> None:
    a = federation.node(0)
    request = _referral(federation.sim(1).node_id)
    mutate(request)
    audit_before = await a.context.store.read(audit_log.size)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await federation.client(0).submit(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith(field + ":")
    assert await _count(a, NOTICES) == 0
    assert await _count(a, OUTBOX) == 0
    assert await a.context.store.read(audit_log.size) == audit_before


async def test_unknown_recipient_is_a_failed_precondition(federation: Federation) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await federation.client(0).submit(_referral("zz-unknown"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "zz-unknown" in (refused.value.details() or "")
    assert await _count(federation.node(0), NOTICES) == 0


async def test_sending_to_oneself_is_refused(federation: Federation) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await federation.client(0).submit(_referral(federation.sim(0).node_id))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_authority_port_refuses_plaintext(federation: Federation) -> None:
    sim = federation.sim(0)
    async with AuthorityClient(
        sim.authority_address, sim.case_worker_token, ca_certificate=None
    ) as plain:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await plain.list_inbox()
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_retried_submission_is_accepted_once(federation: Federation) -> None:
    a = federation.client(0)
    request = _referral(federation.sim(1).node_id)
    request.client_request_id = "cms-42"
    first = await a.submit(request)
    second = await a.submit(request)
    assert first.message_id == second.message_id
    assert await _count(federation.node(0), NOTICES) == 1
    request.notice.case_referral.summary = "Something else."
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await a.submit(request)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize(
    ("message_id", "code"),
    [
        (OTHER_ID, grpc.StatusCode.NOT_FOUND),
        ("not-a-uuid", grpc.StatusCode.INVALID_ARGUMENT),
    ],
    ids=["unknown", "malformed"],
)
async def test_getting_a_notice_that_is_not_there(
    federation: Federation, message_id: str, code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await federation.client(1).get_notice(message_id)
    assert refused.value.code() == code


async def test_a_sent_notice_cannot_be_opened_as_received(federation: Federation) -> None:
    sent = await federation.client(0).submit(_referral(federation.sim(1).node_id))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await federation.client(0).get_notice(sent.message_id)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reading_a_notice_is_audited_and_marks_it_read(federation: Federation) -> None:
    a, b = federation.client(0), federation.client(1)
    sent = await a.submit(_referral(federation.sim(1).node_id))
    await _wait_delivered(a, sent.message_id)
    opened = await b.get_notice(sent.message_id)
    assert opened.summary.state == apb.INBOX_STATE_READ
    entries = (await federation.auditor(1).audit_entries()).entries
    reads = [e for e in entries if e.action == "notice.read"]
    assert [(e.message_id, e.actor) for e in reads] == [(sent.message_id, "client:case-management")]


async def test_inbox_pages_newest_first_without_repeats(federation: Federation) -> None:
    a, b = federation.client(0), federation.client(1)
    sent = []
    for _ in range(5):
        submitted = await a.submit(_referral(federation.sim(1).node_id))
        await _wait_delivered(a, submitted.message_id)
        sent.append(submitted.message_id)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await b.list_inbox(page_size=2, page_token=token)
        seen.extend(n.message_id for n in page.notices)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(sent))
    assert pages == 3
    for forged in ("forged", base64.urlsafe_b64encode(f"{10**23}:{sent[0]}".encode()).decode()):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await b.list_inbox(page_token=forged)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (refused.value.details() or "").startswith("page_token:")


async def test_watch_resumes_after_a_sequence(federation: Federation) -> None:
    a, b = federation.client(0), federation.client(1)
    ids = []
    for _ in range(2):
        submitted = await a.submit(_referral(federation.sim(1).node_id))
        await _wait_delivered(a, submitted.message_id)
        ids.append(submitted.message_id)
    events = []
    async for event in b.watch(0):
        events.append(event)
        if len(events) == 2:
            break
    assert [e.message_id for e in events] == ids
    async for event in b.watch(events[0].sequence):
        assert event.message_id == ids[1]
        break


async def test_a_watcher_reads_the_store_once_per_wake_up(federation: Federation) -> None:
    """A read that found fewer events than a page found all there were: the watcher waits
    for the next commit instead of reading again to find nothing."""
    a, b = federation.client(0), federation.client(1)
    store = federation.node(1).context.store
    reads = 0
    read = store.read

    async def counted(fn):
        nonlocal reads
        if getattr(fn, "func", None) is _events_page:
            reads += 1
        return await read(fn)

    store.read = counted  # type: ignore[method-assign]
    try:
        watch = b.watch(0).__aiter__()
        for _ in range(3):
            submitted = await a.submit(_referral(federation.sim(1).node_id))
            event = await asyncio.wait_for(watch.__anext__(), 30)
            assert event.message_id == submitted.message_id
        await watch.aclose()
    finally:
        del store.read
    assert reads <= 4, f"{reads} reads for 3 events"


async def test_respond_rules(federation: Federation) -> None:
    a, b = federation.client(0), federation.client(1)
    referral = await a.submit(_referral(federation.sim(1).node_id))
    await _wait_delivered(a, referral.message_id)
    response = samples.assistance_response(referral.message_id, "XB-1", "An answer.")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await b.respond(response)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ASSISTANCE_REQUEST" in (refused.value.details() or "")
    response.in_reply_to = OTHER_ID
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await b.respond(response)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    ack = await b.acknowledge(
        apb.AcknowledgeRequest(
            message_id=referral.message_id, status=npb.ACKNOWLEDGEMENT_STATUS_RECEIVED
        )
    )
    status = await _wait_delivered(b, ack.message_id)
    assert [r.recipient_node_id for r in status.recipients] == [federation.sim(0).node_id]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await b.acknowledge(apb.AcknowledgeRequest(message_id=referral.message_id))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "acknowledgement.status" in (refused.value.details() or "")
