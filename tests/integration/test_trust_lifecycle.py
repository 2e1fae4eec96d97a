"""The trust lifecycle on running nodes, on both store engines: a stale list stops
sending and says so through health; newer lists travel between peers (and only
lists the stewards' thresholds vouch for are taken); a node key is revoked while
a backlog waits, and the backlog drains with the new key.

Every node reads one `ManualClock`: time moves only when a test says so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select
from typer.testing import CliRunner

from exchange._encoding import encode
from exchange._proto.exchange.v1 import envelope_pb2
from exchange._proto.exchange.v1.authority_pb2 import SubmitNoticeRequest
from exchange.admin import federation as federation_admin
from exchange.admin import node as node_admin
from exchange.cli import app as cli_app
from exchange.clock import ManualClock
from exchange.delivery import DeliveryWorker
from exchange.envelope import Header
from exchange.harness import samples
from exchange.health import TRUST_LIST_STALE
from exchange.keys import load_ed25519
from exchange.layout import FederationLayout
from exchange.node import Node
from exchange.rpc.peers import PeerTransport
from exchange.store import audit_log, outbox
from exchange.store.notices import load_envelope
from exchange.store.tables import INBOX_EVENTS
from exchange.trust import SignedTrustList, TrustList, sign_trust_list
from tests.conftest import DatabaseFactory
from tests.live import Federation, start_federation
from tests.peers import craft_envelope, deliver_as, referral_notice

XA, XB, XC = 0, 1, 2


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(dt.datetime.now(dt.UTC))


@pytest.fixture
async def quiet(
    tmp_path: Path, databases: DatabaseFactory, clock: ManualClock
) -> AsyncIterator[Federation]:
    """Three nodes on one clock, whose outboxes move only when a test drives them."""
    ids = ["xa-police", "xb-prosecution", "xc-childprotection"]
    running = await start_federation(
        tmp_path, databases, clocks=dict.fromkeys(ids, clock), deliver=False
    )
    assert [sim.node_id for sim in running.nodes] == ids
    try:
        yield running
    finally:
        await running.close()


def _referral(recipients: list[str], case_reference: str, summary: str) -> SubmitNoticeRequest:
    """A sample referral that may wait three days for delivery."""
    request = samples.case_referral(recipients, case_reference, summary)
    request.time_to_live.seconds = 3 * 24 * 3600
    return request


def _sign_and_write(root: Path, trust: TrustList, stewards: tuple[str, ...]) -> Path:
    layout = FederationLayout(root / "federation")
    signed = SignedTrustList(trust.to_bytes(), ())
    for steward in stewards:
        key = load_ed25519(layout.steward_key(steward), None)
        signed = signed.with_signature(*sign_trust_list(signed.body, key))
    path = layout.trust_list(trust.version)
    path.write_bytes(signed.to_bytes())
    return path


def _republish(root: Path, now: dt.datetime) -> tuple[Path, SignedTrustList]:
    """The stewards publish the same members again as the next version, issued `now`."""
    version, current = federation_admin.latest_published(root / "federation")
    trust = dataclasses.replace(
        current.trust_list,
        version=version + 1,
        issued_at=now,
        expires_at=now + dt.timedelta(days=30),
    )
    path = _sign_and_write(root, trust, ("steward-1", "steward-2"))
    return path, SignedTrustList.from_bytes(path.read_bytes())


async def _audit(node: Node, action: str) -> list[dict[str, str]]:
    entries = await node.context.store.read(lambda c: list(audit_log.iter_entries(c)))
    return [dict(json.loads(e.details_json), actor=e.actor) for e in entries if e.action == action]


async def _drain(node: Node) -> int:
    transport = PeerTransport(node.tls.channel_credentials())
    try:
        return await DeliveryWorker(node.context, transport).run_once()
    finally:
        await transport.close()


async def _states(node: Node, message_ids: list[str]) -> list[str]:
    def read(connection: object) -> list[str]:
        return [
            record.state
            for message_id in message_ids
            for record in outbox.delivery_status(connection, message_id)  # type: ignore[arg-type]
        ]

    return await node.context.store.read(read)


async def _health(federation: Federation, index: int) -> int:
    sim = federation.sim(index)
    credentials = grpc.ssl_channel_credentials(sim.authority_certificate)
    async with grpc.aio.secure_channel(sim.authority_address, credentials) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="exchange.v1.Authority"), timeout=5
        )
    return response.status


# --- freshness -------------------------------------------------------------------------------


async def test_a_stale_list_stops_sending_holds_the_outbox_and_says_why(
    quiet: Federation, clock: ManualClock, tmp_path: Path
) -> None:
    b_sim = quiet.sim(XB)
    await quiet.crash(b_sim.node_id)
    with (b_sim.directory / "node.toml").open("a") as toml:
        toml.write("\n[trust]\nmax_age_days = 2\n")
    b = await quiet.start(b_sim.node_id, deliver=False)
    a_id = quiet.sim(XA).node_id
    queued = await quiet.client(XB).submit(_referral([a_id], "XB-1", "Queued."))
    assert await _health(quiet, XB) == health_pb2.HealthCheckResponse.SERVING

    clock.advance(dt.timedelta(days=2))  # issued a day before the fixture's start: 3 days old
    reason = await b.check_trust()

    assert reason is not None
    assert "freshness limit of 2 days" in reason
    assert "freshness limit" in b.context.health.problems()[TRUST_LIST_STALE]
    assert await _health(quiet, XB) == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await quiet.client(XB).submit(_referral([a_id], "XB-2", "Refused."))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "freshness limit of 2 days" in (refused.value.details() or "")
    assert await _drain(b) == 0
    assert await _states(b, [queued.message_id]) == ["pending"], "held, not failed"
    # A peer with a longer limit still sends on the same list.
    assert quiet.node(XA).context.trust_staleness(clock.now()) is None

    path, _ = _republish(tmp_path, clock.now())
    node_admin.update_trust(b_sim.directory, path, now=clock.now())
    assert await b.refresh_trust()

    assert b.context.health.problems() == {}
    assert await _health(quiet, XB) == health_pb2.HealthCheckResponse.SERVING
    assert await _drain(b) == 1
    assert await _states(b, [queued.message_id]) == ["delivered"]


# --- distribution ------------------------------------------------------------------------------


async def test_nodes_take_a_newer_list_from_a_peer_and_ignore_older_ones(
    quiet: Federation, clock: ManualClock, tmp_path: Path
) -> None:
    a, b, c = quiet.node(XA), quiet.node(XB), quiet.node(XC)
    path, _ = _republish(tmp_path, clock.now())
    node_admin.update_trust(quiet.sim(XA).directory, path, now=clock.now())
    assert await a.refresh_trust()

    assert await b.fetch_trust() == 3
    assert await c.fetch_trust() == 3
    assert (b.context.trust.version, c.context.trust.version) == (3, 3)
    installed = await _audit(b, "trust_list.installed")
    assert installed[-1]["version"] == "3"
    assert installed[-1]["source"] == a.context.node_id

    before = await b.context.store.read(audit_log.size)
    assert await b.fetch_trust() is None, "peers holding the same version are ignored"
    assert await b.context.store.read(audit_log.size) == before


async def test_federation_status_shows_what_every_node_holds(
    quiet: Federation, clock: ManualClock, tmp_path: Path
) -> None:
    a = quiet.node(XA)
    path, _ = _republish(tmp_path, clock.now())
    node_admin.update_trust(quiet.sim(XA).directory, path, now=clock.now())
    await a.refresh_trust()
    await quiet.crash(quiet.sim(XC).node_id)

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exchange",
        "federation",
        "status",
        str(tmp_path / "federation"),
        "--via",
        str(quiet.sim(XB).directory),
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    status = json.loads(out)
    assert status["version"] == 3
    held = {n["node_id"]: n for n in status["nodes"]}
    assert held["xa-police"]["held_version"] == 3
    assert held["xb-prosecution"]["held_version"] == 2
    assert held["xc-childprotection"]["reachable"] is False
    assert held["xc-childprotection"]["error"].startswith("UNAVAILABLE")


# --- a node key revoked mid-backlog ------------------------------------------------------------


async def _rotate_and_revoke(
    quiet: Federation, clock: ManualClock, root: Path, index: int, others: list[int]
) -> tuple[dict[str, str], dt.datetime, int]:
    """Node `index` rotates its signing key; the stewards publish the new one and revoke
    the old one 30 s on; the node and `others` (running or not) install that list."""
    fed, sim = root / "federation", quiet.sim(index)
    node = quiet.node(index)
    old_key_id = node.context.identity.signing_key_id
    rotated = node_admin.rotate_keys(sim.directory, signing=True, sealing=False, passphrase=None)
    assert rotated["signing"] not in node.context.identity.signing_keys, "not loaded yet"
    assert node.context.identity.signer(node.context.trust, clock.now())[0] == old_key_id
    clock.advance(dt.timedelta(minutes=1))
    federation_admin.add_node(fed, sim.directory / "enrolment.json", now=clock.now())
    revoked_at = clock.now() + dt.timedelta(seconds=30)
    federation_admin.revoke_key(fed, sim.node_id, old_key_id, at=revoked_at, now=clock.now())
    for steward in ("steward-1", "steward-2"):
        federation_admin.sign_draft(fed, steward, None)
    path, published = federation_admin.publish(fed, now=clock.now())
    for other in (index, *others):
        node_admin.update_trust(quiet.sim(other).directory, path, now=clock.now())
    assert await node.refresh_trust()
    assert rotated["signing"] in node.context.identity.signing_keys, "loaded on adoption"
    return rotated, revoked_at, published.version


async def test_a_backlog_drains_with_the_new_key_after_the_old_one_is_revoked(
    quiet: Federation, clock: ManualClock, tmp_path: Path
) -> None:
    a_sim, b_sim = quiet.sim(XA), quiet.sim(XB)
    a = quiet.node(XA)
    old_key = a.context.identity.signing_key
    old_key_id = a.context.identity.signing_key_id
    # Delivered before anything happens: evidence signed with the old key.
    early = await quiet.client(XA).submit(_referral([b_sim.node_id], "XA-0", "Early."))
    assert await _drain(a) == 1

    # XB goes down; XA queues a backlog for it.
    await quiet.crash(b_sim.node_id)
    backlog = [
        (
            await quiet.client(XA).submit(_referral([b_sim.node_id], f"XA-{i}", f"Backlog {i}."))
        ).message_id
        for i in range(1, 4)
    ]
    assert await _drain(a) == 3  # attempted, unreachable, rescheduled
    assert await _states(a, backlog) == ["pending"] * 3

    # XA's admin rotates its signing key; the stewards publish it and revoke the old one.
    rotated, revoked_at, version = await _rotate_and_revoke(quiet, clock, tmp_path, XA, [XB])
    clock.advance(dt.timedelta(hours=1))  # past the revocation, and the backlog is due

    b = await quiet.start(b_sim.node_id, deliver=False)
    assert b.context.trust.version == version
    assert await _drain(a) == 3
    assert await _states(a, backlog) == ["delivered"] * 3

    # XB holds each notice once, signed with the new key, verifiable by its new list.
    entry = b.context.trust.nodes[a_sim.node_id]
    for message_id in backlog:
        stored = await b.context.store.read(lambda c, m=message_id: load_envelope(c, m))
        assert stored is not None
        header = Header.from_bytes(stored.header)
        assert header.sender_key_id == rotated["signing"]
        sent = await a.context.store.read(lambda c, m=message_id: load_envelope(c, m))
        assert sent == stored, "the re-signed envelope is the one on record at both ends"
    resigned = await _audit(a, "notice.resigned")
    assert sorted(r["previous_key_id"] for r in resigned) == [old_key_id] * 3

    # Freshly signed with the revoked key after its revocation: refused.
    fresh = craft_envelope(a, [b_sim.node_id], referral_notice(), signing_key=old_key)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await deliver_as(a, b, fresh)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # What the old key signed before the revocation stays verifiable by its own time.
    kept = await b.context.store.read(lambda c: load_envelope(c, early.message_id))
    assert kept is not None
    made = Header.from_bytes(kept.header)
    assert made.sender_key_id == old_key_id
    key = entry.signing_key(old_key_id, made.created_at)
    assert key is not None
    assert key.revoked_at == revoked_at
    key.ed25519().verify(kept.signature, _signed_bytes(kept.header))


async def test_evidence_about_a_notice_resigned_mid_delivery_still_verifies(
    quiet: Federation, clock: ManualClock, tmp_path: Path
) -> None:
    """XC receipted the first signing; XB, down meanwhile, gets the second. The evidence
    bundle holds both signings, so both receipts are proven over the bytes they cover."""
    a = quiet.node(XA)
    b_id, c_id = quiet.sim(XB).node_id, quiet.sim(XC).node_id
    await quiet.crash(b_id)
    sent = await quiet.client(XA).submit(_referral([b_id, c_id], "XA-7", "Two recipients."))
    assert await _drain(a) == 2
    assert await _states(a, [sent.message_id]) == ["pending", "delivered"]
    first = await a.context.store.read(lambda c: load_envelope(c, sent.message_id))

    _, _, version = await _rotate_and_revoke(quiet, clock, tmp_path, XA, [XB, XC])
    clock.advance(dt.timedelta(hours=1))
    await quiet.start(b_id, deliver=False)
    assert await _drain(a) == 1
    assert await _states(a, [sent.message_id]) == ["delivered", "delivered"]
    (kept,) = await a.context.store.read(lambda c: outbox.superseded_envelopes(c, sent.message_id))
    assert kept == first

    bundle = tmp_path / "evidence.pb"
    directory = str(quiet.sim(XA).directory)
    exported = CliRunner().invoke(
        cli_app, ["audit", "export", directory, sent.message_id, "-o", str(bundle)]
    )
    assert exported.exit_code == 0, exported.output
    trust_file = FederationLayout(tmp_path / "federation").trust_list(version)
    verified = CliRunner().invoke(
        cli_app,
        ["audit", "verify", "--bundle", str(bundle), "--trust-list", str(trust_file), "--json"],
    )
    assert verified.exit_code == 0, verified.output
    assert "superseded envelope signed by xa-police" in verified.output


async def test_a_resigned_copy_of_a_message_already_held_gets_the_same_answer(
    quiet: Federation, clock: ManualClock, tmp_path: Path
) -> None:
    """XB stored the message but its receipt never reached XA; XA's key is revoked meanwhile."""
    a, b = quiet.node(XA), quiet.node(XB)
    b_id = quiet.sim(XB).node_id
    submitted = await quiet.client(XA).submit(_referral([b_id], "XA-1", "Receipt lost."))
    first = await a.context.store.read(lambda c: load_envelope(c, submitted.message_id))
    assert first is not None
    await deliver_as(a, b, first)  # arrives; the answer is lost on the way back

    await _rotate_and_revoke(quiet, clock, tmp_path, XA, [XB])
    assert await b.refresh_trust()
    clock.advance(dt.timedelta(hours=1))
    assert await _drain(a) == 1

    assert await _states(a, [submitted.message_id]) == ["delivered"]
    assert len(await _inbox_events(b, submitted.message_id)) == 1, "stored once"
    (again,) = await _audit(b, "notice.received_resigned")
    assert again["first_envelope_digest"] == first.digest().hex()


