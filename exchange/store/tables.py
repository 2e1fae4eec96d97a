"""The node's tables, declared with sqlmodel.

Conventions:
- Times are epoch milliseconds in BIGINT columns (sqlmodel's `int` would be a
  32-bit INTEGER on PostgreSQL).
- Envelope and receipt bytes are stored exactly as sent or received: they are
  evidence.
- Content stays sealed at rest; it is opened only when an authority reads it.
- Hot paths write these tables through SQLAlchemy Core (`Model.__table__`);
  the schema itself changes only through Alembic migrations.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, Table, UniqueConstraint
from sqlmodel import Field, SQLModel

__all__ = [
    "AUDIT_CONFLICTS",
    "AUDIT_ENTRIES",
    "AUDIT_HEAD",
    "AUDIT_NODES",
    "AUDIT_TREE_HEADS",
    "CLIENTS",
    "DISCLOSURE_DECISIONS",
    "ENVELOPES",
    "INBOX_EVENTS",
    "MATCH_INDEX",
    "MATCH_KEYS",
    "NOTICES",
    "ONWARD_CONSENTS",
    "OUTBOX",
    "PEER_TREE_HEADS",
    "RECEIPTS",
    "RESTRICTED_SECTIONS",
    "SUPERSEDED_ENVELOPES",
    "TRUST_LISTS",
    "AuditConflictRow",
    "AuditEntryRow",
    "AuditHeadRow",
    "AuditNodeRow",
    "AuditTreeHeadRow",
    "ClientRow",
    "DisclosureDecisionRow",
    "EnvelopeRow",
    "InboxEventRow",
    "MatchIndexRow",
    "MatchKeyRow",
    "NoticeRow",
    "OnwardConsentRow",
    "OutboxRow",
    "PeerTreeHeadRow",
    "ReceiptRow",
    "RestrictedSectionRow",
    "SupersededEnvelopeRow",
    "TrustListRow",
    "metadata",
]

metadata = SQLModel.metadata

# SQLite autoincrements only an INTEGER PRIMARY KEY; elsewhere ids are 64-bit.
_ID = BigInteger().with_variant(Integer(), "sqlite")


class NoticeRow(SQLModel, table=True):
    """One notice this node sent ("outgoing") or received ("incoming"); header fields only."""

    __tablename__ = "notices"
    __table_args__ = (
        UniqueConstraint("client_id", "client_request_id", name="uq_notices_client_request"),
        # The inbox's order (newest first, message id breaking ties), so that any
        # page is an index range read, however many notices the store holds.
        Index("ix_notices_inbox", "direction", "received_at", "message_id"),
        Index("ix_notices_retain_until", "retain_until"),
        # The replies to a notice (withdrawals, answers) and overdue requests: as
        # many columns as the queries test, or a planner without statistics
        # (SQLite's) takes the inbox index and reads every notice of a direction.
        Index("ix_notices_replies", "in_reply_to", "kind", "direction"),
        Index("ix_notices_deadline", "direction", "response_deadline"),
    )

    message_id: str = Field(primary_key=True, max_length=36)
    direction: str = Field(max_length=8)
    kind: int
    sender_node_id: str = Field(max_length=63)
    # Comma-separated node ids (a node id never contains a comma).
    recipient_node_ids: str = Field(max_length=2048)
    case_reference: str = Field(max_length=64)
    in_reply_to: str | None = Field(default=None, max_length=36)
    created_at: int = Field(sa_type=BigInteger)
    expires_at: int = Field(sa_type=BigInteger)
    received_at: int | None = Field(default=None, sa_type=BigInteger)
    onward_sharing: int
    evidence_use: int
    retention_days: int
    # Incoming: received / read / acknowledged / withdrawn / purged / rejected.
    # Outgoing: sent / withdrawn / purged.
    state: str = Field(max_length=16)
    # Requests only: when the answer is due (read from the content when sealed or opened).
    response_deadline: int | None = Field(default=None, sa_type=BigInteger)
    # When retention ended and the content was deleted (a tombstone remains).
    purged_at: int | None = Field(default=None, sa_type=BigInteger)
    # When retention ends (from receipt for what came in, from creation for what
    # went out); None once purged, so the purge scanner reads only what is due.
    retain_until: int | None = Field(default=None, sa_type=BigInteger)
    # A forwarded copy this node sent: the message id of the notice it copies.
    origin_message_id: str | None = Field(default=None, max_length=36, index=True)
    # Outgoing only: the authority client that submitted, and its idempotency key.
    client_id: str | None = Field(default=None, max_length=64)
    client_request_id: str | None = Field(default=None, max_length=128)
    request_digest: bytes | None = Field(default=None, sa_type=LargeBinary)


class EnvelopeRow(SQLModel, table=True):
    """The signed envelope of a notice, byte for byte."""

    __tablename__ = "envelopes"

    message_id: str = Field(primary_key=True, max_length=36, foreign_key="notices.message_id")
    header: bytes = Field(sa_type=LargeBinary)
    sealed_payload: bytes = Field(sa_type=LargeBinary)
    signature: bytes = Field(sa_type=LargeBinary)
    digest: bytes = Field(sa_type=LargeBinary)


class SupersededEnvelopeRow(SQLModel, table=True):
    """An earlier signing of an outgoing envelope, replaced when its key was revoked.

    Recipients served before the replacement hold, and receipted, these bytes:
    they stay evidence. The sealed payload is the envelope's (it is unchanged).
    """

    __tablename__ = "superseded_envelopes"

    digest: bytes = Field(primary_key=True, sa_type=LargeBinary)
    message_id: str = Field(max_length=36, index=True)
    header: bytes = Field(sa_type=LargeBinary)
    signature: bytes = Field(sa_type=LargeBinary)
    superseded_at: int = Field(sa_type=BigInteger)


class MatchIndexRow(SQLModel, table=True):
    """One registered identifier of one case, as hit/no-hit matching holds it.

    Never the clear identifier: `element` is the node's OPRF key applied to it
    (re-keyable when the key rotates), `tag` and `sealed_hit` what a bucket
    shows (exchange.matching).
    """

    __tablename__ = "match_index"
    __table_args__ = (
        UniqueConstraint("key_version", "element", "case_reference", name="uq_match_index_entry"),
        Index("ix_match_index_bucket", "key_version", "bucket"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=_ID)
    key_version: int
    bucket: int = Field(sa_type=BigInteger)
    element: bytes = Field(sa_type=LargeBinary)
    tag: bytes = Field(sa_type=LargeBinary)
    sealed_hit: bytes = Field(sa_type=LargeBinary)
    case_reference: str = Field(max_length=64)
    registered_at: int = Field(sa_type=BigInteger)
    registered_by: str = Field(max_length=100)


class MatchKeyRow(SQLModel, table=True):
    """The state of each OPRF key version of hit/no-hit matching (exchange.match_keys)."""

    __tablename__ = "match_keys"

    key_version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    # indexing, active or retired.
    state: str = Field(max_length=16)
    # While indexing: the last index row id of the active key copied so far.
    copied_through: int = Field(default=0, sa_type=BigInteger)
    changed_at: int = Field(sa_type=BigInteger)


class RestrictedSectionRow(SQLModel, table=True):
    """A section the originator holds back, sealed to its own key (staged disclosure)."""

    __tablename__ = "restricted_sections"

    message_id: str = Field(primary_key=True, max_length=36, foreign_key="notices.message_id")
    section_id: str = Field(primary_key=True, max_length=16)
    section_type: int
    salt: bytes = Field(sa_type=LargeBinary)
    # The RestrictedSection, sealed to this node's own sealing key.
    sealed: bytes = Field(sa_type=LargeBinary)


class OnwardConsentRow(SQLModel, table=True):
    """The originator's signed consent to share a received notice with another node."""

    __tablename__ = "onward_consents"

    message_id: str = Field(primary_key=True, max_length=36, foreign_key="notices.message_id")
    node_id: str = Field(primary_key=True, max_length=63)
    # The DisclosureGrant (signed by the originator) that gave the consent.
    grant_message_id: str = Field(max_length=36)
    recorded_at: int = Field(sa_type=BigInteger)


