"""Earlier signings of an outgoing envelope, kept when a revoked key forces a new one.

A notice delivered to some recipients before its sender's key was revoked is
signed anew for the rest; the first recipients' receipts cover the first
bytes, which are kept here so that evidence about the message stays complete.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "superseded_envelopes",
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("header", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("superseded_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )
    op.create_index("ix_superseded_envelopes_message_id", "superseded_envelopes", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_superseded_envelopes_message_id", table_name="superseded_envelopes")
    op.drop_table("superseded_envelopes")
