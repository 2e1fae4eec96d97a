"""The node's store: tables, engines, migrations and the queries of each path.

engine.py     Store / AsyncStore: SQLite (WAL) or PostgreSQL, transactions
tables.py     sqlmodel table declarations
migrate.py    Alembic migrations
notices.py    notice rows and envelope bytes (shared by both directions)
outbox.py     sending: outgoing notices, outbox claims, peers' receipts
inbox.py      receiving: incoming notices, own receipts, inbox events
registry.py   trust list versions, authority clients
audit_log.py  the hash-chained audit log
"""

from exchange.store.engine import AsyncStore, Store, sqlite_url

__all__ = ["AsyncStore", "Store", "sqlite_url"]