async def _inbox_events(node: Node, message_id: str) -> list[int]:
    query = select(INBOX_EVENTS.c.sequence).where(INBOX_EVENTS.c.message_id == message_id)
    return await node.context.store.read(lambda c: list(c.execute(query).scalars()))


def _signed_bytes(header: bytes) -> bytes:
    return encode("exchange.v1.EnvelopeHeader", header)


async def test_a_sealing_key_rotated_while_serving_opens_old_and_new_payloads(
    quiet: Federation, clock: ManualClock, tmp_path: Path
) -> None:
    """No restart: adopting the list that names its new key makes the node load it."""
    a_sim, b_sim = quiet.sim(XA), quiet.sim(XB)
    a, b = quiet.node(XA), quiet.node(XB)
    fed = tmp_path / "federation"
    before = await quiet.client(XA).submit(_referral([b_sim.node_id], "XA-1", "Old key."))
    assert await _drain(a) == 1
    old_sealing = b.context.identity.sealing_key_id

    rotated = node_admin.rotate_keys(b_sim.directory, signing=False, sealing=True, passphrase=None)
    clock.advance(dt.timedelta(minutes=1))
    federation_admin.add_node(fed, b_sim.directory / "enrolment.json", now=clock.now())
    for steward in ("steward-1", "steward-2"):
        federation_admin.sign_draft(fed, steward, None)
    path, _ = federation_admin.publish(fed, now=clock.now())
    for sim in (a_sim, b_sim):
        node_admin.update_trust(sim.directory, path, now=clock.now())
    assert await b.refresh_trust()
    assert set(b.context.identity.sealing_keys) == {old_sealing, rotated["sealing"]}
    assert await a.refresh_trust()
    clock.advance(dt.timedelta(minutes=1))

    after = await quiet.client(XA).submit(_referral([b_sim.node_id], "XA-2", "New key."))
    assert await _drain(a) == 1
    assert await _states(a, [after.message_id]) == ["delivered"]
    for submitted, sealed_to in ((before, old_sealing), (after, rotated["sealing"])):
        stored = await b.context.store.read(lambda c, m=submitted.message_id: load_envelope(c, m))
        assert stored is not None
        payload = envelope_pb2.SealedPayload.FromString(stored.sealed_payload)
        assert [w.recipient_key_id for w in payload.wrapped_keys] == [sealed_to]
        opened = await quiet.client(XB).get_notice(submitted.message_id)
        assert opened.notice.HasField("case_referral")
