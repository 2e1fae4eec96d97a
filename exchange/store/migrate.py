"""Schema migrations (Alembic), run by `exchange node migrate` and `exchange node init`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from exchange.store.engine import Store
from exchange.store.tables import metadata

__all__ = [
    "current_revision",
    "head_revision",
    "pending_revisions",
    "schema_differences",
    "upgrade",
]

_SCRIPTS = Path(__file__).parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


def upgrade(
    store: Store, revision: str = "head", *, on_revision: Callable[[], None] | None = None
) -> None:
    """Bring the schema up to `revision` in one transaction.

    Args:
        on_revision: called after each revision is applied (inside the transaction).
    """
    config = _config()
    with store.engine.connect() as connection:
        if store.is_sqlite:
            connection.execution_options(sqlite_begin="IMMEDIATE")
        with connection.begin():
            config.attributes["connection"] = connection
            config.attributes["on_revision"] = on_revision
            command.upgrade(config, revision)


def pending_revisions(store: Store) -> int:
    """How many revisions `upgrade` to head would apply."""
    scripts = ScriptDirectory.from_config(_config())
    current = current_revision(store)
    return sum(1 for _ in scripts.iterate_revisions("head", current))


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(store: Store) -> str | None:
    with store.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def schema_differences(store: Store) -> list[Any]:
    """Differences between the migrated schema and the tables' declarations (should be none)."""
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))
