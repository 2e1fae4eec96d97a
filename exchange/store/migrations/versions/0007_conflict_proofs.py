"""Keep the failing consistency proof with a recorded audit conflict.

Two heads of different sizes contradict each other only through the proof the
node gave; without it a third party cannot tell a fork from a faulty reply.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: SQLite adds it in place, and conflicts recorded before have no proof kept.
    op.add_column("audit_conflicts", sa.Column("proof", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_conflicts", schema=None) as batch_op:
        batch_op.drop_column("proof")
