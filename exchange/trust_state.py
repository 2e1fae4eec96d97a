"""The trust list a node holds: installing newer versions and reading the current one.

Installing is one write transaction that first takes the audit lock, then
reads the newest held version, verifies the candidate against it
(`trust.verify_update`), stores it and audits the change: two concurrent
installs can never both be verified against the same old list.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection

from exchange.audit import AuditRecord
from exchange.clock import to_millis
from exchange.errors import TrustListError
from exchange.store import audit_log, registry
from exchange.store.engine import AsyncStore, Store
from exchange.trust import SignedTrustList, TrustList, verify_update

__all__ = [
    "audit_refusal_async",
    "current_trust_list",
    "install_trust_list",
    "install_trust_list_async",
]


def held(connection: Connection) -> TrustList | None:
    """The newest trust list stored (verified when it was installed)."""
    data = registry.latest_trust_list(connection)
    return None if data is None else SignedTrustList.from_bytes(data).trust_list


def current_trust_list(store: Store) -> TrustList | None:
    return store.read(held)


def _install(
    connection: Connection, candidate: SignedTrustList, now: dt.datetime, actor: str, source: str
) -> TrustList:
    # Serializes installs (PostgreSQL): each is verified against the one before.
    audit_log.lock(connection)
    current = held(connection)
    accepted = verify_update(candidate, current, now)
    registry.insert_trust_list(
        connection,
        version=accepted.version,
        signed=candidate.to_bytes(),
        expires_at=to_millis(accepted.expires_at),
        installed_at=to_millis(now),
    )
    audit_log.append(
        connection,
        [
            AuditRecord(
                occurred_at=now,
                actor=actor,
                action="trust_list.installed",
                details={
                    "version": str(accepted.version),
                    "previous_version": str(current.version) if current else "",
                    "nodes": str(len(accepted.nodes)),
                    **({"source": source} if source else {}),
                },
            )
        ],
    )
    return accepted


def _refusal(now: dt.datetime, actor: str, source: str, exc: TrustListError) -> AuditRecord:
    return AuditRecord(
        occurred_at=now,
        actor=actor,
        action="trust_list.refused",
        details={"reason": str(exc)[:500], **({"source": source} if source else {})},
    )


def install_trust_list(
    store: Store, candidate: SignedTrustList, *, now: dt.datetime, actor: str, source: str = ""
) -> TrustList:
    """Verify `candidate` against the held list (or as the anchor) and store it.

    Args:
        source: where the candidate came from (a peer's node id), for the audit.

    Raises:
        TrustListError: the candidate breaks a rule; only the refusal is audited.
    """
    try:
        return store.write(lambda c: _install(c, candidate, now, actor, source))
    except TrustListError as exc:
        refusal = _refusal(now, actor, source, exc)
        store.write(lambda connection: audit_log.append(connection, [refusal]))
        raise


async def install_trust_list_async(
    store: AsyncStore,
    candidate: SignedTrustList,
    *,
    now: dt.datetime,
    actor: str,
    source: str = "",
) -> TrustList:
    """`install_trust_list` for a running node (its store on the event loop)."""
    try:
        return await store.write(lambda c: _install(c, candidate, now, actor, source))
    except TrustListError as exc:
        await audit_refusal_async(store, exc, now=now, actor=actor, source=source)
        raise


async def audit_refusal_async(
    store: AsyncStore, exc: TrustListError, *, now: dt.datetime, actor: str, source: str
) -> None:
    """Audit a list refused before it could be verified (malformed or inconsistent)."""
    refusal = _refusal(now, actor, source, exc)
    await audit_log.record(store, refusal)
