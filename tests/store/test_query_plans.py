"""Query plans: the statements of the hot read paths read an index, never the whole table.

With 1,000,000 notices a full scan or a sort of every notice turns a 1 ms call
into seconds, so the latency of these paths must not grow with the store. This
asserts the cause instead of timing it: each path's functions run on a store
of 20,000 notices each way (a few written by the store's own functions, the
rest copies of their rows) while their statements are recorded, and each
statement is explained with the parameters it ran with. A read of a large
table is refused when it is

- a full scan: SQLite's SCAN, PostgreSQL's Seq Scan or an index scan without
  an index condition;
- a read of every row of one direction or state (an index used on `direction`
  or `state` alone), except the outbox's pending rows, which are the work
  queue, not the store;
- a sort, for the paths that read a page in order (inbox pages, events,
  claims, purges): SQLite's temporary B-tree, PostgreSQL's Sort.

SQLite plans from the schema alone (the node never runs ANALYZE), so its plans
here are those of a store of any size. PostgreSQL plans from statistics, so
the tables are analyzed; at 20,000 rows a full scan costs more than any
selective index, as it does at 1,000,000 (the plans were checked at that size).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Connection, event, insert, select

from exchange._proto.exchange.v1 import envelope_pb2 as pb
from exchange.store import inbox, lifecycle, migrate, outbox
from exchange.store.engine import Store
from exchange.store.notices import find_notice
from exchange.store.tables import ENVELOPES, INBOX_EVENTS, NOTICES, OUTBOX, RECEIPTS
from tests.conftest import ENGINES, DatabaseFactory

from ._builders import NODE_XA, NODE_XB, START, Notices, millis, receipt_for

LARGE = ("notices", "envelopes", "receipts", "outbox", "inbox_events")
T0 = millis(START)
DAY = 86_400_000


@dataclasses.dataclass(frozen=True)
class Path:
    """One read of a hot path.

    Attributes:
        ordered: it reads a page in order (no sort allowed).
        queue: it reads the outbox's pending rows (by state alone, allowed).
    """

    name: str
    run: Callable[[Connection, dict[str, str]], object]
    ordered: bool = False
    queue: bool = False


PATHS = [
    Path(
        "list-inbox-first-page",
        lambda c, ids: inbox.list_inbox(c, limit=51, before=None),
        ordered=True,
    ),
    Path(
        "list-inbox-later-page",
        lambda c, ids: inbox.list_inbox(c, limit=51, before=(T0 + 5_000, ids["incoming"])),
        ordered=True,
    ),
    Path("get-notice", lambda c, ids: inbox.get_incoming(c, ids["incoming"])),
    Path("find-notice", lambda c, ids: find_notice(c, ids["incoming"])),
    Path(
        "mark-read",
        lambda c, ids: inbox.set_state(c, ids["incoming"], inbox.READ, from_states={"received"}),
    ),
    Path("own-receipt", lambda c, ids: inbox.own_receipt(c, ids["incoming"], NODE_XB)),
    Path("delivery-status", lambda c, ids: outbox.delivery_status(c, ids["outgoing"])),
    Path(
        "withdrawals-of-a-notice",
        lambda c, ids: lifecycle.replies(
            c, ids["outgoing"], kind=pb.NOTICE_KIND_WITHDRAWAL, direction="outgoing"
        ),
    ),
    Path("watch-inbox-reread", lambda c, ids: inbox.events_after(c, 1, 100), ordered=True),
    Path(
        "outbox-claim-due",
        lambda c, ids: outbox.claim_due(c, now=T0 + DAY, lease_ms=1_000, limit=64),
        ordered=True,
        queue=True,
    ),
    Path("outbox-next-due", lambda c, ids: outbox.next_due_at(c), queue=True),
    Path(
        "outbox-claim-probe",
        # Not `queue`: one peer's rows, by their recipient, not every pending row.
        lambda c, ids: outbox.claim_probe(c, NODE_XA, now=T0 + DAY, lease_ms=1_000),
    ),
    Path(
        "purge-scan",
        lambda c, ids: lifecycle.due_for_purge(c, now=T0 + 400 * DAY, limit=100),
        ordered=True,
    ),
    Path(
        "overdue-requests",
        lambda c, ids: lifecycle.overdue_requests(
            c,
            now=T0 + DAY,
            answers={pb.NOTICE_KIND_ASSISTANCE_REQUEST: pb.NOTICE_KIND_ASSISTANCE_RESPONSE},
        ),
    ),
]


COPIES = 20_000


@pytest.fixture(scope="module", params=ENGINES)
def filled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Filled]:
    """A store of COPIES notices each way, with a few real ones written by the store's functions."""
    databases = DatabaseFactory(request.param, tmp_path_factory.mktemp("plans"))
    store = Store.open(databases.new_url(), sqlite_synchronous="NORMAL")
    try:
        migrate.upgrade(store)
        notices = Notices()
        incoming = [notices.envelope(sender=NODE_XA, recipients=(NODE_XB,)) for _ in range(5)]
        outgoing = [notices.envelope(sender=NODE_XB, recipients=(NODE_XA,)) for _ in range(5)]

        def write(connection: Connection) -> None:
            for n, signed in enumerate(incoming):
                at = START + dt.timedelta(seconds=n)
                inbox.insert_incoming(
                    connection,
                    header=signed.header,
                    envelope=signed.envelope,
                    receipt=receipt_for(signed, NODE_XB, received_at=at),
                    node_id=NODE_XB,
                    accepted=True,
                    received_at=millis(at),
                )
                inbox.insert_event(
                    connection,
                    inbox.InboxEvent(n + 1, "notice_received", signed.message_id, NODE_XA, "", T0),
                )
            for signed in outgoing:
                outbox.insert_outgoing(
                    connection,
                    header=signed.header,
                    envelope=signed.envelope,
                    client_id=None,
                    client_request_id=None,
                    request_digest=None,
                    now=T0,
                )

        store.write(write)
        _copy(store, incoming[0].message_id, outgoing[0].message_id)
        ids = {"incoming": incoming[2].message_id, "outgoing": outgoing[2].message_id}
        yield Filled(store, ids)
    finally:
        store.dispose()
        databases.close()


