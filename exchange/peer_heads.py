"""Keeping every node's audit log honest: fetch, compare and keep each other's signed heads.

Direct checks. After a delivery to or from a peer, and on a timer for every
active peer, the node asks the peer for its newest signed tree head and checks
it against the one it holds:

1. The head must be signed by the peer with a key the trust list allows now.
2. A head of the size held must be the held one (same root); a smaller head
   from the peer itself means its log shrank.
3. A larger head must come with a consistency proof from the held head
   (RFC 9162 2.1.4): the peer's old log is a prefix of its new one.

Cross-checks (gossip). On the timer, the node also asks each peer for the heads
*it* holds of other nodes (`GetHeldHeads`) and holds each against its own:
a node that showed two peers two different logs (a split view) is caught by its
own two signatures; heads of different sizes are settled by a consistency proof
asked of the node they are about. A head a peer holds of *this* node must match
this node's own log: if it does not, this node's store was rewritten after the
head was given out.

A contradiction is evidence signed by the node itself: both heads are kept
(`audit_conflicts`, once per pair), the finding is audited, put in the
authority's inbox as an alert (WatchInbox), logged as an error and reported
through health until an operator has looked into it. The held head is not
replaced, so the node keeps checking against what it saw. A peer that answers
but will not prove a larger head consistent is reported through health
(unproven) until a later proof succeeds. A head that is not validly signed, or
a peer that cannot be reached, proves nothing and is only logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Callable
from typing import Protocol

from sqlalchemy import Connection

from exchange.audit import AuditRecord
from exchange.checkpoint import SignedTreeHead, TreeHead
from exchange.clock import to_millis
from exchange.errors import AuditError, PeerUnreachableError, StoreUnavailableError
from exchange.merkle import ProofError, verify_consistency
from exchange.runtime import NodeContext, Signal
from exchange.store import audit_heads, audit_log, inbox
from exchange.trust import TrustedNode

__all__ = [
    "SELF_PROBLEM",
    "HeadCheck",
    "PeerHeadWatcher",
    "PeerHeadsTransport",
    "audit_problem",
    "report_conflict",
    "unproven_problem",
]

_TIMEOUT_SECONDS = 5.0
# At most one look per peer this often, however many deliveries there are.
_MIN_GAP_SECONDS = 1.0
# The health problem under which this node's own log is found rewritten.
SELF_PROBLEM = "audit_self_inconsistent"


def audit_problem(node_id: str) -> str:
    """The health problem name under which a contradiction in `node_id`'s log is reported."""
    return f"audit_inconsistent:{node_id}"


def unproven_problem(node_id: str) -> str:
    """The health problem name while `node_id` will not prove its newer head consistent."""
    return f"audit_unproven:{node_id}"


async def report_conflict(context: NodeContext, node_id: str, problem: str) -> None:
    """Make the node NOT_SERVING for a contradiction in `node_id`'s log, saying what it is."""
    await context.health.report(audit_problem(node_id), f"audit log of {node_id}: {problem}")


class PeerHeadsTransport(Protocol):
    async def audit_head(self, peer: TrustedNode, timeout: float) -> SignedTreeHead | None: ...

    async def consistency_proof(
        self, peer: TrustedNode, first: int, second: int, timeout: float
    ) -> list[bytes]: ...

    async def held_heads(
        self, peer: TrustedNode, timeout: float
    ) -> list[tuple[str, SignedTreeHead]]: ...


class HeadCheck(enum.Enum):
    """What one look at a head found."""

    NO_HEAD = "the peer has signed no head yet"
    FIRST = "first head kept"
    UNCHANGED = "same head as held, or an older one proven a prefix of it"
    EXTENDED = "newer head, consistent with the held one"
    REFUSED = "head not validly signed by its node"
    UNREACHABLE = "peer unreachable"
    UNPROVEN = "newer head, but its node would not prove it consistent"
    CONFLICT = "head contradicts the held one"
    FAILED = "the check itself failed (logged)"


