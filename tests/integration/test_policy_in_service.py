"""Every named refusal of the unit suites, made by running nodes on both store engines.

tests/unit/test_notices.py and test_disclosure.py prove each rule of the catalogue
and the disclosure policy on `validate_notice`. Here each of their cases
(`refusal_cases()`) goes through real nodes over mTLS: XA's authority API must
refuse to send it, naming the same field, and XB must reject it when XA's node
delivers it, with a signed INVALID_NOTICE receipt and the same field in its log.
One test runs them all: a pytest node per case would start a federation per case.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc
import structlog
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import func, select

from exchange import notices
from exchange._proto.exchange.v1 import envelope_pb2 as epb
from exchange._proto.exchange.v1 import notices_pb2 as npb
from exchange.errors import ValidationError
from exchange.harness import samples
from exchange.node import Node
from exchange.receipt import Receipt
from exchange.rpc.client import AuthorityClient
from exchange.store.tables import NOTICES
from tests.live import Federation
from tests.peers import craft_envelope, deliver_as, referral_notice
from tests.unit import test_disclosure, test_notices
from tests.unit._mutations import RefusalCase

# Each suite's cases, with the instant its notices are set relative to.
SUITES = [test_notices, test_disclosure]
# How long the sending checks may run: a node validates a submission at its clock's now,
# anywhere in the window, while a recipient validates at the envelope's created_at (exact).
WINDOW = dt.timedelta(minutes=2)


def registered() -> Iterator[tuple[RefusalCase, dt.datetime]]:
    for suite in SUITES:
        for case in suite.refusal_cases():
            yield case, suite.NOW


def rebased(notice: npb.Notice, shift: dt.timedelta) -> npb.Notice:
    """A copy of `notice` with every timestamp moved by `shift` (whole seconds).

    Only seconds move, so a timestamp the case made invalid (nanos of -1) stays invalid.
    """
    copy = npb.Notice()
    copy.CopyFrom(notice)
    for stamp in timestamps(copy):
        stamp.seconds += shift // dt.timedelta(seconds=1)
    return copy


def timestamps(message: Message) -> Iterator[Timestamp]:
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        for item in value if field.is_repeated else [value]:
            if isinstance(item, Timestamp):
                yield item
            else:
                yield from timestamps(item)


def refused_as(case: RefusalCase, notice: npb.Notice, now: dt.datetime) -> bool:
    """Whether `validate_notice` at `now` refuses `notice` as `case` says."""
    try:
        notices.validate_notice(notice, now=now)
    except ValidationError as error:
        return error.field == case.field and case.reason in error.reason
    return False


def sendable(case: RefusalCase, unit_now: dt.datetime, at: dt.datetime) -> npb.Notice | None:
    """`case`'s notice, moved so that its refusal holds from `at` to `at + WINDOW`; None if none.

    Moved to `at`, a deadline or window that is over stays over; a deadline 1 s past the
    72-hour or 365-day limit must be moved to the window's end instead. The rules' limits
    are a day or more apart, so a refusal that holds at both ends holds within the window.
    """
    for start in (at, at + WINDOW):
        notice = rebased(case.notice, start - unit_now)
        if refused_as(case, notice, at) and refused_as(case, notice, at + WINDOW):
            return notice
    return None


def sending_expectation(case: RefusalCase) -> tuple[str, str]:
    """The field (and reason fragment) XA's authority API must name for `case`.

    Commitments and a forwarding origin are written by a node, never by an authority:
    the API refuses a notice carrying them for that (`_check_authored`), before any
    policy applies. Those cases expect notice.forwarded_from or notice.restricted_sections
    there, whatever the unit case names; the receiving check still expects the case's field.
    """
    if case.notice.HasField("forwarded_from"):
        return "notice.forwarded_from", ""
    if case.notice.restricted_sections:
        return "notice.restricted_sections", ""
    return case.field, case.reason


async def refused_to_send(
    client: AuthorityClient, recipient: str, case: RefusalCase, notice: npb.Notice
) -> str | None:
    """What was wrong with XA's answer to submitting `notice`; None if it refused as expected."""
    field, reason = sending_expectation(case)
    request = samples.case_referral([recipient], "XA-2026-1", "A case of the unit suites.")
    request.notice.CopyFrom(notice)
    try:
        await client.submit(request)
    except grpc.aio.AioRpcError as refused:
        code, details = refused.code(), refused.details() or ""
        named = details.startswith(f"{field}:") and reason in details
        if code == grpc.StatusCode.INVALID_ARGUMENT and named:
            return None
        return f"sending: {code.name} {details!r}, expected {field}: ...{reason}"
    return "sending: accepted"


async def delivered(
    sender: Node, recipient: Node, notice: npb.Notice, kind: int, at: dt.datetime, in_reply_to: str
) -> Receipt:
    """`notice` as XA's node would send it, made at `at`: the recipient validates at `at`."""
    envelope = craft_envelope(
        sender,
        [recipient.context.node_id],
        notice,
        created_at=at,
        kind=kind,
        in_reply_to=in_reply_to,
    )
    return Receipt.from_bytes((await deliver_as(sender, recipient, envelope)).receipt.body)


