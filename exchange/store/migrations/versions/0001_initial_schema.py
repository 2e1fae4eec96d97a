"""Initial schema: notices, envelopes, outbox, receipts, inbox events, trust lists,
authority clients and the hash-chained audit log.

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("occurred_at", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("peer_node_id", sa.String(length=63), nullable=False),
        sa.Column("details", sa.String(length=4000), nullable=False),
        sa.Column("previous_hash", sa.LargeBinary(), nullable=False),
        sa.Column("entry_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("sequence"),
    )
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_entries_message_id"), ["message_id"], unique=False
        )

    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("entry_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # The row every audit append locks; seeded so that appends never race to create it.
    op.bulk_insert(
        sa.table(
            "audit_head",
            sa.column("id", sa.Integer()),
            sa.column("sequence", sa.BigInteger()),
            sa.column("entry_hash", sa.LargeBinary()),
        ),
        [{"id": 1, "sequence": 0, "entry_hash": bytes(32)}],
    )
    op.create_table(
        "authority_clients",
        sa.Column("client_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("roles", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("client_id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "inbox_events",
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("peer_node_id", sa.String(length=63), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("occurred_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("sequence"),
    )
    op.create_table(
        "notices",
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("sender_node_id", sa.String(length=63), nullable=False),
        sa.Column("recipient_node_ids", sa.String(length=2048), nullable=False),
        sa.Column("case_reference", sa.String(length=64), nullable=False),
        sa.Column("in_reply_to", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=True),
        sa.Column("onward_sharing", sa.Integer(), nullable=False),
        sa.Column("evidence_use", sa.Integer(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=True),
        sa.Column("client_request_id", sa.String(length=128), nullable=True),
        sa.Column("request_digest", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("message_id"),
        sa.UniqueConstraint("client_id", "client_request_id", name="uq_notices_client_request"),
    )
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_notices_direction_received", ["direction", "received_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_notices_in_reply_to"), ["in_reply_to"], unique=False)

    op.create_table(
        "receipts",
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("recipient_node_id", sa.String(length=63), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", "recipient_node_id"),
    )
    op.create_table(
        "trust_lists",
        sa.Column("version", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("signed", sa.LargeBinary(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("installed_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )
    op.create_table(
        "envelopes",
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("header", sa.LargeBinary(), nullable=False),
        sa.Column("sealed_payload", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["notices.message_id"],
        ),
        sa.PrimaryKeyConstraint("message_id"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("recipient_node_id", sa.String(length=63), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False),
        sa.Column("lease_until", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["notices.message_id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id", "recipient_node_id", name="uq_outbox_message_recipient"),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_due", ["state", "next_attempt_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_due")

    op.drop_table("outbox")
    op.drop_table("envelopes")
    op.drop_table("trust_lists")
    op.drop_table("receipts")
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notices_in_reply_to"))
        batch_op.drop_index("ix_notices_direction_received")

    op.drop_table("notices")
    op.drop_table("inbox_events")
    op.drop_table("authority_clients")
    op.drop_table("audit_head")
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_entries_message_id"))

    op.drop_table("audit_entries")
