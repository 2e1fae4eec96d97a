"""A node's own audit log as others see it: signed tree heads and proofs.

`AuditLog.issue_head` signs a head over the log as it is in one transaction
(size and root read where the head is stored), so a head never claims entries
that are not committed. `run` issues heads on the node's schedule: once
`head_every_entries` entries are unsigned, or once any entry has waited
`head_interval_seconds`. Proof requests are checked here and answered from the
stored subtrees (`exchange.store.audit_log`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from sqlalchemy import Connection

from exchange.audit import LoggedEntry
from exchange.checkpoint import SignedTreeHead, TreeHead
from exchange.clock import to_millis
from exchange.errors import PreconditionError, StoreUnavailableError, ValidationError
from exchange.runtime import NodeContext
from exchange.store import audit_heads, audit_log

__all__ = ["AuditLog", "InclusionProof"]

# How often the schedule looks at the log; heads are still issued by the config's rules.
_POLL_SECONDS = 0.5


@dataclasses.dataclass(frozen=True)
class InclusionProof:
    tree_size: int
    entry: LoggedEntry
    path: list[bytes]


class AuditLog:
    """Signed heads and proofs over this node's audit log."""

    def __init__(self, context: NodeContext) -> None:
        self._context = context

    async def latest_head(self) -> SignedTreeHead | None:
        return await self._context.store.read(audit_heads.latest_own)

    async def issue_head(self, *, force: bool = False) -> SignedTreeHead | None:
        """Sign a head over the whole log now, if it is due (or `force`) and has grown.

        Returns:
            The new head, or None when the newest head already covers the log
            or none is due yet.
        """
        context = self._context
        config = context.config.audit

        def issue(connection: Connection) -> SignedTreeHead | None:
            # Under the audit lock: an offline `exchange audit export` signing at the
            # same time cannot sign a second head of the same size. The time is read
            # once the lock is held, so it is never before an entry the head covers.
            audit_log.lock(connection)
            now = context.clock.now()
            size = audit_log.size(connection)
            latest = audit_heads.latest_own(connection)
            signed_size = 0 if latest is None else TreeHead.parse(latest.text).size
            if size <= signed_size:
                return None
            if not force and size - signed_size < config.head_every_entries:
                oldest = audit_log.entry(connection, signed_size + 1)
                assert oldest is not None
                waited = to_millis(now) - oldest.occurred_at_ms
                if waited < config.head_interval_seconds * 1000:
                    return None
            head = TreeHead(context.node_id, size, audit_log.root(connection, size), now)
            _, key = context.identity.signer(context.trust, now)
            signed = SignedTreeHead.sign(head, key)
            audit_heads.insert_own(connection, signed, size, to_millis(now))
            return signed

        signed = await context.store.write(issue)
        if signed is not None:
            context.log.info("audit.head_signed", tree_size=TreeHead.parse(signed.text).size)
        return signed

    async def run(self, leads: Callable[[], bool] = lambda: True) -> None:
        """Issue heads on schedule until cancelled.

        Args:
            leads: whether this process signs the node's heads now (one of the
                node's processes does; two at once would only find the head
                already signed, under the audit lock).
        """
        while True:
            try:
                if leads():
                    await self.issue_head()
            except StoreUnavailableError as exc:
                self._context.log.warning("audit.head_deferred", error=str(exc))
            await asyncio.sleep(
                min(_POLL_SECONDS, self._context.config.audit.head_interval_seconds)
            )

    async def inclusion(self, sequence: int, tree_size: int) -> InclusionProof:
        """Entry `sequence` and its inclusion proof in the tree of `tree_size` (0: newest head).

        Raises:
            ValidationError: the sizes are out of range (names the field).
            PreconditionError: `tree_size` is 0 and no head has been signed yet.
        """

        def prove(connection: Connection) -> InclusionProof:
            size = tree_size or _signed_size(connection)
            if size > audit_log.size(connection):
                raise ValidationError("tree_size", "is larger than the log")
            if not 1 <= sequence <= size:
                raise ValidationError("sequence", f"must be between 1 and the tree size {size}")
            entry = audit_log.entry(connection, sequence)
            assert entry is not None
            return InclusionProof(size, entry, audit_log.inclusion_path(connection, sequence, size))

        return await self._context.store.read(prove)

    async def consistency(self, first: int, second: int) -> list[bytes]:
        """The proof that the log's first `first` entries are a prefix of its first `second`.

        Raises:
            ValidationError: the sizes are out of range (names the field).
        """

        def prove(connection: Connection) -> list[bytes]:
            if first < 1:
                raise ValidationError("first_size", "must be 1 or more")
            if second < first:
                raise ValidationError("second_size", "must be at least first_size")
            if second > audit_log.size(connection):
                raise ValidationError("second_size", "is larger than the log")
            return audit_log.consistency_path(connection, first, second)

        return await self._context.store.read(prove)


def _signed_size(connection: Connection) -> int:
    latest = audit_heads.latest_own(connection)
    if latest is None:
        raise PreconditionError("no tree head has been signed yet; give a tree_size")
    return TreeHead.parse(latest.text).size
