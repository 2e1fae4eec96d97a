"""Work a write transaction defers to just before its commit.

A group commit (`AsyncStore`) runs many writes in one transaction. A write that
updates one shared row (the audit log's head) would read and rewrite that row
once per write: on PostgreSQL a round trip each, on the store's one writer
thread. Such a write keeps what it would have written here instead, under a
name, and the transaction writes it once, last before its commit.

The values kept are immutable, so a savepoint that rolls back puts back the
values it began with (`saved` / `restore`) and nothing of the failed write is
flushed. Outside a transaction begun by `Store` (`begin`), nothing is deferred:
`defers` is False and the caller writes at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection

__all__ = ["begin", "defers", "end", "flush", "get", "put", "restore", "saved"]

T = TypeVar("T")

# The connection's info outlives a transaction (it belongs to the pooled DBAPI
# connection): `begin` and `end` bound what is kept there to one transaction.
_KEY = "exchange_pending"


@dataclasses.dataclass(frozen=True)
class _Kept:
    value: Any
    # Writes `value`; returns what to keep afterwards (None: nothing).
    write: Callable[[Connection, Any], Any]


def begin(connection: Connection) -> None:
    """A transaction begins on `connection`: writes may defer until `flush`."""
    connection.info[_KEY] = {}


def end(connection: Connection) -> None:
    """The transaction ended (committed or not): drop whatever is still kept."""
    connection.info.pop(_KEY, None)


def defers(connection: Connection) -> bool:
    return _KEY in connection.info


def get(connection: Connection, name: str) -> Any | None:
    kept = connection.info.get(_KEY, {}).get(name)
    return None if kept is None else kept.value


def put(
    connection: Connection, name: str, value: T, write: Callable[[Connection, T], T | None]
) -> None:
    """Keep `value` under `name` until `flush` calls `write(connection, value)`."""
    connection.info[_KEY][name] = _Kept(value, write)


def flush(connection: Connection, name: str | None = None) -> None:
    """Write what is kept (under `name`, or all); called last before commit."""
    kept: dict[str, _Kept] = connection.info.get(_KEY, {})
    for each in [name] if name is not None else list(kept):
        if each not in kept:
            continue
        after = kept[each].write(connection, kept[each].value)
        if after is None:
            del kept[each]
        else:
            kept[each] = dataclasses.replace(kept[each], value=after)


def saved(connection: Connection) -> dict[str, Any]:
    """What is kept now, to `restore` if the savepoint about to begin rolls back."""
    return dict(connection.info.get(_KEY, {}))


def restore(connection: Connection, state: dict[str, Any]) -> None:
    if defers(connection):
        connection.info[_KEY] = dict(state)
