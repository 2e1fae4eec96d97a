"""The audit log of running nodes: signed heads, proofs over both ports, peers' heads.

An auditor proves what a node did from its signed head; peers fetch each
other's heads after deliveries and catch a log that was rewritten or shown
differently to different peers.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import delete, update

from exchange import merkle
from exchange._encoding import encode
from exchange._proto.exchange.v1 import audit_pb2, federation_pb2_grpc
from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange.audit import AuditRecord, check_log
from exchange.auditing import AuditLog
from exchange.checkpoint import SignedTreeHead, TreeHead
from exchange.clock import ManualClock
from exchange.errors import AuditError, PeerUnreachableError
from exchange.harness import samples
from exchange.node import Node
from exchange.peer_heads import (
    SELF_PROBLEM,
    HeadCheck,
    PeerHeadWatcher,
    audit_problem,
    unproven_problem,
)
from exchange.rpc import convert
from exchange.rpc.peers import PeerTransport, channel_options
from exchange.store import audit_heads, audit_log, inbox
from exchange.store.tables import AUDIT_ENTRIES, AUDIT_HEAD, AUDIT_NODES, AUDIT_TREE_HEADS
from exchange.trust import TrustedNode
from tests.conftest import DatabaseFactory
from tests.live import Federation, start_federation
from tests.unit._trees import Tree

pytestmark = pytest.mark.asyncio


async def until(probe, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await probe():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def delivered(federation: Federation) -> str:
    """A referral from XA to XB, delivered; returns its message id."""
    client = federation.client(0)
    submitted = await client.submit(
        samples.case_referral([federation.sim(1).node_id], "XA-2026-0042", "Audit test.")
    )
    message_id = submitted.message_id

    async def done() -> bool:
        status = await client.delivery_status(message_id)
        return all(r.state == apb.DELIVERY_STATE_DELIVERED for r in status.recipients)

    await until(done)
    return message_id


async def test_an_auditor_proves_a_delivery_from_the_signed_head(federation: Federation) -> None:
    message_id = await delivered(federation)
    a = federation.node(0)
    await AuditLog(a.context).issue_head(force=True)
    auditor = federation.auditor(0)

    response = await auditor.audit_head()
    head = convert.signed_tree_head(response.head).verify(a.context.trust, a.context.node_id)
    entries = []
    while len(entries) < head.size:
        page = await auditor.audit_entries(len(entries), 1000)
        entries += [convert.logged_entry(e) for e in page.entries]
    assert check_log(entries[: head.size], [head]).ok
    (delivery,) = [
        e for e in entries if e.action == "notice.delivered" and e.message_id == message_id
    ]
    proof = await auditor.inclusion_proof(delivery.sequence, head.size)
    assert convert.logged_entry(proof.entry) == delivery
    merkle.verify_inclusion(delivery.leaf_hash, delivery.index, head.size, proof.path, head.root)


async def test_consistency_between_two_heads_is_proven(federation: Federation) -> None:
    a = federation.node(0)
    audit = AuditLog(a.context)
    await audit.issue_head(force=True)
    first = TreeHead.parse((await audit.latest_head()).text)  # type: ignore[union-attr]
    await delivered(federation)
    await audit.issue_head(force=True)
    second = TreeHead.parse((await audit.latest_head()).text)  # type: ignore[union-attr]
    assert second.size > first.size

    proof = await federation.auditor(0).consistency_proof(first.size, second.size)
    merkle.verify_consistency(first.size, second.size, first.root, second.root, proof.path)


async def test_no_head_is_signed_for_a_log_that_has_not_grown(federation: Federation) -> None:
    audit = AuditLog(federation.node(0).context)
    await audit.issue_head(force=True)
    assert await audit.issue_head(force=True) is None


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.inclusion_proof(0, 1), "sequence"),
        (lambda c: c.inclusion_proof(5, 4), "sequence"),
        (lambda c: c.inclusion_proof(1, 10**9), "tree_size"),
        (lambda c: c.consistency_proof(0, 1), "first_size"),
        (lambda c: c.consistency_proof(3, 2), "second_size"),
        (lambda c: c.consistency_proof(1, 10**9), "second_size"),
    ],
    ids=[
        "sequence-zero",
        "sequence-beyond-tree",
        "tree-beyond-log",
        "first-zero",
        "second-below-first",
        "second-beyond-log",
    ],
)
async def test_proof_requests_out_of_range_name_the_field(
    federation: Federation, call, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(federation.auditor(0))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (refused.value.details() or "")


async def test_an_inclusion_proof_before_any_head_is_a_failed_precondition(
    tmp_path: Path, databases: DatabaseFactory
) -> None:
    # XA's clock stands before its log began, so no entry has waited long enough for a head.
    clock = ManualClock(dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    running = await start_federation(tmp_path, databases, clocks={"xa-police": clock})
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await running.auditor(0).inclusion_proof(1)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no tree head" in (refused.value.details() or "")
        assert not (await running.auditor(0).audit_head()).HasField("head")
    finally:
        await running.close()


async def test_a_case_worker_may_not_read_audit_proofs(federation: Federation) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await federation.client(0).audit_head()
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_peer_gets_hashes_but_never_entries(federation: Federation) -> None:
    a, b = federation.node(0), federation.node(1)
    await AuditLog(a.context).issue_head(force=True)
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{a.federation_port}",
        b.tls.channel_credentials(),
        options=channel_options(a.context.node_id),
    ) as channel:
        stub = federation_pb2_grpc.FederationStub(channel)
        head = await stub.GetAuditHead(audit_pb2.GetAuditHeadRequest(), timeout=5)
        parsed = convert.signed_tree_head(head.head).verify(b.context.trust, a.context.node_id)
        proof = await stub.GetInclusionProof(
            audit_pb2.GetInclusionProofRequest(sequence=1, tree_size=parsed.size), timeout=5
        )
    assert not proof.HasField("entry")
    merkle.verify_inclusion(proof.leaf_hash, 0, parsed.size, proof.path, parsed.root)


async def test_peers_keep_each_others_heads_after_a_delivery(federation: Federation) -> None:
    await delivered(federation)
    a, b = federation.node(0), federation.node(1)

    async def held_by_both() -> bool:
        by_a = await a.context.store.read(lambda c: audit_heads.peer_head(c, b.context.node_id))
        by_b = await b.context.store.read(lambda c: audit_heads.peer_head(c, a.context.node_id))
        return by_a is not None and by_b is not None

    await until(held_by_both)
    assert a.context.health.serving
    assert b.context.health.serving


async def test_a_rewritten_peer_log_is_evidence_an_alert_and_a_health_problem(
    federation: Federation, quiet_a: Node
) -> None:
    a, b = quiet_a, federation.node(1)
    transport = _transport(a)
    watcher = PeerHeadWatcher(a.context, transport)
    peer = a.context.trust.nodes[b.context.node_id]
    await AuditLog(b.context).issue_head(force=True)
    assert await watcher.check(peer) in {HeadCheck.FIRST, HeadCheck.UNCHANGED}

    await _rewrite_history(b)
    await AuditLog(b.context).issue_head(force=True)

    assert await watcher.check(peer) == HeadCheck.CONFLICT
    (conflict,) = await a.context.store.read(audit_heads.conflicts)
    assert conflict.node_id == b.context.node_id
    entries = await a.context.store.read(lambda c: list(audit_log.iter_entries(c)))
    assert [e.peer_node_id for e in entries if e.action == "audit.peer_inconsistent"] == [
        b.context.node_id
    ]
    assert audit_problem(b.context.node_id) in a.context.health.problems()
    (alert,) = await a.context.store.read(lambda c: inbox.events_after(c, 0, 1000)[-1:])
    assert (alert.event_type, alert.peer_node_id) == (inbox.AUDIT_INCONSISTENT, peer.node_id)
    # The held head stays what was seen first: the next look finds the conflict again,
    # and keeps the node NOT_SERVING, but the evidence and the alert are not repeated.
    assert await watcher.check(peer) == HeadCheck.CONFLICT
    assert len(await a.context.store.read(audit_heads.conflicts)) == 1
    alerts = await a.context.store.read(lambda c: inbox.events_after(c, 0, 1000))
    assert [e.event_type for e in alerts].count(inbox.AUDIT_INCONSISTENT) == 1
    await transport.close()


async def test_a_conflict_on_record_keeps_the_restarted_node_not_serving(
    federation: Federation, quiet_a: Node
) -> None:
    a, b = quiet_a, federation.node(1)
    peer = a.context.trust.nodes[b.context.node_id]
    await a.context.store.write(
        lambda c: audit_heads.put_peer_head(c, peer.node_id, _head(b, HONEST, 21), 21, 0)
    )
    scripted = ScriptedPeer(head=_head(b, FORKED, 21), tree=FORKED)
    assert await PeerHeadWatcher(a.context, scripted).check(peer) == HeadCheck.CONFLICT
    await asyncio.to_thread(a.context.store.close)

    restarted = await federation.start(federation.sim(0).node_id)

    assert audit_problem(peer.node_id) in restarted.context.health.problems()
    sim = federation.sim(0)
    credentials = grpc.ssl_channel_credentials(sim.authority_certificate)
    async with grpc.aio.secure_channel(sim.authority_address, credentials) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="exchange.v1.Authority"), timeout=5
        )
    assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def _rewrite_history(node: Node) -> None:
    """Replace the node's whole log by a longer, different one, as a forger with the DB would."""

    def rewrite(connection) -> None:
        size = audit_log.size(connection)
        for table in (AUDIT_ENTRIES, AUDIT_NODES, AUDIT_TREE_HEADS):
            connection.execute(delete(table))
        connection.execute(update(AUDIT_HEAD).values(sequence=0, frontier=b""))
        forged = AuditRecord(occurred_at=node.context.clock.now(), actor="admin", action="x")
        audit_log.append(connection, [forged] * (size + 3))

    # On a connection of its own, as a forger would: not a write of the node's own.
    await asyncio.to_thread(node.context.store.store.write, rewrite)


