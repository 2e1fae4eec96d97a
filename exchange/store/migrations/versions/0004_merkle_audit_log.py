"""The audit log becomes an RFC 9162 Merkle log with signed tree heads.

Each entry keeps its fields; its `previous_hash` / `entry_hash` chain gives way
to a `leaf_hash`, the complete subtrees above the leaves are stored in
`audit_nodes`, and `audit_head` carries the tree's right edge. Entries already
stored are re-hashed here, in order, with the same code the node appends with.
Signed heads of this node's log and the newest verified head of each peer are
kept, and so is any pair of peer heads that contradict each other.

The old chain is verified first: an upgrade must not launder entries that
were altered before it into a freshly signed tree, so a broken chain stops the
migration (nothing changes) and names the first bad entry.

Not reversible: the old chain's hashes cannot be recomputed once replaced.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from exchange._encoding import tagged_digest
from exchange.audit import LoggedEntry
from exchange.merkle import Frontier

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_entries = sa.table(
    "audit_entries",
    sa.column("sequence", sa.BigInteger()),
    sa.column("occurred_at", sa.BigInteger()),
    sa.column("actor", sa.String()),
    sa.column("action", sa.String()),
    sa.column("message_id", sa.String()),
    sa.column("peer_node_id", sa.String()),
    sa.column("details", sa.String()),
    sa.column("leaf_hash", sa.LargeBinary()),
)
_nodes = sa.table(
    "audit_nodes",
    sa.column("level", sa.Integer()),
    sa.column("node_index", sa.BigInteger()),
    sa.column("hash", sa.LargeBinary()),
)
_head = sa.table(
    "audit_head",
    sa.column("id", sa.Integer()),
    sa.column("sequence", sa.BigInteger()),
    sa.column("frontier", sa.LargeBinary()),
)


def _create_tables() -> None:
    op.create_table(
        "audit_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("node_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "node_index"),
    )
    op.create_table(
        "audit_tree_heads",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("issued_at", sa.BigInteger(), nullable=False),
        sa.Column("checkpoint", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("tree_size"),
    )
    op.create_table(
        "peer_tree_heads",
        sa.Column("node_id", sa.String(length=63), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("checkpoint", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("fetched_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("node_id"),
    )
    op.create_table(
        "audit_conflicts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("node_id", sa.String(length=63), nullable=False),
        sa.Column("seen_at", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("held_checkpoint", sa.LargeBinary(), nullable=False),
        sa.Column("held_key_id", sa.String(length=64), nullable=False),
        sa.Column("held_signature", sa.LargeBinary(), nullable=False),
        sa.Column("offered_checkpoint", sa.LargeBinary(), nullable=False),
        sa.Column("offered_key_id", sa.String(length=64), nullable=False),
        sa.Column("offered_signature", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_conflicts_node_id", "audit_conflicts", ["node_id"])


def chained_hash(previous: bytes, row: sa.Row[tuple[object, ...]]) -> bytes:
    """The entry hash of the chain this revision replaces (revisions 0001 to 0003)."""
    return tagged_digest(
        "exchange.v1.AuditEntry",
        previous,
        int(row.sequence).to_bytes(8, "big"),
        int(row.occurred_at).to_bytes(8, "big", signed=True),
        row.actor.encode(),
        row.action.encode(),
        row.message_id.encode(),
        row.peer_node_id.encode(),
        row.details.encode(),
    )


def _verify_old_chain() -> None:
    connection = op.get_bind()
    old = sa.table(
        "audit_entries",
        *(sa.column(c.name, c.type) for c in _entries.columns if c.name != "leaf_hash"),
        sa.column("previous_hash", sa.LargeBinary()),
        sa.column("entry_hash", sa.LargeBinary()),
    )
    previous, expected = bytes(32), 1
    for row in connection.execute(sa.select(old).order_by(old.c.sequence)):
        if (
            row.sequence != expected
            or bytes(row.previous_hash) != previous
            or bytes(row.entry_hash) != chained_hash(previous, row)
        ):
            raise RuntimeError(
                f"audit chain broken at entry {expected}: the log was altered before this "
                "upgrade; nothing was changed (investigate, or restore a backup, first)"
            )
        previous, expected = bytes(row.entry_hash), expected + 1


def _rehash_entries() -> None:
    """Give every stored entry its leaf hash, store the subtrees, and set the frontier."""
    connection = op.get_bind()
    frontier = Frontier.empty()
    rows = connection.execute(sa.select(_entries).order_by(_entries.c.sequence)).all()
    for row in rows:
        entry = LoggedEntry(
            sequence=row.sequence,
            occurred_at_ms=row.occurred_at,
            actor=row.actor,
            action=row.action,
            message_id=row.message_id,
            peer_node_id=row.peer_node_id,
            details_json=row.details,
            leaf_hash=b"",
        )
        leaf = entry.expected_leaf_hash()
        connection.execute(
            _entries.update().where(_entries.c.sequence == row.sequence).values(leaf_hash=leaf)
        )
        frontier, created = frontier.append(leaf)
        if created:
            connection.execute(
                _nodes.insert(),
                [{"level": lv, "node_index": ix, "hash": h} for lv, ix, h in created],
            )
    connection.execute(_head.update().where(_head.c.id == 1).values(frontier=frontier.to_bytes()))


def upgrade() -> None:
    _verify_old_chain()
    _create_tables()
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("leaf_hash", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.add_column(sa.Column("frontier", sa.LargeBinary(), nullable=True))
    _rehash_entries()
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.alter_column("leaf_hash", existing_type=sa.LargeBinary(), nullable=False)
        batch_op.drop_column("previous_hash")
        batch_op.drop_column("entry_hash")
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.alter_column("frontier", existing_type=sa.LargeBinary(), nullable=False)
        batch_op.drop_column("entry_hash")


def downgrade() -> None:
    raise NotImplementedError("0004 is not reversible: the old chain hashes are gone")