class DisclosureDecisionRow(SQLModel, table=True):
    """A DisclosureRequest this node answered: one answer per request, whatever the races."""

    __tablename__ = "disclosure_decisions"

    request_message_id: str = Field(primary_key=True, max_length=36)
    grant_message_id: str = Field(max_length=36)
    decided_at: int = Field(sa_type=BigInteger)


class OutboxRow(SQLModel, table=True):
    """Delivery of one outgoing envelope to one recipient (the transactional outbox)."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("message_id", "recipient_node_id", name="uq_outbox_message_recipient"),
        # claim_due's order (next_attempt_at, then id): a claim reads the first due
        # rows of the index, without sorting every pending row of a backlog.
        Index("ix_outbox_due", "state", "next_attempt_at", "id"),
        # One notice's rows in one state (still delivering? delivered to whom?):
        # without it SQLite reads every pending or delivered row for each notice.
        Index("ix_outbox_message_state", "message_id", "state"),
        # One peer's pending rows (parked, resumed, one claimed to probe it), without
        # reading other peers' backlogs.
        Index("ix_outbox_recipient", "recipient_node_id", "state", "next_attempt_at", "id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=_ID)
    message_id: str = Field(max_length=36, foreign_key="notices.message_id")
    recipient_node_id: str = Field(max_length=63)
    # pending / delivered / failed
    state: str = Field(max_length=16)
    attempts: int = 0
    next_attempt_at: int = Field(sa_type=BigInteger)
    # A worker that claimed the row owns it until then (crash-safe leases).
    lease_until: int = Field(default=0, sa_type=BigInteger)
    last_error: str = Field(default="", max_length=500)
    updated_at: int = Field(sa_type=BigInteger)


class ReceiptRow(SQLModel, table=True):
    """A signed receipt: from a peer for our envelope, or ours for a peer's envelope."""

    __tablename__ = "receipts"

    message_id: str = Field(primary_key=True, max_length=36)
    recipient_node_id: str = Field(primary_key=True, max_length=63)
    body: bytes = Field(sa_type=LargeBinary)
    signature: bytes = Field(sa_type=LargeBinary)
    accepted: bool
    received_at: int = Field(sa_type=BigInteger)