# --- the watcher's rules, against a peer that says what the test wants --------------------------


@dataclasses.dataclass
class ScriptedPeer:
    """A peer's Federation audit calls, answered from a script."""

    head: SignedTreeHead | None = None
    tree: Tree | None = None
    unreachable: bool = False
    refuses_proofs: bool = False
    held: list[tuple[str, SignedTreeHead]] = dataclasses.field(default_factory=list)

    async def audit_head(self, peer: TrustedNode, timeout: float) -> SignedTreeHead | None:
        if self.unreachable:
            raise PeerUnreachableError("UNAVAILABLE: down")
        return self.head

    async def consistency_proof(
        self, peer: TrustedNode, first: int, second: int, timeout: float
    ) -> list[bytes]:
        if self.refuses_proofs:
            raise AuditError(f"{peer.node_id} refused a consistency proof: FAILED_PRECONDITION")
        assert self.tree is not None
        return self.tree.proof(first, second)

    async def held_heads(
        self, peer: TrustedNode, timeout: float
    ) -> list[tuple[str, SignedTreeHead]]:
        return self.held


HONEST = Tree([bytes([i]) for i in range(40)])
FORKED = Tree([*(bytes([i]) for i in range(10)), b"forged", *(bytes([i]) for i in range(11, 40))])


