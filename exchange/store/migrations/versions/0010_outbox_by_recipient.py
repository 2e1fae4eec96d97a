"""An index of the outbox by recipient, for the rows of one peer.

A peer known down has its backlog parked and resumed in one statement each
(`postpone_peer`, `resume_peer`) and one of its rows claimed to probe it
(`claim_probe`). Through the index of due rows, each of those read every
pending row to other peers before it (two peers down with 20,000 rows each:
every probe of one walked the other's backlog); by (recipient_node_id, state,
next_attempt_at, id) each reads the peer's own pending rows, a probe the first
of them.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_outbox_recipient", "outbox", ["recipient_node_id", "state", "next_attempt_at", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_recipient", table_name="outbox")