class InboxEventRow(SQLModel, table=True):
    """An event for the node's authority systems (WatchInbox).

    `sequence` is the sequence number of the audit entry written in the same
    transaction: audit appends are serialized, so sequences become visible in
    increasing order and a watcher's cursor never skips an event.
    """

    __tablename__ = "inbox_events"

    sequence: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    event_type: str = Field(max_length=32)
    message_id: str = Field(max_length=36)
    peer_node_id: str = Field(max_length=63)
    reason: str = Field(default="", max_length=500)
    occurred_at: int = Field(sa_type=BigInteger)


class TrustListRow(SQLModel, table=True):
    """Every trust list version this node accepted, as signed."""

    __tablename__ = "trust_lists"

    version: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    signed: bytes = Field(sa_type=LargeBinary)
    expires_at: int = Field(sa_type=BigInteger)
    installed_at: int = Field(sa_type=BigInteger)


class ClientRow(SQLModel, table=True):
    """An authority system allowed to call the authority API."""

    __tablename__ = "authority_clients"

    client_id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=64, unique=True)
    # Comma-separated roles.
    roles: str = Field(max_length=64)
    # SHA-256 of the token secret; the token itself is shown once and never stored.
    secret_hash: bytes = Field(sa_type=LargeBinary)
    created_at: int = Field(sa_type=BigInteger)
    revoked_at: int | None = Field(default=None, sa_type=BigInteger)


class AuditEntryRow(SQLModel, table=True):
    """One entry (leaf) of the Merkle audit log: ids, digests, actors and times, never content."""

    __tablename__ = "audit_entries"

    sequence: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    occurred_at: int = Field(sa_type=BigInteger)
    actor: str = Field(max_length=100)
    action: str = Field(max_length=64)
    message_id: str = Field(default="", max_length=36, index=True)
    peer_node_id: str = Field(default="", max_length=63)
    # Canonical JSON of a flat string map.
    details: str = Field(default="{}", max_length=4000)
    # RFC 9162 leaf hash of the entry's encoding (exchange.audit.LoggedEntry).
    leaf_hash: bytes = Field(sa_type=LargeBinary)