def _head(node: Node, tree: Tree, size: int, *, node_id: str | None = None) -> SignedTreeHead:
    head = TreeHead(
        node_id or node.context.node_id, size, tree.mth(0, size), node.context.clock.now()
    )
    return SignedTreeHead.sign(head, node.context.identity.signing_key)


@pytest.fixture
async def quiet_a(federation: Federation) -> AsyncIterator[Node]:
    """XA loaded but not started: no background watcher races the test's own checks."""
    await federation.crash(federation.sim(0).node_id)
    node = Node.load(federation.sim(0).directory)
    try:
        yield node
    finally:
        await asyncio.to_thread(node.context.store.close)


# (held head, offered head, outcome): heads as (tree, size); None: nothing held.
RULES = {
    "first head kept": (None, (HONEST, 8), HeadCheck.FIRST),
    "same head again": ((HONEST, 8), (HONEST, 8), HeadCheck.UNCHANGED),
    "consistent growth": ((HONEST, 8), (HONEST, 21), HeadCheck.EXTENDED),
    "growth from a power of two": ((HONEST, 16), (HONEST, 17), HeadCheck.EXTENDED),
    "log shrank": ((HONEST, 21), (HONEST, 8), HeadCheck.CONFLICT),
    "split view: two roots for one size": ((HONEST, 21), (FORKED, 21), HeadCheck.CONFLICT),
    "rewritten history under the held head": ((HONEST, 16), (FORKED, 30), HeadCheck.CONFLICT),
    "change after the held head is fine": ((HONEST, 8), (FORKED, 30), HeadCheck.EXTENDED),
}


