"""The simulation's scenario, played as each country's authority system.

1. The first country refers a case to the second and third.
2. The second acknowledges it.
3. The third country's node is killed; the second sends it an assistance request.
4. The third restarts, receives the request, and answers with an assistance response.
5. Every further country refers a case to the first.
6. Every node's inbox holds each notice exactly once, and every audit chain verifies.

Each expectation is a `Check`; the scenario never stops at a failed check
unless later steps cannot run without it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import grpc

from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange._proto.exchange.v1 import notices_pb2 as npb
from exchange.audit import ChainedEntry, canonical_details, first_broken_link
from exchange.clock import to_millis
from exchange.harness import samples
from exchange.harness.setup import SimNode
from exchange.notices import kind_name
from exchange.rpc.client import AuthorityClient

__all__ = ["Check", "NodeControl", "Report", "Scenario", "Traffic"]

POLL_SECONDS = 0.05


class NodeControl(Protocol):
    """Crashes and restarts nodes (processes in the simulation, in-process in tests)."""

    async def crash(self, node_id: str) -> None: ...

    async def start(self, node_id: str) -> None: ...


@dataclasses.dataclass(frozen=True)
class Check:
    step: str
    expectation: str
    passed: bool
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class Traffic:
    """One notice of the scenario and what became of it."""

    step: str
    sender: str
    recipients: tuple[str, ...]
    kind: str
    message_id: str
    outcome: str


@dataclasses.dataclass
class Report:
    checks: list[Check] = dataclasses.field(default_factory=list)
    traffic: list[Traffic] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)


class ScenarioAborted(Exception):
    """A check failed that later steps depend on."""


class Scenario:
    """Plays the scenario against running nodes."""

    def __init__(
        self, nodes: list[SimNode], control: NodeControl, *, timeout: float = 30.0
    ) -> None:
        if len(nodes) < 3:
            raise ValueError("the scenario needs at least three countries")
        self.nodes = nodes
        self._control = control
        self._timeout = timeout
        self.report = Report()
        self._clients: dict[str, AuthorityClient] = {}
        self._auditors: dict[str, AuthorityClient] = {}
        self._received: dict[str, list[str]] = {node.node_id: [] for node in nodes}

    # --- plumbing ---------------------------------------------------------------------------

    def _client(self, node: SimNode) -> AuthorityClient:
        if node.node_id not in self._clients:
            self._clients[node.node_id] = AuthorityClient(
                node.authority_address,
                node.case_worker_token,
                ca_certificate=node.authority_certificate,
            )
        return self._clients[node.node_id]

    def _auditor(self, node: SimNode) -> AuthorityClient:
        if node.node_id not in self._auditors:
            self._auditors[node.node_id] = AuthorityClient(
                node.authority_address,
                node.auditor_token,
                ca_certificate=node.authority_certificate,
            )
        return self._auditors[node.node_id]

    async def close(self) -> None:
        for client in [*self._clients.values(), *self._auditors.values()]:
            await client.close()

    def check(self, step: str, expectation: str, passed: bool, detail: str = "") -> bool:
        self.report.checks.append(Check(step, expectation, passed, detail))
        return passed

    def require(self, step: str, expectation: str, passed: bool, detail: str = "") -> None:
        if not self.check(step, expectation, passed, detail):
            raise ScenarioAborted(f"{step}: {expectation}")

    async def _until(self, probe: Callable[[], Awaitable[bool]]) -> bool:
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            try:
                if await probe():
                    return True
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
            await asyncio.sleep(POLL_SECONDS)
        return False

    async def _delivery(self, sender: SimNode, message_id: str) -> apb.GetDeliveryStatusResponse:
        """The delivery status once no recipient is pending (or the timeout)."""
        status = apb.GetDeliveryStatusResponse()

        async def settled() -> bool:
            nonlocal status
            status = await self._client(sender).delivery_status(message_id)
            return all(r.state != apb.DELIVERY_STATE_PENDING for r in status.recipients)

        await self._until(settled)
        return status

    async def _received_event(self, node: SimNode, message_id: str) -> bool:
        """Whether `node`'s WatchInbox stream reports `message_id` as received."""

        async def watch() -> bool:
            async for event in self._client(node).watch(0):
                if (
                    event.type == apb.INBOX_EVENT_TYPE_NOTICE_RECEIVED
                    and event.message_id == message_id
                ):
                    return True
            return False

        try:
            return await asyncio.wait_for(watch(), self._timeout)
        except TimeoutError:
            return False

    async def _send(
        self,
        step: str,
        sender: SimNode,
        recipients: list[SimNode],
        submit: Callable[[AuthorityClient], Awaitable[apb.SubmittedNotice]],
        expected: npb.Notice | None,
    ) -> str:
        """Submit, then check delivery, receipt, inbox event and readable content."""
        submitted = await submit(self._client(sender))
        message_id = submitted.message_id
        status = await self._delivery(sender, message_id)
        delivered = [
            r.recipient_node_id
            for r in status.recipients
            if r.state == apb.DELIVERY_STATE_DELIVERED and r.receipt.body
        ]
        names = ", ".join(r.node_id for r in recipients)
        self.check(
            step,
            f"{sender.node_id} holds a signed receipt from each of {names}",
            sorted(delivered) == sorted(r.node_id for r in recipients),
            f"delivered to {delivered}",
        )
        kind = ""
        for recipient in recipients:
            self._received[recipient.node_id].append(message_id)
            self.check(
                step,
                f"{recipient.node_id}'s authority is told by WatchInbox",
                await self._received_event(recipient, message_id),
            )
            opened = await self._client(recipient).get_notice(message_id)
            kind = kind_name(opened.summary.kind)
            if expected is not None:
                self.check(
                    step,
                    f"{recipient.node_id} opens exactly what {sender.node_id} sent",
                    opened.notice == expected,
                )
        self.report.traffic.append(
            Traffic(
                step,
                sender.node_id,
                tuple(r.node_id for r in recipients),
                kind,
                message_id,
                "delivered" if len(delivered) == len(recipients) else "NOT DELIVERED",
            )
        )
        return message_id

    # --- the scenario -----------------------------------------------------------------------

    async def run(self) -> Report:
        try:
            await self._play()
        except ScenarioAborted:
            pass
        finally:
            await self.close()
        return self.report

    async def _play(self) -> None:
        first, second, third, *others = self.nodes
        now = dt.datetime.now(dt.UTC)

        step = "1 referral"
        referral = samples.case_referral(
            [second.node_id, third.node_id],
            f"{first.country}-2026-0001",
            "Material hosted in recipient territory; suspect believed present.",
        )
        referral_id = await self._send(
            step, first, [second, third], lambda c: c.submit(referral), referral.notice
        )

        step = "2 acknowledgement"
        ack = await self._client(second).acknowledge(
            apb.AcknowledgeRequest(
                message_id=referral_id, status=npb.ACKNOWLEDGEMENT_STATUS_ACCEPTED_FOR_ACTION
            )
        )
        self._received[first.node_id].append(ack.message_id)
        status = await self._delivery(second, ack.message_id)
        self.check(
            step,
            f"{first.node_id} receives the acknowledgement",
            status.recipients[0].state == apb.DELIVERY_STATE_DELIVERED,
        )
        opened = await self._client(first).get_notice(ack.message_id)
        self.check(
            step,
            "the acknowledgement answers the referral",
            opened.summary.in_reply_to == referral_id
            and opened.notice.acknowledgement.status
            == npb.ACKNOWLEDGEMENT_STATUS_ACCEPTED_FOR_ACTION,
        )
        inbox = await self._client(second).list_inbox()
        states = {n.message_id: n.state for n in inbox.notices}
        self.check(
            step,
            f"{second.node_id} marks the referral acknowledged",
            states.get(referral_id) == apb.INBOX_STATE_ACKNOWLEDGED,
        )
        self.report.traffic.append(
            Traffic(
                step,
                second.node_id,
                (first.node_id,),
                "ACKNOWLEDGEMENT",
                ack.message_id,
                "delivered",
            )
        )

        step = "3 node down"
        await self._control.crash(third.node_id)
        request = samples.assistance_request(
            third.node_id,
            f"{second.country}-2026-0107",
            now,
            "Please identify the subscriber behind the account and preserve its data.",
        )
        request_sent = await self._client(second).submit(request)

        async def retried() -> bool:
            status = await self._client(second).delivery_status(request_sent.message_id)
            return status.recipients[0].attempts >= 2

        self.check(
            step,
            f"{second.node_id} keeps the request pending and retries while {third.node_id} is down",
            await self._until(retried),
        )
        pending = await self._client(second).delivery_status(request_sent.message_id)
        self.check(
            step,
            "the request is still pending, not lost or failed",
            pending.recipients[0].state == apb.DELIVERY_STATE_PENDING,
            pending.recipients[0].last_error,
        )

        step = "4 restart"
        await self._control.start(third.node_id)
        self._received[third.node_id].append(request_sent.message_id)
        status = await self._delivery(second, request_sent.message_id)
        self.require(
            step,
            f"{third.node_id} receives the request after its restart",
            status.recipients[0].state == apb.DELIVERY_STATE_DELIVERED,
            status.recipients[0].last_error,
        )
        opened = await self._client(third).get_notice(request_sent.message_id)
        self.check(step, "the request opens intact", opened.notice == request.notice)
        self.report.traffic.append(
            Traffic(
                step,
                second.node_id,
                (third.node_id,),
                "ASSISTANCE_REQUEST",
                request_sent.message_id,
                "delivered after restart",
            )
        )

        step = "5 response"
        response = samples.assistance_response(
            request_sent.message_id,
            f"{third.country}-2026-0033",
            "Subscriber identified; data preserved.",
        )
        response_id = await self._send(
            step, third, [second], lambda c: c.respond(response), response.notice
        )
        answered = await self._client(second).get_notice(response_id)
        self.check(
            step,
            "the response answers the request",
            answered.summary.in_reply_to == request_sent.message_id,
        )

        for index, other in enumerate(others, start=6):
            referral = samples.case_referral(
                [first.node_id],
                f"{other.country}-2026-{index:04d}",
                "Suspect travelled to recipient.",
            )
            await self._send(
                f"{index} referral",
                other,
                [first],
                functools.partial(AuthorityClient.submit, request=referral),
                referral.notice,
            )

        await self._check_exactly_once()
        await self._check_audit_logs()

    async def _check_exactly_once(self) -> None:
        step = "final"
        for node in self.nodes:
            ids: list[str] = []
            token = ""
            while True:
                page = await self._client(node).list_inbox(page_size=100, page_token=token)
                ids.extend(n.message_id for n in page.notices)
                token = page.next_page_token
                if not token:
                    break
            self.check(
                step,
                f"{node.node_id} holds each notice sent to it exactly once",
                sorted(ids) == sorted(self._received[node.node_id]),
                f"{len(ids)} stored, {len(self._received[node.node_id])} expected",
            )

    async def _check_audit_logs(self) -> None:
        for node in self.nodes:
            entries: list[ChainedEntry] = []
            while True:
                after = entries[-1].sequence if entries else 0
                page = await self._auditor(node).audit_entries(after, 1000)
                entries.extend(
                    ChainedEntry(
                        sequence=e.sequence,
                        occurred_at_ms=to_millis(e.occurred_at.ToDatetime(tzinfo=dt.UTC)),
                        actor=e.actor,
                        action=e.action,
                        message_id=e.message_id,
                        peer_node_id=e.peer_node_id,
                        details_json=canonical_details(dict(e.details)),
                        previous_hash=e.previous_hash,
                        entry_hash=e.entry_hash,
                    )
                    for e in page.entries
                )
                if len(page.entries) < 1000:
                    break
            broken = first_broken_link(entries)
            self.check(
                "final",
                f"{node.node_id}'s audit chain verifies ({len(entries)} entries)",
                broken is None,
                f"first bad entry {broken}" if broken else "",
            )
