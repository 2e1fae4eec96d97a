"""The transactional outbox: submissions, claims with leases, retries and receipts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import IntegrityError

from exchange.errors import StoreUnavailableError
from exchange.store import outbox
from exchange.store.engine import Store
from exchange.store.notices import OUTGOING, find_notice, load_envelope
from exchange.store.tables import OUTBOX

from ._builders import (
    NODE_XA,
    NODE_XB,
    NODE_XC,
    START,
    Notices,
    Signed,
    count_rows,
    millis,
    receipt_for,
)

T0 = millis(START)
SECOND = 1000
LEASE = 30 * SECOND


def submit(
    store: Store,
    signed: Signed,
    *,
    now: int = T0,
    client_id: str = "client-1",
    client_request_id: str | None = None,
    request_digest: bytes | None = None,
    lease_until: int = 0,
) -> list[outbox.OutboxItem]:
    return store.write(
        lambda c: outbox.insert_outgoing(
            c,
            header=signed.header,
            envelope=signed.envelope,
            client_id=client_id,
            client_request_id=client_request_id,
            request_digest=request_digest,
            now=now,
            lease_until=lease_until,
        )
    )


def claim(
    store: Store,
    *,
    now: int,
    limit: int = 10,
    lease: int = LEASE,
    max_bytes: int = outbox.CLAIM_BYTES,
) -> list[outbox.OutboxItem]:
    return store.write(
        lambda c: outbox.claim_due(c, now=now, lease_ms=lease, limit=limit, max_bytes=max_bytes)
    )


def claimed(items: list[outbox.OutboxItem]) -> list[tuple[str, str]]:
    return [(item.message_id, item.recipient_node_id) for item in items]


def deliver(
    store: Store, item: outbox.OutboxItem, signed: Signed, *, accepted: bool = True, now: int
) -> bool:
    landed = landing(item, signed, accepted=accepted, now=now)
    return item.outbox_id in store.write(lambda c: outbox.record_receipts(c, [landed]))


def landing(
    item: outbox.OutboxItem, signed: Signed, *, accepted: bool = True, now: int
) -> outbox.Landing:
    received_at = START + dt.timedelta(milliseconds=now - T0)
    return outbox.Landing(
        outbox_id=item.outbox_id,
        message_id=item.message_id,
        recipient_node_id=item.recipient_node_id,
        receipt=receipt_for(
            signed, item.recipient_node_id, received_at=received_at, accepted=accepted
        ),
        accepted=accepted,
        received_at=now,
        error="" if accepted else "rejected: expired",
        now=now,
    )


@pytest.fixture
def notices() -> Notices:
    return Notices()


# --- submission --------------------------------------------------------------------------------


def test_insert_outgoing_writes_notice_envelope_and_one_row_per_recipient(store, notices):
    signed = notices.envelope(recipients=(NODE_XB, NODE_XC))

    submit(store, signed, client_request_id="req-1", request_digest=b"d" * 32)

    record = store.read(lambda c: find_notice(c, signed.message_id))
    assert record is not None
    assert (record.direction, record.state, record.sender_node_id) == (OUTGOING, "sent", NODE_XA)
    assert record.recipient_node_ids == (NODE_XB, NODE_XC)
    assert record.handling == signed.header.handling
    assert (record.created_at, record.expires_at) == (
        millis(signed.header.created_at),
        millis(signed.header.expires_at),
    )
    assert store.read(lambda c: load_envelope(c, signed.message_id)) == signed.envelope
    status = store.read(lambda c: outbox.delivery_status(c, signed.message_id))
    assert status == [
        outbox.DeliveryRecord(NODE_XB, "pending", 0, T0, "", None),
        outbox.DeliveryRecord(NODE_XC, "pending", 0, T0, "", None),
    ]


def test_insert_outgoing_is_all_or_nothing_with_its_transaction(store, notices):
    signed = notices.envelope(recipients=(NODE_XB, NODE_XC))

    def insert_then_fail(connection):
        outbox.insert_outgoing(
            connection,
            header=signed.header,
            envelope=signed.envelope,
            client_id="client-1",
            client_request_id="req-1",
            request_digest=None,
            now=T0,
        )
        raise RuntimeError("the audit append failed")

    with pytest.raises(RuntimeError):
        store.write(insert_then_fail)

    assert [count_rows(store, t) for t in ("notices", "envelopes", "outbox")] == [0, 0, 0]


def test_a_reused_idempotency_key_is_refused_by_the_database(store, notices):
    first, second = notices.envelope(), notices.envelope()
    submit(store, first, client_request_id="req-1")

    with pytest.raises(IntegrityError):
        submit(store, second, client_request_id="req-1")

    assert store.read(lambda c: find_notice(c, second.message_id)) is None
    assert [count_rows(store, t) for t in ("notices", "envelopes", "outbox")] == [1, 1, 1]


def test_find_submission_looks_up_the_idempotency_key_per_client(store, notices):
    signed = notices.envelope(recipients=(NODE_XB, NODE_XC))
    submit(store, signed, client_id="client-1", client_request_id="req-1", request_digest=b"\x01")
    # Submissions without a key never collide with each other.
    submit(store, notices.envelope(), client_id="client-1")
    submit(store, notices.envelope(), client_id="client-1")

    found = store.read(lambda c: outbox.find_submission(c, "client-1", "req-1"))

    assert found == outbox.Submission(
        message_id=signed.message_id,
        recipient_node_ids=(NODE_XB, NODE_XC),
        created_at=millis(signed.header.created_at),
        expires_at=millis(signed.header.expires_at),
        request_digest=b"\x01",
    )
    assert store.read(lambda c: outbox.find_submission(c, "client-2", "req-1")) is None
    assert store.read(lambda c: outbox.find_submission(c, "client-1", "req-2")) is None


# --- claims ------------------------------------------------------------------------------------


def test_claim_due_returns_due_rows_oldest_first_up_to_the_limit(store, notices):
    first, second, third = (notices.envelope() for _ in range(3))
    # Submitted out of order: the row due earliest is claimed first, whatever its id.
    submit(store, second, now=T0 + 2 * SECOND)
    submit(store, first, now=T0 + 1 * SECOND)
    submit(store, third, now=T0 + 3 * SECOND)

    items = claim(store, now=T0 + 5 * SECOND, limit=2)

    assert claimed(items) == [(first.message_id, NODE_XB), (second.message_id, NODE_XB)]
    assert items[0].envelope == first.envelope
    assert items[0].envelope_digest == first.envelope.digest()
    assert items[0].expires_at == millis(first.header.expires_at)
    assert items[0].attempts == 0


def test_claim_due_breaks_ties_by_row_id(store, notices):
    signed = notices.envelope(recipients=(NODE_XC, NODE_XB))
    submit(store, signed)

    items = claim(store, now=T0)

    assert claimed(items) == [(signed.message_id, NODE_XC), (signed.message_id, NODE_XB)]


def _size(signed: Signed) -> int:
    return len(signed.envelope.header) + len(signed.envelope.sealed_payload)


def test_claim_due_stops_before_the_batch_passes_its_bytes(store, notices):
    first, second, third = (notices.envelope() for _ in range(3))
    for signed in (first, second, third):
        submit(store, signed)
    budget = _size(first) + _size(second) + _size(third) - 1

    items = claim(store, now=T0, limit=10, max_bytes=budget)

    assert claimed(items) == [(first.message_id, NODE_XB), (second.message_id, NODE_XB)]
    # The one left is not leased: the next batch takes it.
    assert claimed(claim(store, now=T0, limit=10, max_bytes=budget)) == [
        (third.message_id, NODE_XB)
    ]


def test_claim_due_takes_one_row_larger_than_the_budget(store, notices):
    first, second = notices.envelope(), notices.envelope()
    submit(store, first)
    submit(store, second)

    items = claim(store, now=T0, limit=10, max_bytes=1)

    assert claimed(items) == [(first.message_id, NODE_XB)]
    assert items[0].envelope == first.envelope


def test_claim_due_counts_an_envelope_once_for_all_its_recipients(store, notices):
    both = notices.envelope(recipients=(NODE_XB, NODE_XC))
    other = notices.envelope()
    submit(store, both)
    submit(store, other)

    items = claim(store, now=T0, limit=10, max_bytes=_size(both))

    assert claimed(items) == [(both.message_id, NODE_XB), (both.message_id, NODE_XC)]
    assert items[0].envelope == items[1].envelope == both.envelope
    assert items[1].envelope_digest == both.envelope.digest()


def test_claim_due_skips_rows_not_yet_due(store, notices):
    later = notices.envelope()
    submit(store, later, now=T0 + 10 * SECOND)

    assert claim(store, now=T0 + 10 * SECOND - 1) == []
    assert claimed(claim(store, now=T0 + 10 * SECOND)) == [(later.message_id, NODE_XB)]


def test_claim_due_skips_rows_that_are_no_longer_pending(store, notices):
    delivered, failed, pending = (notices.envelope() for _ in range(3))
    for signed in (delivered, failed, pending):
        submit(store, signed)
    items = {item.message_id: item for item in claim(store, now=T0, lease=1)}
    assert deliver(store, items[delivered.message_id], delivered, now=T0 + 1)
    assert store.write(
        lambda c: outbox.fail(
            c, outbox_id=items[failed.message_id].outbox_id, error="expired", now=T0 + 1
        )
    )

    assert claimed(claim(store, now=T0 + 10 * SECOND)) == [(pending.message_id, NODE_XB)]


def test_a_claim_leases_its_rows_so_a_second_claim_at_the_same_time_gets_nothing(store, notices):
    submit(store, notices.envelope())

    assert len(claim(store, now=T0)) == 1
    assert claim(store, now=T0) == []
    assert claim(store, now=T0 + LEASE - 1) == []


def test_insert_outgoing_returns_its_rows_as_a_claim_would(store, notices):
    signed = notices.envelope(recipients=(NODE_XB, NODE_XC))

    inserted = submit(store, signed, lease_until=T0 + LEASE)
    again = claim(store, now=T0 + LEASE)

    def unleased(items: list[outbox.OutboxItem]) -> list[outbox.OutboxItem]:
        return sorted((dataclasses.replace(i, lease_until=0) for i in items), key=str)

    assert [i.lease_until for i in again] == [T0 + 2 * LEASE] * 2
    assert unleased(again) == unleased(inserted), "the same items, once the lease ends"


def test_rows_inserted_with_a_lease_are_not_claimed_until_it_ends(store, notices):
    # Handed to the submitting process's worker in memory: nobody else sends them meanwhile.
    signed = notices.envelope()
    (item,) = submit(store, signed, lease_until=T0 + LEASE)

    assert item.lease_until == T0 + LEASE
    assert claim(store, now=T0 + LEASE - 1) == []
    assert claimed(claim(store, now=T0 + LEASE)) == [(signed.message_id, NODE_XB)]


def test_a_claimed_row_is_claimable_again_when_its_lease_ends(store, notices):
    # Crash safety: the worker that claimed the row died without finishing it.
    signed = notices.envelope()
    submit(store, signed)
    (first,) = claim(store, now=T0)

    (again,) = claim(store, now=T0 + LEASE)

    assert again.outbox_id == first.outbox_id
    assert again.attempts == 0, "a lost lease is not a delivery attempt"


def test_workers_claiming_at_once_never_share_a_row(store, notices):
    # Several workers, each claiming one row per transaction until none is left.
    rows = []
    for _ in range(8):
        signed = notices.envelope(recipients=(NODE_XB, NODE_XC))
        submit(store, signed)
        rows += [(signed.message_id, NODE_XB), (signed.message_id, NODE_XC)]
    start = threading.Barrier(4)
    taken: list[list[tuple[str, str]]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            start.wait()
            while items := claim(store, now=T0, limit=1):
                taken[index] += claimed(items)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    every_claim = [row for rows_of_one in taken for row in rows_of_one]
    assert sorted(every_claim) == sorted(rows)


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
def test_postgresql_concurrent_claims_skip_each_others_locked_rows(store, notices):
    # FOR UPDATE SKIP LOCKED: two transactions open at once, neither committed,
    # never get the same row, and the second does not wait for the first.
    for _ in range(6):
        submit(store, notices.envelope())
    with store.engine.connect() as first, store.engine.connect() as second:
        first_transaction = first.begin()
        second_transaction = second.begin()
        # Were the rows not skipped, the second claim would wait: fail instead of hanging.
        second.execute(text("SET LOCAL lock_timeout = '5s'"))

        mine = outbox.claim_due(first, now=T0, lease_ms=LEASE, limit=3)
        theirs = outbox.claim_due(second, now=T0, lease_ms=LEASE, limit=10)

        first_transaction.commit()
        second_transaction.commit()

    assert len(mine) == 3
    assert len(theirs) == 3
    assert {item.outbox_id for item in mine}.isdisjoint(item.outbox_id for item in theirs)
    assert claim(store, now=T0) == []


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
def test_sqlite_a_second_claimer_waits_for_the_first_transaction(store, notices):
    # SQLite has no row locks: BEGIN IMMEDIATE makes claimers take turns.
    for _ in range(2):
        submit(store, notices.envelope())
    impatient = Store.open(
        store.engine.url.render_as_string(hide_password=False), lock_timeout_ms=50
    )
    try:
        with store.engine.connect() as first:
            first.execution_options(sqlite_begin="IMMEDIATE")
            with first.begin():
                mine = outbox.claim_due(first, now=T0, lease_ms=LEASE, limit=1)
                with pytest.raises(StoreUnavailableError):
                    claim(impatient, now=T0)
        theirs = claim(impatient, now=T0)
    finally:
        impatient.dispose()

    assert len(mine) == 1
    assert len(theirs) == 1
    assert mine[0].outbox_id != theirs[0].outbox_id


# --- retries, receipts, failures ---------------------------------------------------------------


def test_retry_later_counts_the_attempt_and_reschedules(store, notices):
    signed = notices.envelope()
    submit(store, signed)
    (item,) = claim(store, now=T0)

    store.write(
        lambda c: outbox.retry_later(
            c,
            outbox_id=item.outbox_id,
            error="peer unreachable",
            next_attempt_at=T0 + 5 * SECOND,
            now=T0 + 1,
        )
    )

    (record,) = store.read(lambda c: outbox.delivery_status(c, signed.message_id))
    assert record == outbox.DeliveryRecord(
        NODE_XB, "pending", 1, T0 + 5 * SECOND, "peer unreachable", None
    )
    # The lease is released: the row is due at its new time, not at the lease's end.
    assert claim(store, now=T0 + 5 * SECOND - 1) == []
    (again,) = claim(store, now=T0 + 5 * SECOND)
    assert again.attempts == 1


def test_stored_errors_are_cut_to_500_characters(store, notices):
    signed = notices.envelope()
    submit(store, signed)
    (item,) = claim(store, now=T0)

    store.write(
        lambda c: outbox.retry_later(
            c, outbox_id=item.outbox_id, error="x" * 600, next_attempt_at=T0, now=T0
        )
    )

    (record,) = store.read(lambda c: outbox.delivery_status(c, signed.message_id))
    assert record.last_error == "x" * 500


RECEIPT_CASES = [
    pytest.param(True, "delivered", "", id="accepted-ends-delivered"),
    pytest.param(False, "failed", "rejected: expired", id="rejected-ends-failed"),
]


@pytest.mark.parametrize(("accepted", "state", "error"), RECEIPT_CASES)
def test_record_receipt_ends_the_row_exactly_once(store, notices, accepted, state, error):
    signed = notices.envelope()
    submit(store, signed)
    (item,) = claim(store, now=T0)

    assert deliver(store, item, signed, accepted=accepted, now=T0 + 1) is True
    assert deliver(store, item, signed, accepted=accepted, now=T0 + 2) is False

    (record,) = store.read(lambda c: outbox.delivery_status(c, signed.message_id))
    expected = receipt_for(
        signed, NODE_XB, received_at=START + dt.timedelta(milliseconds=1), accepted=accepted
    )
    assert record == outbox.DeliveryRecord(NODE_XB, state, 1, T0, error, expected)
    assert count_rows(store, "receipts") == 1


def test_a_batch_of_receipts_ends_its_rows_in_a_statement_per_outcome_and_one_insert(
    store, notices
):
    envelopes = {}
    for _ in range(5):
        signed = notices.envelope()
        submit(store, signed)
        envelopes[signed.message_id] = signed
    items = claim(store, now=T0)
    finished_elsewhere = items[4]
    assert store.write(
        lambda c: outbox.fail(c, outbox_id=finished_elsewhere.outbox_id, error="e", now=T0)
    )
    landings = [
        landing(item, envelopes[item.message_id], accepted=index != 1, now=T0 + 1)
        for index, item in enumerate(items)
    ]
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args):
        statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        ended = store.write(lambda c: outbox.record_receipts(c, landings))
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)

    assert ended == {item.outbox_id for item in items[:4]}
    assert len([s for s in statements if s.lstrip().upper().startswith(("UPDATE", "INSERT"))]) == 3
    states = {
        item.message_id: store.read(lambda c, i=item: outbox.delivery_status(c, i.message_id))[0]
        for item in items
    }
    assert [states[item.message_id].state for item in items] == [
        "delivered",
        "failed",
        "delivered",
        "delivered",
        "failed",
    ]
    assert states[items[1].message_id].last_error == "rejected: expired"
    assert states[items[4].message_id].last_error == "e"
    assert count_rows(store, "receipts") == 4


def test_a_late_receipt_for_a_failed_row_is_not_stored(store, notices):
    signed = notices.envelope()
    submit(store, signed)
    (item,) = claim(store, now=T0)
    assert store.write(lambda c: outbox.fail(c, outbox_id=item.outbox_id, error="e", now=T0))

    assert deliver(store, item, signed, now=T0 + 1) is False
    assert count_rows(store, "receipts") == 0


def test_fail_ends_a_pending_row_once(store, notices):
    signed = notices.envelope()
    submit(store, signed)
    (item,) = claim(store, now=T0)

    def fail(connection):
        return outbox.fail(connection, outbox_id=item.outbox_id, error="expired", now=T0 + 1)

    assert store.write(fail) is True
    assert store.write(fail) is False
    (record,) = store.read(lambda c: outbox.delivery_status(c, signed.message_id))
    assert (record.state, record.attempts, record.last_error) == ("failed", 1, "expired")


def test_delivery_status_joins_each_recipients_receipt(store, notices):
    signed = notices.envelope(recipients=(NODE_XB, NODE_XC))
    submit(store, signed)
    items = {item.recipient_node_id: item for item in claim(store, now=T0)}
    deliver(store, items[NODE_XC], signed, now=T0 + 1)

    status = store.read(lambda c: outbox.delivery_status(c, signed.message_id))

    assert [(r.recipient_node_id, r.state, r.receipt is not None) for r in status] == [
        (NODE_XB, "pending", False),
        (NODE_XC, "delivered", True),
    ]
    assert status[1].receipt == receipt_for(
        signed, NODE_XC, received_at=START + dt.timedelta(milliseconds=1)
    )


def test_delivery_status_of_an_unknown_message_is_empty(store, notices):
    submit(store, notices.envelope())
    unknown = notices.envelope()

    assert store.read(lambda c: outbox.delivery_status(c, unknown.message_id)) == []


# --- next_due_at -------------------------------------------------------------------------------


def test_next_due_at_is_none_without_pending_rows(store, notices):
    assert store.read(outbox.next_due_at) is None
    signed = notices.envelope()
    submit(store, signed)
    (item,) = claim(store, now=T0)
    deliver(store, item, signed, now=T0 + 1)

    assert store.read(outbox.next_due_at) is None


def test_next_due_at_is_the_earliest_time_a_pending_row_can_be_claimed(store, notices):
    leased, later = notices.envelope(), notices.envelope()
    submit(store, leased, now=T0)
    submit(store, later, now=T0 + 40 * SECOND)
    assert store.read(outbox.next_due_at) == T0

    claim(store, now=T0, limit=1, lease=LEASE)

    # The leased row is due at T0 but cannot be claimed before its lease ends.
    assert store.read(outbox.next_due_at) == T0 + LEASE
    claim(store, now=T0 + LEASE, limit=1, lease=20 * SECOND)
    assert store.read(outbox.next_due_at) == T0 + 40 * SECOND


def test_a_receipt_for_a_delivery_in_flight_when_withdrawn_is_still_stored(store, notices):
    # The envelope left before the withdrawal cancelled the row: the recipient has it.
    signed = notices.envelope()
    submit(store, signed)
    (item,) = claim(store, now=T0)
    assert store.write(lambda c: outbox.cancel_pending(c, signed.message_id, T0)) == 1

    assert deliver(store, item, signed, now=T0 + 1) is True
    assert deliver(store, item, signed, now=T0 + 2) is False
    (record,) = store.read(lambda c: outbox.delivery_status(c, signed.message_id))
    assert (record.state, record.last_error) == ("delivered", "")
    assert record.receipt is not None


def test_cancel_pending_ends_only_pending_rows(store, notices):
    signed = notices.envelope(recipients=(NODE_XB, NODE_XC))
    submit(store, signed)
    first, _ = claim(store, now=T0)
    deliver(store, first, signed, now=T0 + 1)

    assert store.write(lambda c: outbox.cancel_pending(c, signed.message_id, T0 + 2)) == 1
    states = {
        r.recipient_node_id: (r.state, r.last_error)
        for r in store.read(lambda c: outbox.delivery_status(c, signed.message_id))
    }
    assert states == {
        NODE_XB: ("delivered", ""),
        NODE_XC: ("failed", outbox.WITHDRAWN_BEFORE_DELIVERY),
    }


def test_postpone_peer_puts_off_a_down_peers_due_backlog_in_one_statement(store, notices):
    waiting = notices.envelope()  # to XB: put off
    leased = notices.envelope()  # to XB, claimed by a worker: left to it
    other_peer = notices.envelope(recipients=(NODE_XC,))
    expiring = notices.envelope(ttl=dt.timedelta(seconds=30))  # to XB, expires first
    later = notices.envelope()  # to XB, due after the outage anyway
    submit(store, leased)
    (claimed_row,) = claim(store, now=T0, limit=1)
    for signed in (waiting, other_peer, expiring):
        submit(store, signed)
    submit(store, later, now=T0 + 120 * SECOND)
    until = T0 + 60 * SECOND

    moved = store.write(
        lambda c: outbox.postpone_peer(c, NODE_XB, until=until, error="UNAVAILABLE: down", now=T0)
    )

    def due(signed: Signed) -> tuple[int, int, str]:
        (record,) = store.read(lambda c: outbox.delivery_status(c, signed.message_id))
        return record.next_attempt_at, record.attempts, record.last_error

    assert moved == 1
    assert due(waiting) == (until, 0, "UNAVAILABLE: down"), "no attempt counted"
    assert claimed_row.message_id == leased.message_id
    assert due(leased) == (T0, 0, "")
    assert due(other_peer) == (T0, 0, "")
    assert due(expiring) == (T0, 0, ""), "its failure is reported when it expires"
    assert due(later) == (T0 + 120 * SECOND, 0, "")


def test_resume_peer_makes_a_returned_peers_waiting_rows_due_now(store, notices):
    leased = notices.envelope()  # to XB, claimed by a worker: left to it
    put_off = notices.envelope()  # to XB, waiting for the peer's next try: due now
    later = notices.envelope()  # to XB, due later by its own time: due now
    other_peer = notices.envelope(recipients=(NODE_XC,))  # put off too, but not XB
    ended = notices.envelope()  # to XB, withdrawn: stays ended
    submit(store, leased)
    claim(store, now=T0, limit=1)
    for signed in (put_off, other_peer, ended):
        submit(store, signed)
    submit(store, later, now=T0 + 120 * SECOND)
    until = T0 + 60 * SECOND
    for peer in (NODE_XB, NODE_XC):
        store.write(lambda c, p=peer: outbox.postpone_peer(c, p, until=until, error="down", now=T0))
    store.write(lambda c: outbox.cancel_pending(c, ended.message_id, T0))

    now = T0 + 5 * SECOND
    resumed = store.write(lambda c: outbox.resume_peer(c, NODE_XB, now=now))

    def due(signed: Signed) -> tuple[int, str]:
        (record,) = store.read(lambda c: outbox.delivery_status(c, signed.message_id))
        return record.next_attempt_at, record.state

    assert resumed == 2
    assert due(put_off) == (now, outbox.PENDING)
    assert due(later) == (now, outbox.PENDING)
    assert due(leased) == (T0, outbox.PENDING)
    assert due(other_peer) == (until, outbox.PENDING)
    assert due(ended)[1] == outbox.FAILED


def test_claim_probe_takes_the_peers_row_due_first_whether_due_or_not(store, notices):
    leased = notices.envelope()  # to XB, claimed by a worker: left to it
    parked = notices.envelope()  # to XB, parked far ahead
    parked_later = notices.envelope()  # to XB, parked further still
    other_peer = notices.envelope(recipients=(NODE_XC,))  # due, but not XB
    ended = notices.envelope()  # to XB, withdrawn
    submit(store, leased)
    claim(store, now=T0, limit=1)
    for signed in (parked_later, parked, other_peer, ended):
        submit(store, signed)
    store.write(lambda c: outbox.cancel_pending(c, ended.message_id, T0))
    ids = store.read(lambda c: dict(c.execute(select(OUTBOX.c.message_id, OUTBOX.c.id)).all()))
    # Parked out of their order of submission: the one due first is taken first.
    due = {ids[parked.message_id]: T0 + 60 * SECOND, ids[parked_later.message_id]: T0 + 90 * SECOND}
    store.write(lambda c: outbox.postpone(c, due, error="UNAVAILABLE: down", now=T0))

    (probe,) = store.write(lambda c: outbox.claim_probe(c, NODE_XB, now=T0, lease_ms=LEASE))
    assert probe.message_id == parked.message_id
    assert probe.lease_until == T0 + LEASE
    (second,) = store.write(lambda c: outbox.claim_probe(c, NODE_XB, now=T0, lease_ms=LEASE))
    assert second.message_id == parked_later.message_id
    assert store.write(lambda c: outbox.claim_probe(c, NODE_XB, now=T0, lease_ms=LEASE)) == []
