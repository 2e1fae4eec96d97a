"""Authority clients without the right credentials, and callers on the wrong port (item 13).

Every refused authority call is refused before anything is stored, with
UNAUTHENTICATED or PERMISSION_DENIED, and audited as `call.refused` with its
reason; a flood of them adds one entry per kind and minute, carrying the count
(exchange.refusals). The federation port refuses anyone without a member
node's certificate during the TLS handshake, before any of the node's code runs.
"""

from __future__ import annotations

import datetime as dt
import json

import grpc
import pytest

from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange._proto.exchange.v1 import authority_pb2_grpc, federation_pb2, federation_pb2_grpc
from exchange._proto.exchange.v1 import matching_pb2 as mpb
from exchange.admin import node as node_admin
from exchange.clock import ManualClock
from exchange.harness import samples
from exchange.layout import NodeLayout
from exchange.refusals import DEFAULT_WINDOW
from exchange.rpc.peers import channel_options
from tests.adversarial._calls import (
    audit_size,
    audited_since,
    authority_channel,
    bearer,
    clocked_federation,
    stored,
)
from tests.live import Federation
from tests.peers import craft_envelope, referral_notice, refused_trust_list_call

__all__ = ["clocked_federation"]

pytestmark = pytest.mark.asyncio(loop_scope="module")

Clocked = tuple[Federation, ManualClock]


@pytest.fixture(autouse=True)
def new_window(clocked_federation: Clocked) -> None:
    """Each test starts a new refusal window, so that its first refusal of a kind is written."""
    clocked_federation[1].advance(DEFAULT_WINDOW + dt.timedelta(seconds=1))


def referral(federation: Federation) -> apb.SubmitNoticeRequest:
    """A submission XB would accept from a submitter."""
    return samples.case_referral([federation.sim(0).node_id], "XB-2026-13", "A referral.")


def new_client(federation: Federation, name: str, roles: list[str], now: dt.datetime) -> str:
    return node_admin.add_client(federation.sim(1).directory, name, roles, now=now)


async def refused_submission(
    federation: Federation, metadata: tuple[tuple[str, str], ...]
) -> grpc.aio.AioRpcError:
    async with authority_channel(federation, 1) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await authority_pb2_grpc.AuthorityStub(channel).SubmitNotice(
                referral(federation), metadata=metadata, timeout=30
            )
    return refused.value


def _wrong_secret(federation: Federation, _: dt.datetime) -> tuple[tuple[str, str], ...]:
    token = federation.sim(1).case_worker_token
    return bearer(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))


def _revoked(federation: Federation, now: dt.datetime) -> tuple[tuple[str, str], ...]:
    token = new_client(federation, "revoked-submitter", ["submitter"], now)
    node_admin.revoke_client(federation.sim(1).directory, "revoked-submitter", now=now)
    return bearer(token)


# (case, metadata of the call, what the caller is told, reason audited, actor audited)
TOKENS = [
    ("no-token", lambda f, now: (), "missing authorization", "no token", "unauthenticated"),
    (
        "not-bearer",
        lambda f, now: (("authorization", "Basic eGE6eGE="),),
        "missing authorization",
        "no token",
        "unauthenticated",
    ),
    (
        "malformed",
        lambda f, now: bearer("not-a-token"),
        "malformed token",
        "malformed token",
        "unauthenticated",
    ),
    (
        "unknown-client",
        lambda f, now: bearer("exn_" + "0" * 32 + "_" + "A" * 43),
        "invalid token",
        "unknown client",
        "unauthenticated",
    ),
    (
        "another-nodes-client",
        lambda f, now: bearer(f.sim(0).case_worker_token),
        "invalid token",
        "unknown client",
        "unauthenticated",
    ),
    ("wrong-secret", _wrong_secret, "invalid token", "wrong secret", "client:case-management"),
    ("revoked", _revoked, "invalid token", "revoked client", "client:revoked-submitter"),
]


@pytest.mark.parametrize(
    ("metadata", "told", "reason", "actor"), [t[1:] for t in TOKENS], ids=[t[0] for t in TOKENS]
)
async def test_a_call_without_a_valid_token_is_refused_stores_nothing_and_is_audited(
    clocked_federation: Clocked, metadata, told: str, reason: str, actor: str
) -> None:
    federation, clock = clocked_federation
    xb = federation.node(1)
    before, size = await stored(xb), await audit_size(xb)
    refused = await refused_submission(federation, metadata(federation, clock.now()))
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert told in (refused.details() or "")
    assert await stored(xb) == before
    (entry,) = await audited_since(xb, size, "call.refused")
    assert entry.actor == actor
    assert json.loads(entry.details_json) == {
        "method": "SubmitNotice",
        "reason": reason,
        "refusals": "1",
    }


async def test_a_revoked_token_stops_working_at_once(clocked_federation: Clocked) -> None:
    federation, clock = clocked_federation
    sim = federation.sim(1)
    client = federation.client(
        1, token=new_client(federation, "temporary", ["reader"], clock.now())
    )
    await client.list_inbox()
    node_admin.revoke_client(sim.directory, "temporary", now=clock.now())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.list_inbox()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


