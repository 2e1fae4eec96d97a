"""Staged disclosure (restricted sections held back), onward-sharing consents,
response deadlines and retention purges.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "onward_consents",
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("node_id", sa.String(length=63), nullable=False),
        sa.Column("grant_message_id", sa.String(length=36), nullable=False),
        sa.Column("recorded_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["notices.message_id"],
        ),
        sa.PrimaryKeyConstraint("message_id", "node_id"),
    )
    op.create_table(
        "restricted_sections",
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("section_id", sa.String(length=16), nullable=False),
        sa.Column("section_type", sa.Integer(), nullable=False),
        sa.Column("salt", sa.LargeBinary(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["notices.message_id"],
        ),
        sa.PrimaryKeyConstraint("message_id", "section_id"),
    )
    # Nullable columns: SQLite adds them in place, no table copy.
    op.add_column("notices", sa.Column("response_deadline", sa.BigInteger(), nullable=True))
    op.add_column("notices", sa.Column("purged_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.drop_column("purged_at")
        batch_op.drop_column("response_deadline")

    op.drop_table("restricted_sections")
    op.drop_table("onward_consents")
