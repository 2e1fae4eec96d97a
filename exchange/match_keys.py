"""The node's OPRF keys for hit/no-hit matching, and rotating them without downtime.

A node holds one *active* key: it evaluates peers' blinded elements and its
index answers bucket reads. `exchange node rotate-keys --oprf` adds a key file
of the next version; the running node sees it and starts *indexing* under it:

1. Every registration from then on is indexed under both keys.
2. `step` copies the index to the new key in batches: each element is re-keyed
   (`ServerKey.rekeyed`: no clear value is needed), its hit opened with the old
   token and sealed again under the new one. The cursor is kept in
   `match_keys`, so a restart goes on where it stopped.
3. When the copy is complete the new key becomes active and the old one
   *retired*, in one transaction. Peers' queries move to the new key with
   their next EvaluateBlinded; buckets of the retired key still answer for
   `RETIRED_GRACE` (a query in flight across the switch finds its bucket),
   then its rows are deleted.

Queries are answered throughout: before the switch by the old key's complete
index, after it by the new key's complete index.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, update

from exchange import matching
from exchange.audit import AuditRecord
from exchange.clock import to_millis
from exchange.errors import ConfigError, KeyMaterialError
from exchange.oprf import ServerKey
from exchange.oprf_keys import load_oprf_key
from exchange.runtime import NodeContext
from exchange.store import audit_log, match_index
from exchange.store.tables import MATCH_INDEX, MATCH_KEYS

__all__ = [
    "ACTIVE",
    "INDEXING",
    "RETIRED",
    "RETIRED_GRACE",
    "MatchKeys",
    "load_key_files",
    "writing_versions",
]

INDEXING, ACTIVE, RETIRED = "indexing", "active", "retired"
RETIRED_GRACE = dt.timedelta(minutes=2)
_BATCH = 1000


def load_key_files(directory: Path, passphrase: bytes | None) -> dict[int, ServerKey]:
    """Every OPRF key file of the node (`keys/oprf*.json`), by key version.

    Raises:
        KeyMaterialError: a file cannot be read; ConfigError: two files of one version.
    """
    keys: dict[int, ServerKey] = {}
    for path in sorted(directory.glob("oprf*.json")):
        key, version = load_oprf_key(path, passphrase)
        if version in keys:
            raise ConfigError(f"{path}: a second OPRF key file of key version {version}")
        keys[version] = key
    if not keys:
        raise KeyMaterialError(f"{directory}: no OPRF key file")
    return keys


@dataclasses.dataclass
class MatchKeys:
    """The OPRF keys and their states, as the running node uses them."""

    context: NodeContext
    keys: dict[int, ServerKey]
    # Reads the key files again (the node's keys directory); None: the keys are fixed.
    loader: Callable[[], dict[int, ServerKey]] | None = None
    states: dict[int, str] = dataclasses.field(default_factory=dict)
    grace: dt.timedelta = RETIRED_GRACE

    @property
    def active_version(self) -> int:
        return next(v for v, state in self.states.items() if state == ACTIVE)

    @property
    def active_key(self) -> ServerKey:
        return self.keys[self.active_version]

    def writing(self) -> list[tuple[int, ServerKey]]:
        """The keys a registration is indexed under: the active one and any being filled."""
        return [
            (v, self.keys[v]) for v, s in sorted(self.states.items()) if s in (ACTIVE, INDEXING)
        ]

    def answers_buckets_of(self, version: int) -> bool:
        return self.states.get(version) in (ACTIVE, RETIRED)

    async def sync(self, keys: dict[int, ServerKey] | None = None) -> None:
        """Adopt the key files held (a new one starts indexing) and read the states."""
        if keys is None and self.loader is not None:
            # Off the event loop: a passphrase-sealed key file costs a scrypt derivation.
            keys = await asyncio.to_thread(self.loader)
        if keys is not None:
            self.keys = keys
        now = to_millis(self.context.clock.now())
        versions = sorted(self.keys)

        def sync(connection: Connection) -> dict[int, str]:
            audit_log.lock(connection)  # one node process adopts a new key at a time
            states = {row.key_version: row.state for row in connection.execute(select(MATCH_KEYS))}
            if not states:
                # First start: the newest key file is the key (as made by node init).
                states = {versions[-1]: ACTIVE}
                _insert(connection, versions[-1], ACTIVE, now)
            for version in versions:
                if version not in states and version > max(states):
                    states[version] = INDEXING
                    _insert(connection, version, INDEXING, now)
            missing = [v for v, s in states.items() if s != RETIRED and v not in self.keys]
            if missing:
                raise ConfigError(f"OPRF key version {missing[0]} is in use but its file is gone")
            return states

        self.states = await self.context.store.write(sync)

    async def step(self) -> str:
        """One unit of rotation work; returns what it did (for logs and tests)."""
        indexing = [v for v, s in self.states.items() if s == INDEXING]
        if indexing:
            return await self._copy(self.active_version, min(indexing))
        return await self._clean()

    async def _copy(self, old: int, new: int) -> str:
        old_key, new_key = self.keys[old], self.keys[new]
        now = self.context.clock.now()

        def copy(connection: Connection) -> str:
            # Registrations commit under this lock too (see Registrar): none can slip in
            # between reading the last batch and switching keys.
            audit_log.lock(connection)
            stored = {row.key_version: row.state for row in connection.execute(select(MATCH_KEYS))}
            if stored.get(old) != ACTIVE or stored.get(new) != INDEXING:
                return "nothing to do"  # another process of the node switched keys meanwhile
            cursor = connection.execute(
                select(MATCH_KEYS.c.copied_through).where(MATCH_KEYS.c.key_version == new)
            ).scalar_one()
            rows = connection.execute(
                select(MATCH_INDEX)
                .where(MATCH_INDEX.c.key_version == old, MATCH_INDEX.c.id > cursor)
                .order_by(MATCH_INDEX.c.id)
                .limit(_BATCH)
            ).all()
            for group in _by_case([_rekeyed(r, old_key, new_key, new) for r in rows]):
                match_index.insert_new(connection, group)
            if len(rows) == _BATCH:
                connection.execute(
                    update(MATCH_KEYS)
                    .where(MATCH_KEYS.c.key_version == new)
                    .values(copied_through=rows[-1].id)
                )
                return f"copied {len(rows)} entries to key {new}"
            _set(connection, old, RETIRED, now)
            _set(connection, new, ACTIVE, now)
            audit_log.append(
                connection,
                [
                    AuditRecord(
                        occurred_at=now,
                        actor=self.context.actor,
                        action="match.key_activated",
                        details={"key_version": str(new), "retired_key_version": str(old)},
                    )
                ],
            )
            return f"key {new} active, key {old} retired"

        done = await self.context.store.write(copy)
        await self.sync()
        return done

    async def _clean(self) -> str:
        cutoff = to_millis(self.context.clock.now() - self.grace)

        def clean(connection: Connection) -> str:
            retired = [
                row.key_version
                for row in connection.execute(
                    select(MATCH_KEYS.c.key_version).where(
                        MATCH_KEYS.c.state == RETIRED, MATCH_KEYS.c.changed_at <= cutoff
                    )
                )
            ]
            if not retired:
                return "nothing to do"
            ids = select(MATCH_INDEX.c.id).where(MATCH_INDEX.c.key_version.in_(retired))
            batch = [row.id for row in connection.execute(ids.limit(_BATCH))]
            if not batch:
                return "nothing to do"
            connection.execute(delete(MATCH_INDEX).where(MATCH_INDEX.c.id.in_(batch)))
            return f"deleted {len(batch)} entries of retired keys"

        return await self.context.store.write(clean)

    async def entries(self, version: int) -> int:
        """How many index entries the key of `version` has (for tests and status)."""
        return await self.context.store.read(
            lambda c: c.execute(
                select(func.count()).where(MATCH_INDEX.c.key_version == version)
            ).scalar_one()
        )


def writing_versions(connection: Connection) -> list[int]:
    """The key versions a registration must be indexed under now, as stored."""
    rows = connection.execute(
        select(MATCH_KEYS.c.key_version)
        .where(MATCH_KEYS.c.state.in_((ACTIVE, INDEXING)))
        .order_by(MATCH_KEYS.c.key_version)
    )
    return [row.key_version for row in rows]


def _insert(connection: Connection, version: int, state: str, now: int) -> None:
    connection.execute(
        insert(MATCH_KEYS).values(
            key_version=version, state=state, copied_through=0, changed_at=now
        )
    )


def _set(connection: Connection, version: int, state: str, now: dt.datetime) -> None:
    connection.execute(
        update(MATCH_KEYS)
        .where(MATCH_KEYS.c.key_version == version)
        .values(state=state, changed_at=to_millis(now))
    )


def _rekeyed(row: Row[Any], old: ServerKey, new: ServerKey, version: int) -> match_index.IndexRow:
    """An index entry moved to another key: its hit opened with the old token, sealed anew."""
    element = bytes(row.element)
    (hit,) = matching.find_hit(
        matching.token(element), [matching.BucketEntry(bytes(row.tag), bytes(row.sealed_hit))]
    )
    return match_index.index_row(
        version, old.rekeyed(element, new), hit, row.registered_at, row.registered_by
    )


def _by_case(rows: list[match_index.IndexRow]) -> list[list[match_index.IndexRow]]:
    groups: dict[str, list[match_index.IndexRow]] = {}
    for row in rows:
        groups.setdefault(row.case_reference, []).append(row)
    return list(groups.values())
