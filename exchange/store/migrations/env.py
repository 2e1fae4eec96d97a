"""Alembic environment: always run with a connection given by exchange.store.migrate."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from alembic import context
from alembic.migration import MigrationContext, MigrationInfo

from exchange.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `exchange node migrate`, not the alembic CLI")

on_revision = context.config.attributes.get("on_revision")


def _applied(
    ctx: MigrationContext,
    step: MigrationInfo,
    heads: Collection[Any],
    run_args: Mapping[str, Any],
) -> None:
    if on_revision is not None:
        on_revision()


context.configure(
    connection=connection,
    on_version_apply=_applied,
    target_metadata=metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