@dataclasses.dataclass(frozen=True)
class Filled:
    store: Store
    ids: dict[str, str]


def _copy(store: Store, incoming: str, outgoing: str) -> None:
    """COPIES copies of each real notice's rows, older than it, the outgoing ones delivered."""

    def rows(connection: Connection, table: Any, message_id: str) -> list[dict[str, Any]]:
        found = connection.execute(select(table).where(table.c.message_id == message_id))
        return [dict(row) for row in found.mappings()]

    def copy(connection: Connection) -> None:
        for message_id in (incoming, outgoing):
            (notice,) = rows(connection, NOTICES, message_id)
            (envelope,) = rows(connection, ENVELOPES, message_id)
            boxes = [
                {k: v for k, v in r.items() if k != "id"}
                for r in rows(connection, OUTBOX, message_id)
            ]
            receipts = rows(connection, RECEIPTS, message_id)
            events = rows(connection, INBOX_EVENTS, message_id)
            for start in range(0, COPIES, 5_000):
                batch = [
                    (f"{message_id[:24]}{n:012d}", T0 - DAY + n)
                    for n in range(start, start + 5_000)
                ]
                connection.execute(
                    insert(NOTICES),
                    [
                        {
                            **notice,
                            "message_id": m,
                            "received_at": notice["received_at"] and at,
                            "retain_until": at + DAY,
                        }
                        for m, at in batch
                    ],
                )
                connection.execute(
                    insert(ENVELOPES), [{**envelope, "message_id": m} for m, _ in batch]
                )
                if receipts:
                    connection.execute(
                        insert(RECEIPTS),
                        [{**r, "message_id": m} for m, _ in batch for r in receipts],
                    )
                if events:
                    connection.execute(
                        insert(INBOX_EVENTS),
                        [
                            {**e, "message_id": m, "sequence": 100 + n}
                            for n, (m, _) in enumerate(batch, start)
                            for e in events
                        ],
                    )
                if boxes:
                    connection.execute(
                        insert(OUTBOX),
                        [
                            {**b, "message_id": m, "state": "delivered"}
                            for m, _ in batch
                            for b in boxes
                        ],
                    )

    store.write(copy)
    if not store.is_sqlite:
        store.write(lambda c: [c.exec_driver_sql(f"ANALYZE {table}") for table in LARGE])