@dataclasses.dataclass
class PeerHeadWatcher:
    """Fetches and checks heads; see the module docstring."""

    context: NodeContext
    transport: PeerHeadsTransport
    # Whether this process does the timed rounds (the node's leader does; every
    # process still looks at the peers it just exchanged with).
    leads: Callable[[], bool] = lambda: True
    _last_look: dict[str, float] = dataclasses.field(default_factory=dict)

    async def check(self, peer: TrustedNode) -> HeadCheck:
        """Look at `peer`'s newest head once; never raises for what the peer does."""
        log = self.context.log.bind(peer=peer.node_id)
        try:
            offered = await self.transport.audit_head(peer, _TIMEOUT_SECONDS)
        except PeerUnreachableError as exc:
            log.info("audit.peer_head_unavailable", error=str(exc))
            return HeadCheck.UNREACHABLE
        if offered is None:
            return HeadCheck.NO_HEAD
        return await self._judge(peer, offered, from_itself=True)

    async def cross_check(self, witness: TrustedNode) -> dict[str, HeadCheck]:
        """Hold the heads `witness` holds of other nodes against ours (and our own log)."""
        try:
            held = await self.transport.held_heads(witness, _TIMEOUT_SECONDS)
        except PeerUnreachableError as exc:
            self.context.log.info(
                "audit.held_heads_unavailable", peer=witness.node_id, error=str(exc)
            )
            return {}
        results: dict[str, HeadCheck] = {}
        for node_id, signed in held[: len(self.context.trust.nodes)]:
            if node_id == witness.node_id or node_id in results:
                continue
            if node_id == self.context.node_id:
                results[node_id] = await self._check_own(signed, witness.node_id)
                continue
            subject = self.context.trust.active_node(node_id)
            if subject is not None:
                results[node_id] = await self._judge(subject, signed, from_itself=False)
        return results

    async def _judge(
        self, subject: TrustedNode, offered: SignedTreeHead, *, from_itself: bool
    ) -> HeadCheck:
        try:
            return await self._compare(subject, offered, from_itself=from_itself)
        except StoreUnavailableError as exc:
            # Our store, not the peer: checked again next round. No traceback to render
            # on the event loop for every peer while the database is away.
            self.context.log.warning(
                "audit.peer_check_deferred", peer=subject.node_id, error=str(exc)
            )
            return HeadCheck.FAILED
        except Exception as exc:
            # Whatever a peer sends must not stop the watching of every other peer.
            self.context.log.exception(
                "audit.peer_check_failed", peer=subject.node_id, error_type=type(exc).__name__
            )
            return HeadCheck.FAILED

    async def _compare(
        self, subject: TrustedNode, offered: SignedTreeHead, *, from_itself: bool
    ) -> HeadCheck:
        context = self.context
        node_id = subject.node_id
        try:
            head = offered.verify(context.trust, node_id, now=context.clock.now())
        except AuditError as exc:
            context.log.warning("audit.peer_head_refused", peer=node_id, reason=str(exc))
            return HeadCheck.REFUSED
        held_signed = await context.store.read(lambda c: audit_heads.peer_head(c, node_id))
        if held_signed is None:
            if not from_itself:
                return HeadCheck.UNCHANGED  # nothing of ours to hold it against yet
            await self._keep(node_id, offered, head)
            return HeadCheck.FIRST
        held = TreeHead.parse(held_signed.text)
        if head.size == held.size:
            if head.root != held.root:
                return await self._report(
                    node_id,
                    held_signed,
                    offered,
                    f"two different roots signed for {head.size} entries",
                )
            return HeadCheck.UNCHANGED
        if head.size < held.size and from_itself:
            return await self._report(
                node_id,
                held_signed,
                offered,
                f"the log shrank from {held.size} to {head.size} entries",
            )
        smaller, larger = (head, held) if head.size < held.size else (held, head)
        try:
            path = await self.transport.consistency_proof(
                subject, smaller.size, larger.size, _TIMEOUT_SECONDS
            )
        except PeerUnreachableError as exc:
            context.log.info("audit.peer_head_unavailable", peer=node_id, error=str(exc))
            return HeadCheck.UNREACHABLE
        except AuditError as exc:
            await context.health.report(unproven_problem(node_id), str(exc))
            return HeadCheck.UNPROVEN
        try:
            verify_consistency(smaller.size, larger.size, smaller.root, larger.root, path)
        except ProofError as exc:
            return await self._report(
                node_id,
                held_signed,
                offered,
                f"head at {larger.size} is not consistent with head at {smaller.size}: {exc}",
                proof=path,
            )
        await context.health.clear(unproven_problem(node_id))
        if head.size < held.size:
            return HeadCheck.UNCHANGED
        await self._keep(node_id, offered, head)
        return HeadCheck.EXTENDED

    async def _check_own(self, signed: SignedTreeHead, witness: str) -> HeadCheck:
        """A head of this node's log, as a peer holds it, against the log as stored now."""
        context = self.context
        try:
            head = signed.verify(context.trust, context.node_id)
        except AuditError as exc:
            context.log.warning("audit.own_head_refused", peer=witness, reason=str(exc))
            return HeadCheck.REFUSED

        def root_now(connection: Connection) -> bytes | None:
            if audit_log.size(connection) < head.size:
                return None
            return audit_log.root(connection, head.size)

        root = await context.store.read(root_now)
        if root == head.root:
            return HeadCheck.UNCHANGED
        problem = (
            f"{witness} holds a head of this node's log at {head.size} entries that the "
            "stored log no longer gives: the store was rewritten or truncated"
        )
        context.log.error("audit.self_inconsistent", peer=witness, tree_size=head.size)
        await context.health.report(SELF_PROBLEM, problem)
        return HeadCheck.CONFLICT

    async def _keep(self, node_id: str, signed: SignedTreeHead, head: TreeHead) -> None:
        fetched_at = to_millis(self.context.clock.now())

        def keep(connection: Connection) -> None:
            # Under the audit lock: the node's processes keep a peer's heads one at a time.
            audit_log.lock(connection)
            audit_heads.put_peer_head(connection, node_id, signed, head.size, fetched_at)

        await self.context.store.write(keep)

    async def _report(
        self,
        node_id: str,
        held: SignedTreeHead,
        offered: SignedTreeHead,
        problem: str,
        *,
        proof: list[bytes] | None = None,
    ) -> HeadCheck:
        """Record a contradiction once (with the failing proof, if one was given) and report it."""
        context = self.context
        now = context.clock.now()
        conflict = audit_heads.Conflict(
            node_id, to_millis(now), problem, held, offered, tuple(proof or ())
        )
        record = AuditRecord(
            occurred_at=now,
            actor=context.actor,
            action="audit.peer_inconsistent",
            peer_node_id=node_id,
            details={
                "reason": problem[:300],
                "held_head_size": str(TreeHead.parse(held.text).size),
                "offered_head_size": str(TreeHead.parse(offered.text).size),
            },
        )

        def commit(connection: Connection) -> bool:
            # Under the audit lock: another process of the node finding the same
            # contradiction at once records it only once.
            audit_log.lock(connection)
            if audit_heads.conflict_recorded(connection, node_id, held, offered):
                return False  # seen before: evidence, audit entry and alert exist
            audit_heads.insert_conflict(connection, conflict)
            (sequence,) = audit_log.append(connection, [record])
            inbox.insert_event(
                connection,
                inbox.InboxEvent(
                    sequence=sequence,
                    event_type=inbox.AUDIT_INCONSISTENT,
                    message_id="",
                    peer_node_id=node_id,
                    reason=problem[:500],
                    occurred_at=to_millis(now),
                ),
            )
            return True

        if await context.store.write(commit):
            context.inbox_changed.fire()
            context.log.error("audit.peer_inconsistent", peer=node_id, reason=problem)
        await report_conflict(context, node_id, problem)
        return HeadCheck.CONFLICT

    def _peers(self, node_ids: set[str] | None) -> list[TrustedNode]:
        return [
            node
            for node in self.context.trust.nodes.values()
            if node.active
            and node.node_id != self.context.node_id
            and (node_ids is None or node.node_id in node_ids)
        ]

    async def check_peers(self, node_ids: set[str] | None = None) -> dict[str, HeadCheck]:
        """Look at the given peers (default: every active peer), concurrently."""
        peers = self._peers(node_ids)
        results = await asyncio.gather(*(self.check(peer) for peer in peers))
        return {peer.node_id: result for peer, result in zip(peers, results, strict=True)}

    async def cross_check_peers(self) -> None:
        """Ask every active peer for the heads it holds, and hold them against ours."""
        for witness in self._peers(None):
            await self.cross_check(witness)

    async def run(self) -> None:
        """Check peers after deliveries and on the configured timer, until cancelled."""
        context = self.context
        interval = max(context.config.audit.peer_check_interval_seconds, _MIN_GAP_SECONDS)
        loop = asyncio.get_running_loop()
        # The first round waits one interval: peers starting alongside are not
        # dialled (and their channels not put into reconnect backoff) before they listen.
        next_round = loop.time() + interval
        while True:
            snapshot = context.peer_activity.snapshot()
            now = loop.time()
            timer = now >= next_round
            wanted: set[str] | None = None
            if timer and not self.leads():
                next_round = now + interval
                timer = False
            if timer:
                next_round = now + interval
                context.peers_heard_from.clear()
            else:
                wanted = {
                    node_id
                    for node_id in context.peers_heard_from
                    if now - self._last_look.get(node_id, -_MIN_GAP_SECONDS) >= _MIN_GAP_SECONDS
                }
                context.peers_heard_from.difference_update(wanted)
            try:
                if timer or wanted:
                    looked = await self.check_peers(wanted)
                    self._last_look.update(dict.fromkeys(looked, loop.time()))
                if timer:
                    await self.cross_check_peers()
            except Exception as exc:
                # The store may be busy; nothing here may end the watching.
                context.log.warning("audit.peer_check_deferred", error=repr(exc))
            wait = next_round - loop.time()
            if context.peers_heard_from:
                wait = min(wait, _MIN_GAP_SECONDS)
            await Signal.wait(snapshot, max(wait, 0.01))
