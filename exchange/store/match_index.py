"""The hit/no-hit index: what registration writes and what a bucket query reads."""

from __future__ import annotations

import dataclasses
import os

from sqlalchemy import Connection, insert, select

from exchange import matching
from exchange.store.tables import MATCH_INDEX as _index

__all__ = ["IndexRow", "bucket_entries", "index_row", "insert_new"]


@dataclasses.dataclass(frozen=True)
class IndexRow:
    key_version: int
    bucket: int
    element: bytes
    tag: bytes
    sealed_hit: bytes
    case_reference: str
    registered_at: int
    registered_by: str


def index_row(
    key_version: int, element: bytes, hit: matching.Hit, registered_at: int, registered_by: str
) -> IndexRow:
    """The entry of OPRF `element` under `key_version`: bucket, tag and a freshly sealed hit."""
    match_token = matching.token(element)
    entry = matching.seal_hit(match_token, hit, os.urandom(16))
    return IndexRow(
        key_version=key_version,
        bucket=matching.bucket(match_token, 32),
        element=element,
        tag=entry.tag,
        sealed_hit=entry.sealed_hit,
        case_reference=hit.case_reference,
        registered_at=registered_at,
        registered_by=registered_by,
    )


def insert_new(connection: Connection, rows: list[IndexRow]) -> int:
    """Insert the rows not yet indexed for their case; returns how many were new.

    Runs in the registering transaction, so what is already there cannot
    change between the look and the insert for the same case (the unique
    constraint settles a concurrent registration of the same case).
    """
    if not rows:
        return 0
    version, case = rows[0].key_version, rows[0].case_reference
    present: set[bytes] = set()
    elements = [row.element for row in rows]
    for start in range(0, len(elements), 500):
        chunk = elements[start : start + 500]
        found = connection.execute(
            select(_index.c.element).where(
                _index.c.key_version == version,
                _index.c.case_reference == case,
                _index.c.element.in_(chunk),
            )
        )
        present.update(bytes(e) for e in found.scalars())
    new, seen = [], set(present)
    for row in rows:
        if row.element not in seen:
            seen.add(row.element)
            new.append(dataclasses.asdict(row))
    if new:
        connection.execute(insert(_index), new)
    return len(new)


def bucket_entries(
    connection: Connection, key_version: int, prefix: int, prefix_bits: int
) -> list[tuple[bytes, bytes]]:
    """(tag, sealed hit) of every entry whose token starts with `prefix` (`prefix_bits` long).

    Rows keep the token's first 32 bits, so any prefix width is a range scan of
    the (key_version, bucket) index.
    """
    if not 1 <= prefix_bits <= 32 or not 0 <= prefix < 2**prefix_bits:
        raise ValueError(f"prefix {prefix} does not fit {prefix_bits} bits")
    low = prefix << (32 - prefix_bits)
    high = low + (1 << (32 - prefix_bits))
    rows = connection.execute(
        select(_index.c.tag, _index.c.sealed_hit).where(
            _index.c.key_version == key_version,
            _index.c.bucket >= low,
            _index.c.bucket < high,
        )
    )
    return [(bytes(tag), bytes(sealed)) for tag, sealed in rows]
