"""The hit/no-hit index: registered identifiers as OPRF elements, never in clear.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "match_index",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("element", sa.LargeBinary(), nullable=False),
        sa.Column("tag", sa.LargeBinary(), nullable=False),
        sa.Column("sealed_hit", sa.LargeBinary(), nullable=False),
        sa.Column("case_reference", sa.String(length=64), nullable=False),
        sa.Column("registered_at", sa.BigInteger(), nullable=False),
        sa.Column("registered_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "key_version", "element", "case_reference", name="uq_match_index_entry"
        ),
    )
    op.create_index("ix_match_index_bucket", "match_index", ["key_version", "bucket"])


def downgrade() -> None:
    op.drop_index("ix_match_index_bucket", table_name="match_index")
    op.drop_table("match_index")
