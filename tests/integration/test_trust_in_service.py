"""The trust list while nodes run: newer lists adopted, expired ones stop a node, strangers out."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from exchange.admin import federation as federation_admin
from exchange.admin import node as node_admin
from exchange.clock import ManualClock
from exchange.harness import samples
from exchange.keys import load_ed25519
from exchange.layout import FederationLayout
from exchange.store import audit_log
from exchange.trust import SignedTrustList, sign_trust_list
from tests.conftest import DatabaseFactory
from tests.live import Federation, start_federation
from tests.peers import (
    craft_envelope,
    deliver_as,
    referral_notice,
    refused_trust_list_call,
    stranger_credentials,
)


def _publish_suspending(root: Path, node_id: str) -> Path:
    """Stewards publish the next trust list version with `node_id` suspended."""
    directory = root / "federation"
    version, current = federation_admin.latest_published(directory)
    trust = current.trust_list
    nodes = dict(trust.nodes)
    nodes[node_id] = dataclasses.replace(nodes[node_id], active=False)
    successor = dataclasses.replace(
        trust, version=version + 1, issued_at=dt.datetime.now(dt.UTC), nodes=nodes
    )
    signed = SignedTrustList(successor.to_bytes(), ())
    for steward in ("steward-1", "steward-2"):
        key = load_ed25519(FederationLayout(directory).steward_key(steward), None)
        signed = signed.with_signature(*sign_trust_list(signed.body, key))
    path = FederationLayout(directory).trust_list(version + 1)
    path.write_bytes(signed.to_bytes())
    return path


async def test_a_running_node_adopts_a_newer_list_and_its_suspensions(
    federation: Federation, tmp_path: Path
) -> None:
    a, c = federation.node(0), federation.node(2)
    published = _publish_suspending(tmp_path, c.context.node_id)
    node_admin.update_trust(federation.sim(0).directory, published, now=dt.datetime.now(dt.UTC))
    assert a.context.trust.version == 2  # installed in the store, not yet adopted
    assert await a.refresh_trust()
    assert a.context.trust.version == 3
    assert not await a.refresh_trust()  # nothing newer
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await deliver_as(c, a, craft_envelope(c, [a.context.node_id], referral_notice()))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "unknown or inactive sender" in (refused.value.details() or "")


@pytest.fixture
async def expired(tmp_path: Path, databases: DatabaseFactory) -> AsyncIterator[Federation]:
    """XB's clock reads 40 days on: its 30-day trust list has expired."""
    later = ManualClock(dt.datetime.now(dt.UTC) + dt.timedelta(days=40))
    running = await start_federation(tmp_path, databases, clocks={"xb-prosecution": later})
    try:
        yield running
    finally:
        await running.close()


async def test_a_node_with_an_expired_list_neither_accepts_nor_sends(expired: Federation) -> None:
    a, b = expired.node(0), expired.node(1)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await deliver_as(a, b, craft_envelope(a, [b.context.node_id], referral_notice()))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "expired" in (refused.value.details() or "")
    submit = samples.case_referral([a.context.node_id], "XB-1", "Refused while expired.")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await expired.client(1).submit(submit)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_certificate_of_the_federation_ca_for_a_stranger_is_refused(
    federation: Federation, tmp_path: Path
) -> None:
    """Only listed members get past TLS: a stranger's call touches no store (no audit)."""
    b = federation.node(1)
    credentials = stranger_credentials(tmp_path / "federation")
    before = await b.context.store.read(audit_log.size)
    refused = await refused_trust_list_call(b, credentials)
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await b.context.store.read(audit_log.size) == before