async def rejected_on_receipt(
    federation: Federation,
    case: RefusalCase,
    notice: npb.Notice,
    at: dt.datetime,
    originals: dict[int, str],
    logs: Sequence[Mapping[str, Any]],
) -> str | None:
    """What was wrong with XB's answer to `notice`; None if it rejected it as expected."""
    kind = notices.BODY_KINDS[case.body]
    try:
        receipt = await delivered(
            federation.node(0), federation.node(1), notice, kind, at, originals.get(kind, "")
        )
    except grpc.aio.AioRpcError as refused:
        return f"receiving: {refused.code().name} {refused.details()!r}"
    if receipt.accepted or receipt.rejection != epb.REJECTION_REASON_INVALID_NOTICE:
        return f"receiving: accepted={receipt.accepted}, rejection={receipt.rejection}"
    # The receipt says only INVALID_NOTICE; the node's log names the field it refused.
    named = [
        entry.get("field")
        for entry in logs
        if entry["event"] == "envelope.rejected" and entry.get("message_id") == receipt.message_id
    ]
    if named != [case.field]:
        return f"receiving: rejected naming {named}, expected {case.field}"
    return None


# --- notices each reply kind may answer ---------------------------------------------------------


async def referred(sender: Node, recipient: Node, notice: npb.Notice) -> str:
    """Deliver a referral raw, so that the sender's store keeps nothing it sent; its id."""
    envelope = craft_envelope(sender, [recipient.context.node_id], notice)
    receipt = Receipt.from_bytes((await deliver_as(sender, recipient, envelope)).receipt.body)
    assert receipt.accepted
    return receipt.message_id


async def reply_originals(federation: Federation) -> dict[int, str]:
    """For each reply kind, a notice held by XB that a reply from XA to XB may answer.

    A reply naming no such notice is rejected as INVALID_NOTICE too, policy or not:
    with these, only the policy is left to reject the cases.
    """
    node_a, node_b, b = federation.node(0), federation.node(1), federation.client(1)
    xa = federation.sim(0).node_id
    now = node_b.context.clock.now()
    assistance = await b.submit(samples.assistance_request(xa, "XB-2026-1", now, "Preserve."))
    seizure = await b.submit(samples.seizure_request(xa, "XB-2026-2", now, "12 Baker Street"))
    withdrawn = await referred(node_a, node_b, referral_notice())
    # With the commitment the suite's valid grant discloses, so that a valid grant is accepted.
    holding = referral_notice()
    holding.restricted_sections.append(test_disclosure.commitment("s1"))
    asked = await b.respond(
        samples.disclosure_request(
            await referred(node_a, node_b, holding), "XB-2026-3", sections=["s1"]
        )
    )
    originals: dict[int, str] = {
        epb.NOTICE_KIND_ASSISTANCE_RESPONSE: assistance.message_id,
        epb.NOTICE_KIND_SEIZURE_RESPONSE: seizure.message_id,
        epb.NOTICE_KIND_ACKNOWLEDGEMENT: assistance.message_id,
        epb.NOTICE_KIND_DISCLOSURE_REQUEST: assistance.message_id,
        epb.NOTICE_KIND_DISCLOSURE_GRANT: asked.message_id,
        epb.NOTICE_KIND_WITHDRAWAL: withdrawn,
    }
    assert set(originals) == set(notices.REPLY_RULES)
    return originals


async def valid_notices_refused(
    federation: Federation, at: dt.datetime, originals: dict[int, str]
) -> list[str]:
    """The bodies whose valid unit notice XB does not accept when sent like the cases.

    The control that makes the rejections mean something: the envelope, the time and
    the notice answered are all acceptable, so only the mutation is left.
    """
    refused = []
    for suite in SUITES:
        for body, (make, kind) in suite.VALID.items():
            notice = rebased(make(), at - suite.NOW)
            receipt = await delivered(
                federation.node(0), federation.node(1), notice, kind, at, originals.get(kind, "")
            )
            if not receipt.accepted:
                refused.append(f"{body}: rejection {receipt.rejection}")
    return refused


async def outgoing_notices(node: Node) -> int:
    return await node.context.store.read(
        lambda c: int(
            c.execute(
                select(func.count()).select_from(NOTICES).where(NOTICES.c.direction == "outgoing")
            ).scalar_one()
        )
    )


# --- the test -----------------------------------------------------------------------------------


async def test_every_named_refusal_is_refused_by_a_running_node(federation: Federation) -> None:
    a, xb = federation.client(0), federation.sim(1).node_id
    clock = federation.node(0).context.clock
    originals = await reply_originals(federation)
    cases = list(registered())
    # The instant the unit cases' NOW is moved to, in whole seconds as timestamps move.
    at = clock.now().replace(microsecond=0)
    failures: list[str] = []
    sent = received = 0
    with structlog.testing.capture_logs() as logs:
        for case, unit_now in cases:
            problems: list[str | None] = []
            to_send = sendable(case, unit_now, at)
            if to_send is None:
                problems.append(f"sending: no instant keeps its refusal through {WINDOW}")
            else:
                problems.append(await refused_to_send(a, xb, case, to_send))
                sent += 1
            notice = rebased(case.notice, at - unit_now)
            if not refused_as(case, notice, at):
                problems.append("receiving: not refused as in the unit suite once moved")
            problems.append(
                await rejected_on_receipt(federation, case, notice, at, originals, logs)
            )
            received += 1
            failures += [f"{case.case_id}: {problem}" for problem in problems if problem]
        assert clock.now() - at < WINDOW, "the sending checks outlasted WINDOW"
        refused_controls = await valid_notices_refused(federation, at, originals)

    listed = "\n".join(failures)
    assert not failures, f"{len(failures)} failures over {len(cases)} cases:\n{listed}"
    assert sent == received == len(cases)
    assert not refused_controls, refused_controls
    assert await outgoing_notices(federation.node(0)) == 0
