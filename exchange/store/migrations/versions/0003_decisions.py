"""One answer per disclosure request, and the origin of each forwarded copy.

`disclosure_decisions` makes "already answered" a constraint rather than a
check that two concurrent decisions could both pass; `origin_message_id`
lets a forwarder find its copies when the original is withdrawn.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "disclosure_decisions",
        sa.Column("request_message_id", sa.String(length=36), nullable=False),
        sa.Column("grant_message_id", sa.String(length=36), nullable=False),
        sa.Column("decided_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("request_message_id"),
    )
    # A nullable column: SQLite adds it in place, no table copy.
    op.add_column("notices", sa.Column("origin_message_id", sa.String(length=36), nullable=True))
    op.create_index("ix_notices_origin_message_id", "notices", ["origin_message_id"])


def downgrade() -> None:
    op.drop_index("ix_notices_origin_message_id", table_name="notices")
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.drop_column("origin_message_id")
    op.drop_table("disclosure_decisions")
