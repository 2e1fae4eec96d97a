"""`exchange client ...`: act as an authority system (for people and scripts).

Connection settings come from options or the environment:
EXCHANGE_ADDRESS (host:port of the authority port), EXCHANGE_TOKEN, and
EXCHANGE_CA_FILE (the node's tls/authority.pem). Requests are read from JSON
files in protobuf's JSON mapping (field names as in authority.proto).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import grpc
import typer
from google.protobuf import json_format
from google.protobuf.message import Message

from exchange._proto.exchange.v1 import authority_pb2 as pb
from exchange._proto.exchange.v1 import envelope_pb2, matching_pb2, notices_pb2
from exchange.addresses import is_loopback
from exchange.cli._output import console, fail, message_dict, print_message, table
from exchange.cli._progress import progress
from exchange.registering import MAX_IDENTIFIERS
from exchange.rpc.client import AuthorityClient

app = typer.Typer(help="Call a node's authority API as an authority system.")

M = TypeVar("M", bound=Message)
T = TypeVar("T")
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the response as JSON.")]


@dataclasses.dataclass(frozen=True)
class Connection:
    address: str
    token: str
    ca_file: Path | None
    insecure: bool

    def client(self) -> AuthorityClient:
        if self.insecure:
            if not is_loopback(self.address):
                fail(f"--insecure would send the token in clear to {self.address}: loopback only")
            return AuthorityClient(self.address, self.token, ca_certificate=None)
        if self.ca_file is None:
            fail("give --ca-file (the node's tls/authority.pem) or --insecure for a loopback port")
        return AuthorityClient(self.address, self.token, ca_certificate=self.ca_file.read_bytes())


@app.callback()
def connect(
    context: typer.Context,
    address: Annotated[
        str, typer.Option(envvar="EXCHANGE_ADDRESS", help="host:port")
    ] = "127.0.0.1:7443",
    token: Annotated[str, typer.Option(envvar="EXCHANGE_TOKEN", help="Bearer token.")] = "",
    ca_file: Annotated[
        Path | None, typer.Option(envvar="EXCHANGE_CA_FILE", help="The node's authority.pem.")
    ] = None,
    insecure: Annotated[bool, typer.Option(help="Plaintext (serve --insecure-loopback).")] = False,
) -> None:
    if not token:
        fail("give --token or set EXCHANGE_TOKEN")
    context.obj = Connection(address, token, ca_file, insecure)


def _run(context: typer.Context, call: Callable[[AuthorityClient], Awaitable[T]]) -> T:
    async def run() -> T:
        async with context.obj.client() as client:
            return await call(client)

    return asyncio.run(run())


def _load(path: Path, message: M) -> M:
    try:
        json_format.Parse(path.read_text(), message)
    except FileNotFoundError:
        fail(f"{path}: not found")
    except json_format.ParseError as exc:
        fail(f"{path}: {exc}")
    return message


def _show_submitted(submitted: pb.SubmittedNotice, as_json: bool) -> None:
    if as_json:
        print_message(submitted)
    else:
        console.print(
            f"queued {submitted.message_id} for {', '.join(submitted.recipient_node_ids)}"
        )


RequestId = Annotated[
    str,
    typer.Option(
        "--request-id",
        help="Idempotency key: retrying with the same key never sends the notice twice.",
    ),
]


@app.command()
def submit(
    context: typer.Context,
    request_file: Path,
    request_id: RequestId = "",
    as_json: JsonFlag = False,
) -> None:
    """Submit a notice from a SubmitNoticeRequest JSON file."""
    request = _load(request_file, pb.SubmitNoticeRequest())
    if request_id:
        request.client_request_id = request_id
    _show_submitted(_run(context, lambda c: c.submit(request)), as_json)


@app.command()
def respond(
    context: typer.Context,
    in_reply_to: str,
    request_file: Path,
    request_id: RequestId = "",
    as_json: JsonFlag = False,
) -> None:
    """Reply to a received notice with a RespondRequest JSON file."""
    request = _load(request_file, pb.RespondRequest())
    request.in_reply_to = in_reply_to
    if request_id:
        request.client_request_id = request_id
    _show_submitted(_run(context, lambda c: c.respond(request)), as_json)


@app.command()
def ack(
    context: typer.Context,
    message_id: str,
    status: Annotated[str, typer.Option(help="RECEIVED, ACCEPTED_FOR_ACTION, ...")] = "RECEIVED",
    note: str = "",
    as_json: JsonFlag = False,
) -> None:
    """Acknowledge a received notice to its sender."""
    try:
        code = notices_pb2.AcknowledgementStatus.Value(f"ACKNOWLEDGEMENT_STATUS_{status.upper()}")
    except ValueError:
        fail(f"--status {status!r} is not an acknowledgement status")
    request = pb.AcknowledgeRequest(message_id=message_id, status=code, note=note)
    _show_submitted(_run(context, lambda c: c.acknowledge(request)), as_json)


def _kind(kind: int) -> str:
    return envelope_pb2.NoticeKind.Name(kind).removeprefix("NOTICE_KIND_")  # type: ignore[arg-type]


@app.command()
def inbox(
    context: typer.Context,
    page_size: int = 50,
    page_token: str = "",
    as_json: JsonFlag = False,
) -> None:
    """List received notices, newest first (header fields only)."""
    response = _run(context, lambda c: c.list_inbox(page_size, page_token))
    if as_json:
        print_message(response)
        return
    table(
        "inbox",
        ["message id", "from", "kind", "case", "received", "state"],
        [
            (
                n.message_id,
                n.sender_node_id,
                _kind(n.kind),
                n.case_reference,
                n.received_at.ToDatetime().isoformat(timespec="seconds"),
                pb.InboxState.Name(n.state).removeprefix("INBOX_STATE_"),
            )
            for n in response.notices
        ],
    )
    if response.next_page_token:
        console.print(f"next page: --page-token {response.next_page_token}")


@app.command()
def get(context: typer.Context, message_id: str) -> None:
    """Open a received notice (audited) and print it as JSON."""
    print_message(_run(context, lambda c: c.get_notice(message_id)))


@app.command()
def watch(
    context: typer.Context,
    after: Annotated[int, typer.Option(help="Start after this event sequence.")] = 0,
    count: Annotated[int, typer.Option(help="Stop after this many events (0: never).")] = 0,
) -> None:
    """Print inbox events as JSON lines as they happen."""

    async def follow(client: AuthorityClient) -> None:
        seen = 0
        async for event in client.watch(after):
            console.print_json(data=message_dict(event))
            seen += 1
            if count and seen >= count:
                return

    _run(context, follow)


@app.command()
def status(context: typer.Context, message_id: str, as_json: JsonFlag = False) -> None:
    """Delivery state of a sent notice, per recipient."""
    response = _run(context, lambda c: c.delivery_status(message_id))
    if as_json:
        print_message(response)
        return
    table(
        f"delivery of {message_id}",
        ["recipient", "state", "attempts", "last error"],
        [
            (
                r.recipient_node_id,
                pb.DeliveryState.Name(r.state).removeprefix("DELIVERY_STATE_"),
                r.attempts,
                r.last_error,
            )
            for r in response.recipients
        ],
    )


def _code(enum: Any, prefix: str, value: str, option: str) -> int:
    try:
        return int(enum.Value(f"{prefix}_{value.upper()}"))
    except ValueError:
        names = ", ".join(n.removeprefix(prefix + "_").lower() for n in enum.keys()[1:])
        fail(f"{option} {value!r}: expected one of {names}")


@app.command()
def withdraw(
    context: typer.Context,
    message_id: str,
    reason: Annotated[str, typer.Option(help="sent_in_error, case_closed, ...")],
    note: str = "",
    request_id: RequestId = "",
    as_json: JsonFlag = False,
) -> None:
    """Withdraw a notice this node sent, from every recipient."""
    request = pb.WithdrawRequest(
        message_id=message_id,
        reason=_code(notices_pb2.WithdrawalReason, "WITHDRAWAL_REASON", reason, "--reason"),  # type: ignore[arg-type]
        note=note,
        client_request_id=request_id,
    )
    _show_submitted(_run(context, lambda c: c.withdraw(request)), as_json)


@app.command()
def decide(
    context: typer.Context,
    request_message_id: str,
    approve: Annotated[bool, typer.Option("--approve/--refuse", help="The decision.")],
    ground: Annotated[str, typer.Option(help="Refusal ground, e.g. child_best_interests.")] = "",
    request_id: RequestId = "",
    as_json: JsonFlag = False,
) -> None:
    """Answer a received disclosure request."""
    request = pb.DecideDisclosureRequest(
        request_message_id=request_message_id,
        decision=notices_pb2.DISCLOSURE_DECISION_APPROVED
        if approve
        else notices_pb2.DISCLOSURE_DECISION_REFUSED,
        refusal_ground=_code(notices_pb2.RefusalGround, "REFUSAL_GROUND", ground, "--ground")  # type: ignore[arg-type]
        if ground
        else 0,
        client_request_id=request_id,
    )
    _show_submitted(_run(context, lambda c: c.decide_disclosure(request)), as_json)


@app.command()
def forward(
    context: typer.Context,
    message_id: str,
    to: Annotated[list[str], typer.Option(help="A node to forward to; repeatable.")],
    case: Annotated[str, typer.Option(help="Your own case reference, carried by the copy.")],
    request_id: RequestId = "",
    as_json: JsonFlag = False,
) -> None:
    """Forward a received notice to other nodes, as its handling code allows."""
    request = pb.ForwardRequest(
        message_id=message_id,
        recipient_node_ids=to,
        case_reference=case,
        client_request_id=request_id,
    )
    _show_submitted(_run(context, lambda c: c.forward(request)), as_json)


@app.command()
def register(context: typer.Context, request_file: Path) -> None:
    """Register a case's identifiers for hit/no-hit matching (RegisterIdentifiersRequest JSON;
    values are base64, as protobuf's JSON mapping writes bytes)."""
    request = _load(request_file, pb.RegisterIdentifiersRequest())
    print_message(_run(context, lambda c: _register_in_batches(c, request)))


