"""Synthetic notices written straight into a node's store, for the store-growth measure.

Filling a store with 1,000,000 notices through the API takes hours; this copies
real rows instead. A template is a notice the node really received (its row,
its envelope bytes, its own receipt) or really sent (its row, envelope, outbox
row and the peer's receipt); each copy has the template's shape and size and a
fresh time-ordered message id, as UUIDv7 ids are. Copies are written through the
store's own tables, in batches, while the node serves; only the queries measured
afterwards go through the API.
"""

from __future__ import annotations

import dataclasses
import random
import time
import uuid
from typing import Any

from sqlalchemy import Connection, insert, select, text

from exchange.store.engine import Store
from exchange.store.tables import ENVELOPES, NOTICES, OUTBOX, RECEIPTS

__all__ = ["Template", "analyze", "copy_notices", "template", "timed_copy"]

BATCH = 5_000


@dataclasses.dataclass(frozen=True)
class Template:
    """The rows of one real notice, without the columns each copy sets anew."""

    notice: dict[str, Any]
    envelope: dict[str, Any]
    receipts: list[dict[str, Any]]
    outbox: list[dict[str, Any]]


def template(store: Store, message_id: str) -> Template:
    """The rows of the stored notice `message_id`."""

    def read(c: Connection) -> Template:
        def rows(table: Any) -> list[dict[str, Any]]:
            return [
                dict(row)
                for row in c.execute(
                    select(table).where(table.c.message_id == message_id)
                ).mappings()
            ]

        (notice,) = rows(NOTICES)
        (envelope,) = rows(ENVELOPES)
        outbox = [{k: v for k, v in row.items() if k != "id"} for row in rows(OUTBOX)]
        return Template(notice, envelope, rows(RECEIPTS), outbox)

    return store.read(read)


def _message_id(millis: int) -> str:
    """A UUIDv7-shaped id at `millis` (random bits; copies are never verified)."""
    rand = random.getrandbits(74)
    value = (
        (millis << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & (2**62 - 1))
    )
    return str(uuid.UUID(int=value))


def copy_notices(store: Store, templates: list[Template], count: int) -> list[list[str]]:
    """Write `count` copies of the templates in turn; the copies' ids, per template.

    Copies are spread over the 30 days before the templates were received, so
    the real notices stay the newest and the copies are spread as a month of
    traffic is.
    """
    newest = min(t.notice["received_at"] or t.notice["created_at"] for t in templates)
    span = 30 * 24 * 3600 * 1000
    ids: list[list[str]] = [[] for _ in templates]
    for start in range(0, count, BATCH):
        notices, envelopes, receipts, outbox = [], [], [], []
        for n in range(start, min(start + BATCH, count)):
            source = templates[n % len(templates)]
            at = newest - span + span * n // max(count, 1)
            message_id = _message_id(at)
            ids[n % len(templates)].append(message_id)
            notice = {**source.notice, "message_id": message_id}
            if notice["received_at"] is not None:
                notice["received_at"] = at
            if notice["client_request_id"] is not None:
                notice["client_request_id"] = f"bench-{message_id}"
            notices.append(notice)
            envelopes.append({**source.envelope, "message_id": message_id})
            receipts += [{**row, "message_id": message_id} for row in source.receipts]
            outbox += [{**row, "message_id": message_id} for row in source.outbox]
        with store.engine.begin() as connection:
            connection.execute(insert(NOTICES), notices)
            connection.execute(insert(ENVELOPES), envelopes)
            if receipts:
                connection.execute(insert(RECEIPTS), receipts)
            if outbox:
                connection.execute(insert(OUTBOX), outbox)
    return ids


def analyze(store: Store) -> None:
    """On PostgreSQL, refresh the planner's statistics of the tables just filled.

    Autovacuum analyzes a table once about a tenth of it changed: a store that
    grew over months has current statistics, but one filled in a minute may be
    measured before autovacuum came round, with plans made for its old size.
    SQLite keeps no statistics unless told to (the exchange does not), so it is
    left as a node leaves it.
    """
    if store.engine.dialect.name != "postgresql":
        return
    with store.engine.begin() as connection:
        for table in (NOTICES, ENVELOPES, RECEIPTS, OUTBOX):
            connection.execute(text(f"ANALYZE {table.name}"))


def timed_copy(
    store: Store, templates: list[Template], count: int
) -> tuple[list[list[str]], float]:
    began = time.perf_counter()
    ids = copy_notices(store, templates, count)
    analyze(store)
    return ids, time.perf_counter() - began
