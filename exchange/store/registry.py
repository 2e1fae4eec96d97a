"""Trust list versions and authority clients."""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import Connection, Row, bindparam, insert, select, update

from exchange.store.tables import CLIENTS as _clients
from exchange.store.tables import TRUST_LISTS as _trust

__all__ = [
    "ClientRecord",
    "find_client",
    "insert_client",
    "insert_trust_list",
    "latest_trust_list",
    "list_clients",
    "revoke_client",
]


def latest_trust_list(connection: Connection) -> bytes | None:
    """The signed bytes of the highest trust list version held, if any."""
    row = connection.execute(
        select(_trust.c.signed).order_by(_trust.c.version.desc()).limit(1)
    ).one_or_none()
    return None if row is None else bytes(row.signed)


def insert_trust_list(
    connection: Connection, *, version: int, signed: bytes, expires_at: int, installed_at: int
) -> None:
    connection.execute(
        insert(_trust).values(
            version=version, signed=signed, expires_at=expires_at, installed_at=installed_at
        )
    )


@dataclasses.dataclass(frozen=True)
class ClientRecord:
    client_id: str
    name: str
    roles: frozenset[str]
    secret_hash: bytes
    created_at: int
    revoked_at: int | None


def _client(row: Row[Any]) -> ClientRecord:
    return ClientRecord(
        client_id=row.client_id,
        name=row.name,
        roles=frozenset(filter(None, row.roles.split(","))),
        secret_hash=bytes(row.secret_hash),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def insert_client(connection: Connection, record: ClientRecord) -> None:
    connection.execute(
        insert(_clients).values(
            client_id=record.client_id,
            name=record.name,
            roles=",".join(sorted(record.roles)),
            secret_hash=record.secret_hash,
            created_at=record.created_at,
            revoked_at=record.revoked_at,
        )
    )


# Built once: every authority call looks its client up.
_FIND_CLIENT = select(_clients).where(_clients.c.client_id == bindparam("client_id"))


def find_client(connection: Connection, client_id: str) -> ClientRecord | None:
    row = connection.execute(_FIND_CLIENT, {"client_id": client_id}).one_or_none()
    return None if row is None else _client(row)


def list_clients(connection: Connection) -> list[ClientRecord]:
    return [_client(row) for row in connection.execute(select(_clients).order_by(_clients.c.name))]


def revoke_client(connection: Connection, name: str, revoked_at: int) -> ClientRecord | None:
    """Revoke the client called `name`; returns it, or None if no active client has that name."""
    result = connection.execute(
        update(_clients)
        .where(_clients.c.name == name, _clients.c.revoked_at.is_(None))
        .values(revoked_at=revoked_at)
    )
    if result.rowcount != 1:
        return None
    row = connection.execute(select(_clients).where(_clients.c.name == name)).one()
    return _client(row)