async def _register_in_batches(
    client: AuthorityClient, request: pb.RegisterIdentifiersRequest
) -> pb.RegisterIdentifiersResponse:
    """Send a file of any size in calls of at most MAX_IDENTIFIERS, showing progress.

    Registration is idempotent per (identifier, case): after a failure, running the
    same file again registers what is missing and counts the rest as already there.
    """
    identifiers = list(request.identifiers)
    total = pb.RegisterIdentifiersResponse()
    with progress("registering identifiers", len(identifiers)) as advance:
        for start in range(0, max(len(identifiers), 1), MAX_IDENTIFIERS):
            batch = pb.RegisterIdentifiersRequest(
                case_reference=request.case_reference,
                contact_point=request.contact_point,
                identifiers=identifiers[start : start + MAX_IDENTIFIERS],
            )
            try:
                response = await client.register_identifiers(batch)
            except grpc.aio.AioRpcError as exc:
                fail(
                    f"{exc.code().name}: {exc.details()} (identifiers {start:,} to "
                    f"{start + len(batch.identifiers) - 1:,}; the {start:,} before are "
                    "registered: run the same file again to finish)"
                )
            total.registered += response.registered
            total.already_registered += response.already_registered
            advance(len(batch.identifiers))
    return total


@app.command()
def query(context: typer.Context, request_file: Path) -> None:
    """Ask peers about identifiers without showing them (QueryRequest JSON): per peer and
    identifier, hit (case reference, contact point), no hit or unavailable."""
    request = _load(request_file, matching_pb2.QueryRequest())
    print_message(_run(context, lambda c: c.query(request)))


@app.command()
def overdue(context: typer.Context, as_json: JsonFlag = False) -> None:
    """Requests past their response deadline without an answer."""
    response = _run(context, lambda c: c.overdue())
    if as_json:
        print_message(response)
        return
    table(
        "overdue requests",
        ["message id", "kind", "owed", "other node", "case", "due"],
        [
            (
                r.message_id,
                _kind(r.kind),
                "by us" if r.owed == pb.OWED_BY_US else "to us",
                r.counterpart_node_id,
                r.case_reference,
                r.response_deadline.ToDatetime().isoformat(timespec="minutes"),
            )
            for r in response.requests
        ],
    )


@app.command()
def audit(context: typer.Context, after: int = 0, page_size: int = 100) -> None:
    """Print a page of the node's audit log as JSON (auditor role)."""
    print_message(_run(context, lambda c: c.audit_entries(after, page_size)))