@pytest.mark.parametrize(
    ("held", "offered", "outcome"), list(RULES.values()), ids=[k.replace(" ", "-") for k in RULES]
)
async def test_head_rules(
    federation: Federation, quiet_a: Node, held, offered, outcome: HeadCheck
) -> None:
    a, b = quiet_a, federation.node(1)
    peer = a.context.trust.nodes[b.context.node_id]
    if held is not None:
        signed = _head(b, *held)
        await a.context.store.write(
            lambda c: audit_heads.put_peer_head(c, peer.node_id, signed, held[1], 0)
        )
    scripted = ScriptedPeer(head=_head(b, *offered), tree=offered[0])

    assert await PeerHeadWatcher(a.context, scripted).check(peer) == outcome
    kept = await a.context.store.read(lambda c: audit_heads.peer_head(c, peer.node_id))
    expected_size = offered[1] if outcome in {HeadCheck.FIRST, HeadCheck.EXTENDED} else held[1]
    assert TreeHead.parse(kept.text).size == expected_size  # type: ignore[union-attr]
    assert (audit_problem(peer.node_id) in a.context.health.problems()) == (
        outcome == HeadCheck.CONFLICT
    )
    if outcome == HeadCheck.CONFLICT:
        (conflict,) = await a.context.store.read(audit_heads.conflicts)
        _assert_self_contained(conflict)


def _assert_self_contained(conflict: audit_heads.Conflict) -> None:
    """The evidence proves the contradiction to a third party, from what is stored alone."""
    held, offered = TreeHead.parse(conflict.held.text), TreeHead.parse(conflict.offered.text)
    if held.size == offered.size:
        assert held.root != offered.root
        assert conflict.proof == ()
        return
    small, large = sorted((held, offered), key=lambda h: h.size)
    if conflict.proof:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(
                small.size, large.size, small.root, large.root, list(conflict.proof)
            )
    else:
        assert "shrank" in conflict.reason  # the node's own newer head is smaller


@pytest.mark.parametrize(
    ("scripted", "outcome"),
    [
        pytest.param(lambda a, b, c: ScriptedPeer(), HeadCheck.NO_HEAD, id="no-head-yet"),
        pytest.param(
            lambda a, b, c: ScriptedPeer(unreachable=True), HeadCheck.UNREACHABLE, id="unreachable"
        ),
        pytest.param(
            lambda a, b, c: ScriptedPeer(head=_head(c, HONEST, 8, node_id=b.context.node_id)),
            HeadCheck.REFUSED,
            id="signed-by-another-node",
        ),
        pytest.param(
            lambda a, b, c: ScriptedPeer(head=_head(b, HONEST, 8, node_id=c.context.node_id)),
            HeadCheck.REFUSED,
            id="head-of-another-log",
        ),
        pytest.param(
            lambda a, b, c: ScriptedPeer(
                head=dataclasses.replace(_head(b, HONEST, 8), signature=bytes(64))
            ),
            HeadCheck.REFUSED,
            id="bad-signature",
        ),
    ],
)
async def test_what_proves_nothing_is_not_kept(
    federation: Federation, quiet_a: Node, scripted, outcome: HeadCheck
) -> None:
    a, b, c = quiet_a, federation.node(1), federation.node(2)
    peer = a.context.trust.nodes[b.context.node_id]

    assert await PeerHeadWatcher(a.context, scripted(a, b, c)).check(peer) == outcome
    assert (
        await a.context.store.read(lambda conn: audit_heads.peer_head(conn, peer.node_id)) is None
    )
    assert a.context.health.serving


def _transport(node: Node) -> PeerTransport:
    return PeerTransport(node.tls.channel_credentials())


async def test_a_peer_that_will_not_prove_its_newer_head_is_reported_until_it_does(
    federation: Federation, quiet_a: Node
) -> None:
    a, b = quiet_a, federation.node(1)
    peer = a.context.trust.nodes[b.context.node_id]
    await a.context.store.write(
        lambda c: audit_heads.put_peer_head(c, peer.node_id, _head(b, HONEST, 8), 8, 0)
    )
    scripted = ScriptedPeer(head=_head(b, FORKED, 30), tree=FORKED, refuses_proofs=True)
    watcher = PeerHeadWatcher(a.context, scripted)

    assert await watcher.check(peer) == HeadCheck.UNPROVEN
    assert unproven_problem(peer.node_id) in a.context.health.problems()
    scripted.refuses_proofs = False
    assert await watcher.check(peer) == HeadCheck.EXTENDED
    assert a.context.health.serving


