"""Answering other nodes' hit/no-hit queries (the holding side of `exchange.matching`).

Two calls, each rate limited per peer and audited with the peer and the size of
the work, never with what was asked: `evaluate` applies the node's OPRF key to
blinded elements (it cannot see the identifiers behind them); `bucket` returns
the index entries under a token prefix (tags and sealed hits, never tokens or
case references in clear).
"""

from __future__ import annotations

import dataclasses

from exchange.audit import AuditRecord
from exchange.errors import ValidationError
from exchange.match_keys import MatchKeys
from exchange.oprf import OprfError
from exchange.ratelimit import RateLimiter
from exchange.refusals import RefusalAudit
from exchange.runtime import NodeContext
from exchange.store import audit_log, match_index

__all__ = ["MAX_BLINDED", "MIN_PREFIX_BITS", "MatchResponder"]

MAX_BLINDED = 64
# Narrower prefixes would make buckets so small that a prefix all but names a token.
MIN_PREFIX_BITS, MAX_PREFIX_BITS = 8, 24


@dataclasses.dataclass
class MatchResponder:
    context: NodeContext
    keys: MatchKeys
    limiter: RateLimiter
    refusals: RefusalAudit

    async def evaluate(self, peer: str, blinded: list[bytes]) -> tuple[list[bytes], int]:
        """The node's key applied to each blinded element, and the key version; refusals audited.

        Raises:
            ValidationError: none, more than MAX_BLINDED, or not valid elements.
            ResourceLimitError: the peer's rate limit.
        """
        # A member node flooding or sending garbage is evidence; `refusals` keeps it bounded.
        async with self.refusals.audited("EvaluateBlinded", f"node:{peer}", peer):
            return await self._evaluate(peer, blinded)

    async def bucket(
        self, peer: str, key_version: int, prefix: int, prefix_bits: int
    ) -> list[tuple[bytes, bytes]]:
        """(tag, sealed hit) of the entries under the prefix; refusals audited.

        Raises:
            ValidationError: a prefix width out of range, or an unknown key version.
            ResourceLimitError: the peer's rate limit.
        """
        async with self.refusals.audited("GetBucket", f"node:{peer}", peer):
            return await self._bucket(peer, key_version, prefix, prefix_bits)

    async def _evaluate(self, peer: str, blinded: list[bytes]) -> tuple[list[bytes], int]:
        """The node's key applied to each blinded element, and the key version.

        Raises:
            ValidationError: none, more than MAX_BLINDED, or not valid elements.
            ResourceLimitError: the peer's rate limit.
        """
        if not 1 <= len(blinded) <= MAX_BLINDED:
            raise ValidationError("blinded_elements", f"give 1 to {MAX_BLINDED} elements")
        self.limiter.take(peer, len(blinded))
        version, key = self.keys.active_version, self.keys.active_key
        evaluated = []
        for i, element in enumerate(blinded):
            try:
                evaluated.append(key.blind_evaluate(element))
            except OprfError as exc:
                raise ValidationError(f"blinded_elements[{i}]", str(exc)) from None
        await self._audit(peer, "match.evaluated", {"elements": str(len(blinded))})
        return evaluated, version

    async def _bucket(
        self, peer: str, key_version: int, prefix: int, prefix_bits: int
    ) -> list[tuple[bytes, bytes]]:
        """(tag, sealed hit) of the entries under the prefix.

        Raises:
            ValidationError: a prefix width out of range, or an unknown key version.
            ResourceLimitError: the peer's rate limit.
        """
        if not MIN_PREFIX_BITS <= prefix_bits <= MAX_PREFIX_BITS:
            raise ValidationError("prefix_bits", f"must be {MIN_PREFIX_BITS} to {MAX_PREFIX_BITS}")
        if not 0 <= prefix < 2**prefix_bits:
            raise ValidationError("prefix", f"does not fit {prefix_bits} bits")
        if not self.keys.answers_buckets_of(key_version):
            raise ValidationError(
                "key_version", f"this node answers with key {self.keys.active_version}"
            )
        self.limiter.take(peer)
        entries = await self.context.store.read(
            lambda c: match_index.bucket_entries(c, key_version, prefix, prefix_bits)
        )
        await self._audit(
            peer,
            "match.bucket_read",
            {"prefix_bits": str(prefix_bits), "entries": str(len(entries))},
        )
        return entries

    async def _audit(self, peer: str, action: str, details: dict[str, str]) -> None:
        record = AuditRecord(
            occurred_at=self.context.clock.now(),
            actor=f"node:{peer}",
            action=action,
            peer_node_id=peer,
            details=details,
        )
        await audit_log.record(self.context.store, record)
