"""Keeping each peer's audit log honest: fetch its newest signed head, check it, keep it.

After a delivery to or from a peer, and on a timer for every active peer, the
node asks the peer for its newest signed tree head and checks it against the
one it holds:

1. The head must be signed by the peer with a key the trust list allows now.
2. A head no larger than the held one must be the held one (same root at the
   same size); a smaller log is a rewritten one.
3. A larger head must come with a consistency proof from the held head
   (RFC 9162 2.1.4): the peer's old log is a prefix of its new one.

A head that fails 2 or 3 is a contradiction signed by the peer itself: both
heads are kept as evidence (`audit_conflicts`), the finding is audited, put in
the authority's inbox as an alert (WatchInbox), logged as an error and reported
through health until an operator has looked into it.
The held head is not replaced, so the node keeps checking against what it saw.
A head that fails 1, or a peer that cannot be reached, proves nothing and is
only logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
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

__all__ = ["HeadCheck", "PeerHeadWatcher", "PeerHeadsTransport", "audit_problem", "report_conflict"]

_TIMEOUT_SECONDS = 5.0
# At most one look per peer this often, however many deliveries there are.
_MIN_GAP_SECONDS = 1.0


def audit_problem(node_id: str) -> str:
    """The health problem name under which a contradiction in `node_id`'s log is reported."""
    return f"audit_inconsistent:{node_id}"


async def report_conflict(context: NodeContext, node_id: str, problem: str) -> None:
    """Make the node NOT_SERVING for a contradiction in `node_id`'s log, saying what it is."""
    await context.health.report(audit_problem(node_id), f"audit log of {node_id}: {problem}")


class PeerHeadsTransport(Protocol):
    async def audit_head(self, peer: TrustedNode, timeout: float) -> SignedTreeHead | None: ...

    async def consistency_proof(
        self, peer: TrustedNode, first: int, second: int, timeout: float
    ) -> list[bytes]: ...


class HeadCheck(enum.Enum):
    """What one look at a peer's head found."""

    NO_HEAD = "the peer has signed no head yet"
    FIRST = "first head kept"
    UNCHANGED = "same head as held"
    EXTENDED = "newer head, consistent with the held one"
    REFUSED = "head not validly signed by the peer"
    UNREACHABLE = "peer unreachable"
    CONFLICT = "head contradicts the held one"


@dataclasses.dataclass
class PeerHeadWatcher:
    """Fetches and checks peers' heads; see the module docstring."""

    context: NodeContext
    transport: PeerHeadsTransport
    _last_look: dict[str, float] = dataclasses.field(default_factory=dict)

    async def check(self, peer: TrustedNode) -> HeadCheck:
        """Look at `peer`'s newest head once; never raises for what the peer does."""
        context = self.context
        log = context.log.bind(peer=peer.node_id)
        try:
            offered = await self.transport.audit_head(peer, _TIMEOUT_SECONDS)
        except PeerUnreachableError as exc:
            log.info("audit.peer_head_unavailable", error=str(exc))
            return HeadCheck.UNREACHABLE
        if offered is None:
            return HeadCheck.NO_HEAD
        now = context.clock.now()
        try:
            head = offered.verify(context.trust, peer.node_id, now=now)
        except AuditError as exc:
            log.warning("audit.peer_head_refused", reason=str(exc))
            return HeadCheck.REFUSED
        held_signed = await context.store.read(lambda c: audit_heads.peer_head(c, peer.node_id))
        if held_signed is None:
            await self._keep(peer.node_id, offered, head)
            return HeadCheck.FIRST
        held = TreeHead.parse(held_signed.text)
        problem = ""
        if head.size < held.size:
            problem = f"the log shrank from {held.size} to {head.size} entries"
        elif head.size == held.size:
            if head.root != held.root:
                problem = f"two different roots signed for {head.size} entries"
        else:
            try:
                path = await self.transport.consistency_proof(
                    peer, held.size, head.size, _TIMEOUT_SECONDS
                )
            except PeerUnreachableError as exc:
                log.info("audit.peer_head_unavailable", error=str(exc))
                return HeadCheck.UNREACHABLE
            try:
                verify_consistency(held.size, head.size, held.root, head.root, path)
            except ProofError as exc:
                problem = f"head at {head.size} is not consistent with head at {held.size}: {exc}"
        if problem:
            await self._report(peer.node_id, held_signed, offered, problem)
            return HeadCheck.CONFLICT
        if head.size == held.size:
            return HeadCheck.UNCHANGED
        await self._keep(peer.node_id, offered, head)
        return HeadCheck.EXTENDED

    async def _keep(self, node_id: str, signed: SignedTreeHead, head: TreeHead) -> None:
        fetched_at = to_millis(self.context.clock.now())
        await self.context.store.write(
            lambda c: audit_heads.put_peer_head(c, node_id, signed, head.size, fetched_at)
        )

    async def _report(
        self, node_id: str, held: SignedTreeHead, offered: SignedTreeHead, problem: str
    ) -> None:
        context = self.context
        now = context.clock.now()
        conflict = audit_heads.Conflict(node_id, to_millis(now), problem, held, offered)
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

        def commit(connection: Connection) -> None:
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

        await context.store.write(commit)
        context.inbox_changed.fire()
        context.log.error("audit.peer_inconsistent", peer=node_id, reason=problem)
        await report_conflict(context, node_id, problem)

    async def check_peers(self, node_ids: set[str] | None = None) -> dict[str, HeadCheck]:
        """Look at the given peers (default: every active peer), concurrently."""
        trust = self.context.trust
        peers = [
            node
            for node in trust.nodes.values()
            if node.active
            and node.node_id != self.context.node_id
            and (node_ids is None or node.node_id in node_ids)
        ]
        results = await asyncio.gather(*(self.check(peer) for peer in peers))
        return {peer.node_id: result for peer, result in zip(peers, results, strict=True)}

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
            if now >= next_round:
                wanted: set[str] | None = None
                next_round = now + interval
            else:
                wanted = {
                    node_id
                    for node_id in context.peers_heard_from
                    if now - self._last_look.get(node_id, -_MIN_GAP_SECONDS) >= _MIN_GAP_SECONDS
                }
            if wanted is None:
                context.peers_heard_from.clear()
            else:
                context.peers_heard_from.difference_update(wanted)
            if wanted is None or wanted:
                try:
                    looked = await self.check_peers(wanted)
                except StoreUnavailableError as exc:
                    context.log.warning("audit.peer_check_deferred", error=str(exc))
                    looked = {}
                self._last_look.update(dict.fromkeys(looked, loop.time()))
            wait = next_round - loop.time()
            if context.peers_heard_from:
                wait = min(wait, _MIN_GAP_SECONDS)
            await Signal.wait(snapshot, max(wait, 0.01))