# --- cross-checks: what other peers hold ----------------------------------------------------


async def _holding(a: Node, b: Node, tree: Tree, size: int) -> TrustedNode:
    peer = a.context.trust.nodes[b.context.node_id]
    signed = _head(b, tree, size)
    await a.context.store.write(
        lambda c: audit_heads.put_peer_head(c, peer.node_id, signed, size, 0)
    )
    return peer


# (what XA holds of XB, what XC says it holds of XB, XB's tree for proofs, outcome)
GOSSIP = {
    "same head": ((HONEST, 21), (HONEST, 21), HONEST, HeadCheck.UNCHANGED),
    "split view: another root at the same size": (
        (HONEST, 21),
        (FORKED, 21),
        HONEST,
        HeadCheck.CONFLICT,
    ),
    "older head, a prefix of ours": ((HONEST, 21), (HONEST, 8), HONEST, HeadCheck.UNCHANGED),
    "older head of a forked log": ((HONEST, 21), (FORKED, 16), HONEST, HeadCheck.CONFLICT),
    "newer head, consistent": ((HONEST, 8), (HONEST, 30), HONEST, HeadCheck.EXTENDED),
    "newer head of a forked log": ((HONEST, 16), (FORKED, 30), FORKED, HeadCheck.CONFLICT),
}


@pytest.mark.parametrize(
    ("ours", "theirs", "proofs", "outcome"),
    list(GOSSIP.values()),
    ids=[k.replace(" ", "-").replace(":", "") for k in GOSSIP],
)
async def test_heads_other_peers_hold_are_held_against_ours(
    federation: Federation, quiet_a: Node, ours, theirs, proofs, outcome: HeadCheck
) -> None:
    a, b, c = quiet_a, federation.node(1), federation.node(2)
    await _holding(a, b, *ours)
    witness = a.context.trust.nodes[c.context.node_id]
    scripted = ScriptedPeer(tree=proofs, held=[(b.context.node_id, _head(b, *theirs))])

    results = await PeerHeadWatcher(a.context, scripted).cross_check(witness)

    assert results == {b.context.node_id: outcome}
    assert (audit_problem(b.context.node_id) in a.context.health.problems()) == (
        outcome == HeadCheck.CONFLICT
    )
    if outcome == HeadCheck.CONFLICT:
        (conflict,) = await a.context.store.read(audit_heads.conflicts)
        _assert_self_contained(conflict)


async def test_a_peer_holding_a_head_our_store_no_longer_gives_reveals_a_rewrite(
    federation: Federation, quiet_a: Node
) -> None:
    a, c = quiet_a, federation.node(2)
    await AuditLog(a.context).issue_head(force=True)
    given_out = await AuditLog(a.context).latest_head()
    assert given_out is not None
    witness = a.context.trust.nodes[c.context.node_id]
    watcher = PeerHeadWatcher(a.context, ScriptedPeer(held=[(a.context.node_id, given_out)]))
    assert await watcher.cross_check(witness) == {a.context.node_id: HeadCheck.UNCHANGED}

    await _rewrite_history(a)

    assert await watcher.cross_check(witness) == {a.context.node_id: HeadCheck.CONFLICT}
    assert SELF_PROBLEM in a.context.health.problems()


XB_ORIGIN = b"opsc-exchange audit xb-prosecution\n"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            XB_ORIGIN + b"8\n{root}\n2026-02-30T00:00:00.000Z\n",
            id="no-such-day",
        ),
        pytest.param(
            XB_ORIGIN + b"9999999999999999999\n{root}\n2026-02-01T00:00:00.000Z\n",
            id="size-beyond-64-bits",
        ),
    ],
)
async def test_a_malformed_head_is_refused_without_stopping_the_watch(
    federation: Federation, quiet_a: Node, text: bytes
) -> None:
    a, b = quiet_a, federation.node(1)
    peer = a.context.trust.nodes[b.context.node_id]
    body = text.replace(b"{root}", base64.b64encode(HONEST.mth(0, 8)))
    forged = SignedTreeHead(
        body,
        b.context.identity.signing_key_id,
        b.context.identity.signing_key.sign(encode("exchange.v1.Checkpoint", body)),
    )
    assert await PeerHeadWatcher(a.context, ScriptedPeer(head=forged)).check(peer) == (
        HeadCheck.REFUSED
    )
