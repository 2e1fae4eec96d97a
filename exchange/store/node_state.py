"""What an operator asks of a node's store: its backlog per peer, and facts about notices.

Read by the metrics endpoint and `exchange node status`; nothing here is personal
(peer node ids, counts, times and notice types only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from sqlalchemy import Connection, bindparam, func, select

from exchange.store.tables import NOTICES, OUTBOX

__all__ = ["Backlog", "NoticeFacts", "notice_facts", "outbox_backlog"]


@dataclasses.dataclass(frozen=True)
class Backlog:
    """The undelivered notices for one peer."""

    peer_node_id: str
    pending: int
    oldest_created_at: int


@dataclasses.dataclass(frozen=True)
class NoticeFacts:
    kind: int
    created_at: int


_BACKLOG = (
    select(
        OUTBOX.c.recipient_node_id,
        func.count().label("pending"),
        func.min(NOTICES.c.created_at).label("oldest"),
    )
    .join(NOTICES, NOTICES.c.message_id == OUTBOX.c.message_id)
    .where(OUTBOX.c.state == "pending")
    .group_by(OUTBOX.c.recipient_node_id)
    .order_by(OUTBOX.c.recipient_node_id)
)
_FACTS = select(NOTICES.c.message_id, NOTICES.c.kind, NOTICES.c.created_at).where(
    NOTICES.c.message_id.in_(bindparam("ids", expanding=True))
)


def outbox_backlog(connection: Connection) -> list[Backlog]:
    """Pending deliveries per peer with the creation time of the oldest, by peer id."""
    return [
        Backlog(row.recipient_node_id, int(row.pending), int(row.oldest))
        for row in connection.execute(_BACKLOG)
    ]


def notice_facts(connection: Connection, message_ids: Collection[str]) -> dict[str, NoticeFacts]:
    """Type and creation time of the stored notices among `message_ids`."""
    if not message_ids:
        return {}
    rows = connection.execute(_FACTS, {"ids": list(message_ids)})
    return {row.message_id: NoticeFacts(row.kind, row.created_at) for row in rows}
