"""Registering a case's identifiers for hit/no-hit matching (the holding side).

Each identifier is normalized (`exchange.identifiers`) and indexed as the
node's OPRF key applied to it, with the bucket entry a querier may be shown
(`exchange.matching`); the clear value goes no further than this call: not to
the store, the log or the audit entry, which records the case, the count and
the client.

All or nothing: one identifier that cannot be normalized refuses the call
(INVALID_ARGUMENT naming it) and nothing is indexed. The OPRF work for a large
batch runs off the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Sequence

from sqlalchemy import Connection

from exchange import match_keys, matching
from exchange.audit import AuditRecord
from exchange.clients import Principal
from exchange.clock import to_millis
from exchange.errors import ResourceLimitError, StoreUnavailableError, ValidationError
from exchange.identifiers import Identifier, IdentifierType, normalize
from exchange.ids import validate_case_reference
from exchange.match_keys import MatchKeys
from exchange.oprf import ServerKey
from exchange.runtime import NodeContext
from exchange.store import audit_log, match_index

__all__ = ["MAX_IDENTIFIERS", "RawIdentifier", "Registrar", "Registration", "check_count"]

MAX_IDENTIFIERS = 10_000
# A batch this large is evaluated in a worker thread (about 0.13 ms each).
_OFFLOAD_AT = 64
_CONTACT_POINT = re.compile(r"[^\x00-\x1f\x7f]{1,128}")


class _KeysChanged(Exception):
    """The OPRF keys being written changed between computing rows and committing them."""


@dataclasses.dataclass(frozen=True)
class RawIdentifier:
    """An identifier as the authority system sent it."""

    type: IdentifierType | None
    qualifier: str
    value: bytes


@dataclasses.dataclass(frozen=True)
class Registration:
    registered: int
    already_registered: int


@dataclasses.dataclass
class Registrar:
    """Indexes identifiers under the node's OPRF keys (both, while one is being rotated in)."""

    context: NodeContext
    keys: MatchKeys

    async def register(
        self,
        principal: Principal,
        case_reference: str,
        contact_point: str,
        identifiers: Sequence[RawIdentifier],
    ) -> Registration:
        """Normalize and index `identifiers` for `case_reference`.

        Raises:
            ValidationError: a field is wrong (named); nothing is indexed.
            ResourceLimitError: more than MAX_IDENTIFIERS in one call.
        """
        validate_case_reference(case_reference)
        if not _CONTACT_POINT.fullmatch(contact_point):
            raise ValidationError("contact_point", "must be 1 to 128 printable characters")
        if not identifiers:
            raise ValidationError("identifiers", "give at least one identifier")
        check_count(len(identifiers))
        wanted = [normalized(raw, i) for i, raw in enumerate(identifiers)]
        hit = matching.Hit(case_reference, contact_point)
        for _ in range(3):
            try:
                new, total = await self._index(principal, case_reference, wanted, hit)
            except _KeysChanged:
                # A key rotation moved on while the rows were computed: compute them again,
                # so that no registration misses the key that answers next.
                await self.keys.sync()
                continue
            self.context.log.info(
                "identifiers.registered", registered=new, already_registered=total - new
            )
            return Registration(new, total - new)
        raise StoreUnavailableError("the OPRF keys kept changing; retry the registration")

    async def _index(
        self,
        principal: Principal,
        case_reference: str,
        wanted: list[Identifier],
        hit: matching.Hit,
    ) -> tuple[int, int]:
        writing = self.keys.writing()
        if len(wanted) >= _OFFLOAD_AT:
            indexed = await asyncio.to_thread(self._all_rows, writing, wanted, hit, principal)
        else:
            indexed = self._all_rows(writing, wanted, hit, principal)
        rows = indexed[0]
        now = self.context.clock.now()

        def commit(connection: Connection) -> int:
            # Under the audit lock, which the rotation's copy also takes: either these rows
            # are committed before the copy reads its batch, or the keys read here are new.
            audit_log.lock(connection)
            if match_keys.writing_versions(connection) != [v for v, _ in writing]:
                raise _KeysChanged
            new = match_index.insert_new(connection, rows)
            for also in indexed[1:]:
                match_index.insert_new(connection, also)
            audit_log.append(
                connection,
                [
                    AuditRecord(
                        occurred_at=now,
                        actor=principal.actor,
                        action="identifiers.registered",
                        details={
                            "case_reference": case_reference,
                            "registered": str(new),
                            "already_registered": str(len(rows) - new),
                            "key_version": str(writing[0][0]),
                        },
                    )
                ],
            )
            return new

        return await self.context.store.write(commit), len(rows)

    def _all_rows(
        self,
        writing: list[tuple[int, ServerKey]],
        identifiers: list[Identifier],
        hit: matching.Hit,
        principal: Principal,
    ) -> list[list[match_index.IndexRow]]:
        """The index rows under each writing key, the active key's first."""
        return [self._rows(v, key, identifiers, hit, principal) for v, key in writing]

    def _rows(
        self,
        version: int,
        key: ServerKey,
        identifiers: list[Identifier],
        hit: matching.Hit,
        principal: Principal,
    ) -> list[match_index.IndexRow]:
        now = to_millis(self.context.clock.now())
        return [
            match_index.index_row(
                version, key.evaluate_element(identifier.oprf_input()), hit, now, principal.actor
            )
            for identifier in identifiers
        ]


def check_count(count: int) -> None:
    """Refuse more than MAX_IDENTIFIERS in one call (callers check before converting them).

    Raises:
        ResourceLimitError: too many.
    """
    if count > MAX_IDENTIFIERS:
        raise ResourceLimitError(f"identifiers: at most {MAX_IDENTIFIERS} in one call, got {count}")


def normalized(raw: RawIdentifier, index: int) -> Identifier:
    """`raw` normalized, errors naming identifiers[index] and its part."""
    field = f"identifiers[{index}]"
    if raw.type is None:
        raise ValidationError(f"{field}.type", "is required")
    return normalize(raw.type, raw.value, raw.qualifier, field=f"{field}.value")
