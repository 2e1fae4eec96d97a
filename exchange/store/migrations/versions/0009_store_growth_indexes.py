"""Indexes that keep the inbox, purges and overdue requests fast at millions of notices.

- The inbox pages newest first with the message id breaking ties: an index of
  (direction, received_at, message_id) serves every page as a range read,
  where (direction, received_at) left a sort of each page's ties and a later
  page walked every newer notice.
- `retain_until` holds when a notice's retention ends (it was computed in the
  purge scanner's WHERE clause, which read every notice on every scan) and is
  cleared by the purge, so the scanner reads only what is due.
- Replies to a notice are found by (in_reply_to, kind, direction), overdue
  requests by (direction, response_deadline): with as many columns as the
  queries test, SQLite (which plans without statistics) no longer prefers the
  inbox index, which would read every notice of one direction.
- The outbox's due rows are claimed in (next_attempt_at, id) order: with id in
  the index, PostgreSQL reads the first rows of a backlog instead of sorting it;
  and one notice's outbox rows in one state are found by (message_id, state).

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_notices_direction_received", table_name="notices")
    op.create_index("ix_notices_inbox", "notices", ["direction", "received_at", "message_id"])
    # Nullable: SQLite adds it in place; purged notices keep none.
    op.add_column("notices", sa.Column("retain_until", sa.BigInteger(), nullable=True))
    op.execute(
        # A day is 86,400,000 ms; BIGINT: days * that overflows PostgreSQL's INTEGER.
        "UPDATE notices SET retain_until = COALESCE(received_at, created_at)"
        " + CAST(retention_days AS BIGINT) * 86400000 WHERE state <> 'purged'"
    )
    op.create_index("ix_notices_retain_until", "notices", ["retain_until"])
    op.drop_index("ix_notices_in_reply_to", table_name="notices")
    op.create_index("ix_notices_replies", "notices", ["in_reply_to", "kind", "direction"])
    op.create_index("ix_notices_deadline", "notices", ["direction", "response_deadline"])
    op.drop_index("ix_outbox_due", table_name="outbox")
    op.create_index("ix_outbox_due", "outbox", ["state", "next_attempt_at", "id"])
    op.create_index("ix_outbox_message_state", "outbox", ["message_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_outbox_message_state", table_name="outbox")
    op.drop_index("ix_outbox_due", table_name="outbox")
    op.create_index("ix_outbox_due", "outbox", ["state", "next_attempt_at"])
    op.drop_index("ix_notices_deadline", table_name="notices")
    op.drop_index("ix_notices_replies", table_name="notices")
    op.create_index("ix_notices_in_reply_to", "notices", ["in_reply_to"])
    op.drop_index("ix_notices_retain_until", table_name="notices")
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.drop_column("retain_until")
    op.drop_index("ix_notices_inbox", table_name="notices")
    op.create_index("ix_notices_direction_received", "notices", ["direction", "received_at"])