# (roles of the client, the call it may not make, the role the refusal names)
ROLES = [
    (["reader"], lambda c, f: c.submit(referral(f)), "SubmitNotice", "submitter"),
    (
        ["reader"],
        lambda c, f: c.register_identifiers(
            apb.RegisterIdentifiersRequest(
                case_reference="XB-1",
                contact_point="desk",
                identifiers=[
                    mpb.IdentifierValue(type=mpb.IDENTIFIER_TYPE_PHONE, value=b"+442079460958")
                ],
            )
        ),
        "RegisterIdentifiers",
        "submitter",
    ),
    (
        ["auditor"],
        lambda c, f: c.get_notice("01890a5d-ac96-7abc-8def-0123456789ab"),
        "GetNotice",
        "reader",
    ),
    (["submitter"], lambda c, f: c.list_inbox(), "ListInbox", "reader"),
    (["submitter", "reader"], lambda c, f: c.audit_entries(), "ListAuditEntries", "auditor"),
]


@pytest.mark.parametrize(
    ("roles", "call", "method", "needed"),
    ROLES,
    ids=[f"{'+'.join(r[0])}-{r[2]}" for r in ROLES],
)
async def test_a_role_without_the_right_is_permission_denied_stores_nothing_and_is_audited(
    clocked_federation: Clocked, roles: list[str], call, method: str, needed: str
) -> None:
    federation, clock = clocked_federation
    xb = federation.node(1)
    name = f"{'-'.join(roles)}-{method.lower()}"
    client = federation.client(1, token=new_client(federation, name, roles, clock.now()))
    before, size = await stored(xb), await audit_size(xb)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(client, federation)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"lacks the {needed} role needed for {method}" in (refused.value.details() or "")
    assert await stored(xb) == before
    (entry,) = await audited_since(xb, size, "call.refused")
    assert entry.actor == f"client:{name}"
    assert json.loads(entry.details_json) == {"method": method, "reason": "role", "refusals": "1"}


async def test_a_flood_of_refused_calls_adds_one_audit_entry_per_kind_and_minute(
    clocked_federation: Clocked,
) -> None:
    federation, clock = clocked_federation
    xb = federation.node(1)
    size = await audit_size(xb)
    async with authority_channel(federation, 1) as channel:
        stub = authority_pb2_grpc.AuthorityStub(channel)

        async def refused_listing(metadata: tuple[tuple[str, str], ...]) -> None:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ListInbox(apb.ListInboxRequest(), metadata=metadata, timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # Random client ids in well-formed tokens: still one kind ("unknown client").
        for n in range(120):
            await refused_listing(bearer(f"exn_{n:032x}_" + "A" * 43))
        assert len(await audited_since(xb, size, "call.refused")) == 1
        clock.advance(DEFAULT_WINDOW)
        await refused_listing(bearer("exn_" + "f" * 32 + "_" + "A" * 43))
    entries = await audited_since(xb, size, "call.refused")
    assert [json.loads(e.details_json)["refusals"] for e in entries] == ["1", "120"]
    assert len(await audited_since(xb, size)) == 2  # nothing else was written either


async def test_a_peer_node_calling_the_authority_port_is_refused(
    clocked_federation: Clocked,
) -> None:
    """A member node's certificate gives no standing on another node's authority port."""
    federation, _ = clocked_federation
    xa, xb = federation.node(0), federation.node(1)
    before, size = await stored(xb), await audit_size(xb)
    address = federation.sim(1).authority_address
    as_node = grpc.ssl_channel_credentials(
        root_certificates=NodeLayout(xb.config.directory).authority_certificate.read_bytes(),
        private_key=xa.tls.key_pem,
        certificate_chain=xa.tls.certificate_pem,
    )
    async with grpc.aio.secure_channel(address, as_node) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await authority_pb2_grpc.AuthorityStub(channel).SubmitNotice(
                referral(federation), timeout=30
            )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # With its federation trust anchor, it does not even accept the authority port's certificate.
    async with grpc.aio.secure_channel(address, xa.tls.channel_credentials()) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as unreached:
            await authority_pb2_grpc.AuthorityStub(channel).ListInbox(
                apb.ListInboxRequest(), timeout=30
            )
    assert unreached.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await stored(xb) == before
    (entry,) = await audited_since(xb, size, "call.refused")
    assert json.loads(entry.details_json)["reason"] == "no token"


async def test_an_authority_client_calling_the_federation_port_is_refused(
    clocked_federation: Clocked,
) -> None:
    """Without a member node's certificate the TLS handshake fails: nothing runs, nothing stored."""
    federation, _ = clocked_federation
    xa, xb = federation.node(0), federation.node(1)
    before, size = await stored(xb), await audit_size(xb)
    token = bearer(federation.sim(1).case_worker_token)
    envelope = craft_envelope(xa, [xb.context.node_id], referral_notice())
    client_like = [
        # What an authority system holds: the authority port's certificate, and a token.
        grpc.ssl_channel_credentials(
            root_certificates=NodeLayout(xb.config.directory).authority_certificate.read_bytes()
        ),
        # Even trusting the federation CA, it has no client certificate to show.
        grpc.ssl_channel_credentials(root_certificates=xa.tls.ca_pem),
    ]
    for credentials in client_like:
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{xb.federation_port}",
            credentials,
            options=channel_options(xb.context.node_id),
        ) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await federation_pb2_grpc.FederationStub(channel).Deliver(
                    federation_pb2.DeliverRequest(envelope=envelope.to_proto()),
                    metadata=token,
                    timeout=30,
                )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert (await refused_trust_list_call(xb, credentials)).code() == (
            grpc.StatusCode.UNAVAILABLE
        )
    assert await stored(xb) == before
    assert await audit_size(xb) == size