class AuditHeadRow(SQLModel, table=True):
    """The single row every audit append locks: it serializes appends across processes.

    It also holds the tree's right edge (`exchange.merkle.Frontier`), so an
    append needs no other read.
    """

    __tablename__ = "audit_head"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    sequence: int = Field(sa_type=BigInteger)
    frontier: bytes = Field(sa_type=LargeBinary)


class AuditNodeRow(SQLModel, table=True):
    """A complete subtree of the audit log above the leaves: (level, index) -> hash."""

    __tablename__ = "audit_nodes"

    level: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    node_index: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    hash: bytes = Field(sa_type=LargeBinary)


class AuditTreeHeadRow(SQLModel, table=True):
    """A tree head this node signed over its own log (checkpoint text and signature)."""

    __tablename__ = "audit_tree_heads"

    tree_size: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    issued_at: int = Field(sa_type=BigInteger)
    checkpoint: bytes = Field(sa_type=LargeBinary)
    key_id: str = Field(max_length=64)
    signature: bytes = Field(sa_type=LargeBinary)


class PeerTreeHeadRow(SQLModel, table=True):
    """The newest verified tree head of each peer's log, kept to check the next one against."""

    __tablename__ = "peer_tree_heads"

    node_id: str = Field(primary_key=True, max_length=63)
    tree_size: int = Field(sa_type=BigInteger)
    checkpoint: bytes = Field(sa_type=LargeBinary)
    key_id: str = Field(max_length=64)
    signature: bytes = Field(sa_type=LargeBinary)
    fetched_at: int = Field(sa_type=BigInteger)


class AuditConflictRow(SQLModel, table=True):
    """Two signed heads of one peer that cannot both be true: the evidence, kept."""

    __tablename__ = "audit_conflicts"

    id: int | None = Field(default=None, primary_key=True, sa_type=_ID)
    node_id: str = Field(max_length=63, index=True)
    seen_at: int = Field(sa_type=BigInteger)
    reason: str = Field(max_length=500)
    held_checkpoint: bytes = Field(sa_type=LargeBinary)
    held_key_id: str = Field(max_length=64)
    held_signature: bytes = Field(sa_type=LargeBinary)
    offered_checkpoint: bytes = Field(sa_type=LargeBinary)
    offered_key_id: str = Field(max_length=64)
    offered_signature: bytes = Field(sa_type=LargeBinary)
    # The failing consistency proof, as concatenated 32-byte hashes (None: none was asked).
    proof: bytes | None = Field(default=None, sa_type=LargeBinary)


def _table(model: type[SQLModel]) -> Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


# Core handles on the tables, for the hot paths' insert / update / select statements.
NOTICES = _table(NoticeRow)
ENVELOPES = _table(EnvelopeRow)
OUTBOX = _table(OutboxRow)
RECEIPTS = _table(ReceiptRow)
INBOX_EVENTS = _table(InboxEventRow)
TRUST_LISTS = _table(TrustListRow)
CLIENTS = _table(ClientRow)
AUDIT_ENTRIES = _table(AuditEntryRow)
AUDIT_HEAD = _table(AuditHeadRow)
AUDIT_NODES = _table(AuditNodeRow)
AUDIT_TREE_HEADS = _table(AuditTreeHeadRow)
PEER_TREE_HEADS = _table(PeerTreeHeadRow)
AUDIT_CONFLICTS = _table(AuditConflictRow)
RESTRICTED_SECTIONS = _table(RestrictedSectionRow)
MATCH_INDEX = _table(MatchIndexRow)
MATCH_KEYS = _table(MatchKeyRow)
SUPERSEDED_ENVELOPES = _table(SupersededEnvelopeRow)
ONWARD_CONSENTS = _table(OnwardConsentRow)
DISCLOSURE_DECISIONS = _table(DisclosureDecisionRow)
