"""Asking peers about identifiers without showing them (the querying side of `exchange.matching`).

For each peer, concurrently and within the caller's deadline: blind every
identifier afresh (blinds are never reused across peers, so peers comparing
notes cannot link one query), have the peer evaluate them, unblind into
tokens, fetch the buckets of the tokens' prefixes, and open the hits sealed
under our own tokens. Each peer's answer per identifier is hit (case reference
and contact point), no hit, or unavailable (not reached, refused, too slow).

The client is rate limited by the number of identifiers it asks about; the
query is audited with the client, the counts and which peers had hits, never
the identifiers; a query over the limit is audited as refused (exchange.refusals).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Sequence
from typing import Protocol

from exchange import matching
from exchange.audit import AuditRecord
from exchange.clients import Principal
from exchange.errors import AuditError, PeerUnreachableError, ValidationError
from exchange.identifiers import Identifier
from exchange.oprf import OprfError
from exchange.ratelimit import RateLimiter
from exchange.refusals import RefusalAudit
from exchange.registering import RawIdentifier, normalized
from exchange.runtime import NodeContext
from exchange.store import audit_log
from exchange.trust import TrustedNode

__all__ = ["Answer", "MatchTransport", "Outcome", "Querier"]

MAX_QUERY_IDENTIFIERS = 64
PREFIX_BITS = 16
DEFAULT_DEADLINE_MS, MIN_DEADLINE_MS, MAX_DEADLINE_MS = 5_000, 100, 30_000


class MatchTransport(Protocol):
    async def evaluate_blinded(
        self, peer: TrustedNode, blinded: list[bytes], timeout: float
    ) -> tuple[list[bytes], int]: ...

    async def get_bucket(
        self, peer: TrustedNode, key_version: int, prefix: int, prefix_bits: int, timeout: float
    ) -> list[matching.BucketEntry]: ...


class Outcome(enum.Enum):
    NO_HIT = "no_hit"
    HIT = "hit"
    UNAVAILABLE = "unavailable"


@dataclasses.dataclass(frozen=True)
class Answer:
    peer_node_id: str
    identifier_index: int
    outcome: Outcome
    hits: tuple[matching.Hit, ...] = ()
    reason: str = ""


@dataclasses.dataclass
class Querier:
    context: NodeContext
    transport: MatchTransport
    limiter: RateLimiter
    refusals: RefusalAudit

    async def query(
        self,
        principal: Principal,
        identifiers: Sequence[RawIdentifier],
        peer_node_ids: Sequence[str],
        deadline_ms: int,
    ) -> list[Answer]:
        """Every chosen peer's answer for every identifier.

        Raises:
            ValidationError: a field is wrong (named).
            ResourceLimitError: the client's rate limit.
        """
        if not 1 <= len(identifiers) <= MAX_QUERY_IDENTIFIERS:
            raise ValidationError("identifiers", f"give 1 to {MAX_QUERY_IDENTIFIERS}")
        deadline_ms = deadline_ms or DEFAULT_DEADLINE_MS
        if not MIN_DEADLINE_MS <= deadline_ms <= MAX_DEADLINE_MS:
            raise ValidationError(
                "deadline_ms", f"must be {MIN_DEADLINE_MS} to {MAX_DEADLINE_MS} milliseconds"
            )
        wanted = [normalized(raw, i) for i, raw in enumerate(identifiers)]
        peers = self._peers(peer_node_ids)
        async with self.refusals.audited("Query", principal.actor):
            self.limiter.take(principal.client_id, len(wanted))
        timeout = deadline_ms / 1000
        answers = await asyncio.gather(*(self._ask(peer, wanted, timeout) for peer in peers))
        flat = [answer for per_peer in answers for answer in per_peer]
        await self._audit(principal, len(wanted), peers, flat)
        return flat

    def _peers(self, peer_node_ids: Sequence[str]) -> list[TrustedNode]:
        trust = self.context.trust
        if not peer_node_ids:
            return [
                node
                for node in trust.nodes.values()
                if node.active and node.node_id != self.context.node_id
            ]
        chosen = []
        for i, node_id in enumerate(peer_node_ids):
            node = trust.active_node(node_id)
            if node is None or node_id == self.context.node_id or node in chosen:
                raise ValidationError(f"peer_node_ids[{i}]", "is not another active node")
            chosen.append(node)
        return chosen

    async def _ask(
        self, peer: TrustedNode, wanted: list[Identifier], timeout: float
    ) -> list[Answer]:
        try:
            # Not asyncio.wait_for, which on Python 3.11 can swallow the call's cancellation.
            async with asyncio.timeout(timeout):
                found = await self._hits(peer, wanted, timeout)
        except (PeerUnreachableError, AuditError, OprfError, TimeoutError) as exc:
            reason = "no answer within the deadline" if isinstance(exc, TimeoutError) else str(exc)
            return [
                Answer(peer.node_id, i, Outcome.UNAVAILABLE, reason=reason[:200])
                for i in range(len(wanted))
            ]
        return [
            Answer(peer.node_id, i, Outcome.HIT, tuple(hits))
            if hits
            else Answer(peer.node_id, i, Outcome.NO_HIT)
            for i, hits in enumerate(found)
        ]

    async def _hits(
        self, peer: TrustedNode, wanted: list[Identifier], timeout: float
    ) -> list[list[matching.Hit]]:
        blinded = [matching.blind_query(identifier) for identifier in wanted]
        evaluated, key_version = await self.transport.evaluate_blinded(
            peer, [element for _, element in blinded], timeout
        )
        if len(evaluated) != len(blinded):
            raise AuditError(f"{peer.node_id} answered {len(evaluated)} of {len(blinded)}")
        tokens = [
            matching.query_token(blind, element)
            for (blind, _), element in zip(blinded, evaluated, strict=True)
        ]
        prefixes = sorted({matching.bucket(token, PREFIX_BITS) for token in tokens})
        buckets = dict(
            zip(
                prefixes,
                await asyncio.gather(
                    *(
                        self.transport.get_bucket(peer, key_version, p, PREFIX_BITS, timeout)
                        for p in prefixes
                    )
                ),
                strict=True,
            )
        )
        return [
            matching.find_hit(token, buckets[matching.bucket(token, PREFIX_BITS)])
            for token in tokens
        ]

    async def _audit(
        self, principal: Principal, count: int, peers: list[TrustedNode], answers: list[Answer]
    ) -> None:
        hit_peers = sorted({a.peer_node_id for a in answers if a.outcome is Outcome.HIT})
        unavailable = sorted({a.peer_node_id for a in answers if a.outcome is Outcome.UNAVAILABLE})
        record = AuditRecord(
            occurred_at=self.context.clock.now(),
            actor=principal.actor,
            action="match.queried",
            details={
                "identifiers": str(count),
                "peers": ",".join(p.node_id for p in peers)[:500],
                "hits_from": ",".join(hit_peers)[:500],
                "unavailable": ",".join(unavailable)[:500],
            },
        )
        await audit_log.record(self.context.store, record)