@contextmanager
def recorded(store: Store) -> Iterator[list[tuple[str, Any]]]:
    statements: list[tuple[str, Any]] = []

    def record(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            statements.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(store.engine, "before_cursor_execute", record)


def sqlite_problems(connection: Connection, statement: str, parameters: Any, path: Path) -> list:
    plan = [
        row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
    ]
    problems = [line for line in plan if re.match(rf"SCAN ({'|'.join(LARGE)})\b", line)]
    problems += [
        line
        for line in plan
        if re.search(r"\(((direction|state)=\?)\)$", line)
        and not (path.queue and line.startswith("SEARCH outbox "))
        and not path.ordered
    ]
    if path.ordered:
        problems += [line for line in plan if "TEMP B-TREE" in line]
    return problems


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


# Each index of the store's schema and the first column it is ordered by.
_LEADING_COLUMNS = """
SELECT c.relname, a.attname FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE c.relnamespace = current_schema()::regnamespace
"""


def postgres_problems(connection: Connection, statement: str, parameters: Any, path: Path) -> list:
    (raw,) = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters).one()
    plan = raw if isinstance(raw, list) else json.loads(raw)
    leading = dict(connection.exec_driver_sql(_LEADING_COLUMNS).all())
    problems = []
    for node in _nodes(plan[0]["Plan"]):
        kind, table = node["Node Type"], node.get("Relation Name")
        if table in LARGE and kind == "Seq Scan":
            problems.append(f"Seq Scan on {table}")
        index, condition = node.get("Index Name"), node.get("Index Cond", "")
        # An index read without a condition on its first column reads all of it.
        if index in leading and not re.search(rf"\b{leading[index]}\b", condition):
            problems.append(f"every entry of {index} ({kind}, {condition or 'no condition'})")
        if (
            re.fullmatch(r"\(\((direction|state)\)::text = '\w+'::text\)", condition)
            and not path.ordered
            and not (path.queue and index is not None and index.startswith("ix_outbox"))
        ):
            problems.append(f"every row of {condition} ({index})")
        if path.ordered and kind in ("Sort", "Incremental Sort"):
            problems.append(f"{kind} by {node.get('Sort Key')}")
    return problems


def _problems(store: Store, statement: str, parameters: Any, path: Path) -> list[str]:
    with store.engine.connect() as connection, connection.begin():
        explain = sqlite_problems if store.is_sqlite else postgres_problems
        found = explain(connection, statement, parameters, path)
        connection.rollback()
    return found


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_a_hot_path_reads_large_tables_through_an_index(filled: Filled, path: Path) -> None:
    store = filled.store
    with recorded(store) as statements:
        store.read(lambda c: path.run(c, filled.ids))
    assert statements, "the path ran no statement"
    problems = {}
    for statement, parameters in statements:
        found = _problems(store, statement, parameters, path)
        if found:
            problems[" ".join(statement.split())[:160]] = found
    assert problems == {}


@pytest.mark.parametrize(
    ("statement", "ordered"),
    [
        ("SELECT message_id FROM notices WHERE case_reference = 'X'", False),
        ("SELECT message_id FROM notices WHERE direction = 'incoming' AND kind = 3", False),
        ("SELECT message_id FROM notices WHERE direction = 'incoming' ORDER BY kind LIMIT 5", True),
    ],
    ids=["full-scan", "every-row-of-a-direction", "sorted-page"],
)
def test_the_check_notices_a_bad_plan(filled: Filled, statement: str, ordered: bool) -> None:
    """Not vacuous: each kind of read that is refused is reported."""
    path = Path("bad", lambda c, ids: None, ordered=ordered)
    assert _problems(filled.store, statement, () if filled.store.is_sqlite else {}, path)
