"""Refused calls on the audit record, without letting a flood grow the log.

Authority calls refused for their credentials (no token, a malformed, unknown,
wrong or revoked token, a role without the right), requests refused before
they are read (too large, not the method's message: the authority port has not
identified the caller yet) and hit/no-hit calls refused for a rate limit or a
malformed request are counted under their kind: the
reason, the method and the actor (a registered client, a member node, or
"unauthenticated"). The first refusal of a kind is audited at once as
`call.refused`; later ones within `window` are only counted, and the next
refusal of that kind after the window is audited with the count since the
previous entry (`refusals`). So the log grows by at most one entry per kind and
window, however fast the calls come; and since neither the reason, the method
(only the server's own reach a service) nor the actor (only registered clients
and member nodes are named) is chosen freely by the caller, the number of
kinds, and the memory held, stay bounded too. Counts not yet written when the
node stops are lost; the log still shows that the kind was refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator

from exchange.audit import AuditRecord
from exchange.errors import ResourceLimitError, StoreUnavailableError, ValidationError
from exchange.runtime import NodeContext
from exchange.store import audit_log

__all__ = ["REASONS", "UNAUTHENTICATED", "RefusalAudit"]

REASONS = frozenset(
    {
        "no token",
        "malformed token",
        "unknown client",
        "wrong secret",
        "revoked client",
        "role",
        "rate limit",
        "invalid request",
        "too large",
    }
)
UNAUTHENTICATED = "unauthenticated"
DEFAULT_WINDOW = dt.timedelta(minutes=1)


@dataclasses.dataclass
class RefusalAudit:
    """Audits refused calls: at most one entry per kind of refusal and window."""

    context: NodeContext
    window: dt.timedelta = DEFAULT_WINDOW
    # kind -> (refusals not yet on record, when the last entry of the kind was written)
    _kinds: dict[tuple[str, str, str], tuple[int, dt.datetime]] = dataclasses.field(
        default_factory=dict
    )

    async def refused(
        self, method: str, reason: str, actor: str = UNAUTHENTICATED, peer_node_id: str = ""
    ) -> None:
        """Count a refused call; audit it unless its kind was audited within the window.

        Args:
            method: the RPC refused.
            reason: one of REASONS.
            actor: "client:<name>" of a registered client, "node:<id>" of a member
                node (then also `peer_node_id`), or UNAUTHENTICATED; never a name the
                caller made up.
        """
        assert reason in REASONS, reason
        key = (reason, method, actor)
        now = self.context.clock.now()
        unwritten, written_at = self._kinds.get(key, (0, None))
        if written_at is not None and now - written_at < self.window:
            self._kinds[key] = (unwritten + 1, written_at)
            return
        # Claimed before the write, so that concurrent refusals of the kind are only counted.
        self._kinds[key] = (0, now)
        record = AuditRecord(
            occurred_at=now,
            actor=actor,
            action="call.refused",
            peer_node_id=peer_node_id,
            details={"method": method, "reason": reason, "refusals": str(unwritten + 1)},
        )
        try:
            await audit_log.record(self.context.store, record)
        except BaseException:
            if written_at is None:
                del self._kinds[key]
            else:
                self._kinds[key] = (unwritten + 1, written_at)
            raise

    async def refused_anyway(
        self, method: str, reason: str, actor: str = UNAUTHENTICATED, peer_node_id: str = ""
    ) -> None:
        """`refused`, but a store that cannot take the entry does not change the refusal.

        The caller is told why its call was refused, not that the store is busy;
        the node's log says the entry is missing.
        """
        try:
            await self.refused(method, reason, actor, peer_node_id)
        except StoreUnavailableError:
            self.context.log.warning("call.refusal_not_audited", method=method, reason=reason)

    @contextlib.asynccontextmanager
    async def audited(self, method: str, actor: str, peer_node_id: str = "") -> AsyncIterator[None]:
        """Audit a rate limit or a malformed request raised inside, then let it propagate."""
        try:
            yield
        except ResourceLimitError:
            await self.refused_anyway(method, "rate limit", actor, peer_node_id)
            raise
        except ValidationError:
            await self.refused_anyway(method, "invalid request", actor, peer_node_id)
            raise
