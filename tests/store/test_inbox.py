"""The receiving side: incoming notices as received, own receipts, the inbox and its events."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.exc import IntegrityError

from exchange.receipt import SignedReceipt
from exchange.store import inbox, lifecycle, outbox
from exchange.store.engine import Store
from exchange.store.notices import INCOMING, find_notice

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

ME = NODE_XB
T0 = millis(START)


def receive(
    store: Store,
    signed: Signed,
    *,
    at: dt.datetime = START,
    accepted: bool = True,
    receipt: SignedReceipt | None = None,
) -> SignedReceipt:
    receipt = receipt or receipt_for(signed, ME, received_at=at, accepted=accepted)
    store.write(
        lambda c: inbox.insert_incoming(
            c,
            header=signed.header,
            envelope=signed.envelope,
            receipt=receipt,
            node_id=ME,
            accepted=accepted,
            received_at=millis(at),
        )
    )
    return receipt


@pytest.fixture
def notices() -> Notices:
    return Notices()


def test_insert_incoming_stores_the_envelope_as_received_with_our_receipt(store, notices):
    signed = notices.envelope(recipients=(NODE_XB, NODE_XC))

    receipt = receive(store, signed, at=START + dt.timedelta(seconds=3))

    record, envelope = store.read(lambda c: inbox.get_incoming(c, signed.message_id))
    assert envelope == signed.envelope
    assert (record.direction, record.state, record.sender_node_id) == (
        INCOMING,
        "received",
        NODE_XA,
    )
    assert record.received_at == T0 + 3000
    assert store.read(lambda c: inbox.own_receipt(c, signed.message_id, ME)) == receipt


def test_the_same_message_id_twice_is_refused_and_the_first_stays_intact(store, notices):
    signed = notices.envelope()
    first = receive(store, signed, at=START)
    store.write(
        lambda c: inbox.set_state(c, signed.message_id, inbox.READ, from_states={inbox.RECEIVED})
    )

    with pytest.raises(IntegrityError):
        receive(store, signed, at=START + dt.timedelta(minutes=1), accepted=False)

    assert [count_rows(store, t) for t in ("notices", "envelopes", "receipts")] == [1, 1, 1]
    record = store.read(lambda c: find_notice(c, signed.message_id))
    assert (record.state, record.received_at) == ("read", T0)
    assert store.read(lambda c: inbox.own_receipt(c, signed.message_id, ME)) == first


def test_own_receipt_is_none_for_an_unseen_message_or_another_node(store, notices):
    seen, unseen = notices.envelope(), notices.envelope()
    receive(store, seen)

    assert store.read(lambda c: inbox.own_receipt(c, unseen.message_id, ME)) is None
    assert store.read(lambda c: inbox.own_receipt(c, seen.message_id, NODE_XC)) is None


def test_a_rejected_envelope_keeps_its_signed_rejection_but_stays_out_of_the_inbox(store, notices):
    signed = notices.envelope()

    rejection = receive(store, signed, accepted=False)

    assert store.read(lambda c: find_notice(c, signed.message_id)).state == "rejected"
    assert store.read(lambda c: inbox.own_receipt(c, signed.message_id, ME)) == rejection
    assert store.read(lambda c: inbox.get_incoming(c, signed.message_id)) is None
    assert store.read(lambda c: inbox.list_inbox(c, limit=10, before=None)) == []


def test_get_incoming_is_none_for_unknown_and_outgoing_notices(store, notices):
    sent, unknown = notices.envelope(), notices.envelope()
    store.write(
        lambda c: outbox.insert_outgoing(
            c,
            header=sent.header,
            envelope=sent.envelope,
            client_id="client-1",
            client_request_id=None,
            request_digest=None,
            now=T0,
        )
    )

    assert store.read(lambda c: inbox.get_incoming(c, sent.message_id)) is None
    assert store.read(lambda c: inbox.get_incoming(c, unknown.message_id)) is None


# --- the inbox, paged --------------------------------------------------------------------------


def page(store: Store, limit: int, before: tuple[int, str] | None) -> list[str]:
    return [
        record.message_id
        for record in store.read(lambda c: inbox.list_inbox(c, limit=limit, before=before))
    ]


def test_list_inbox_pages_newest_first_with_a_received_at_and_message_id_cursor(store, notices):
    # Five notices; two pairs received in the same millisecond, one rejected.
    times = [0, 1, 1, 2, 2]
    received = [(notices.envelope(), START + dt.timedelta(seconds=t)) for t in times]
    for signed, at in received:
        receive(store, signed, at=at)
    receive(store, notices.envelope(), at=START + dt.timedelta(seconds=3), accepted=False)
    newest_first = [
        signed.message_id
        for signed, at in sorted(received, key=lambda r: (r[1], r[0].message_id), reverse=True)
    ]

    pages, before = [], None
    while ids := page(store, 2, before):
        pages.append(ids)
        last = store.read(lambda c, m=ids[-1]: find_notice(c, m))
        before = (last.received_at, last.message_id)

    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:5]]


def test_list_inbox_shows_only_incoming_notices(store, notices):
    incoming, sent = notices.envelope(), notices.envelope()
    receive(store, incoming)
    store.write(
        lambda c: outbox.insert_outgoing(
            c,
            header=sent.header,
            envelope=sent.envelope,
            client_id="client-1",
            client_request_id=None,
            request_digest=None,
            now=T0,
        )
    )

    assert page(store, 10, None) == [incoming.message_id]


# --- state transitions -------------------------------------------------------------------------

READABLE = {inbox.RECEIVED}
ACKNOWLEDGEABLE = {inbox.RECEIVED, inbox.READ}

TRANSITIONS = [
    # (state reached first, target, allowed from, changed?, final state), id=the rule
    pytest.param("received", "read", READABLE, True, "read", id="read-a-received-notice"),
    pytest.param("read", "read", READABLE, False, "read", id="read-twice-changes-nothing"),
    pytest.param(
        "received", "acknowledged", ACKNOWLEDGEABLE, True, "acknowledged", id="ack-unread"
    ),
    pytest.param("read", "acknowledged", ACKNOWLEDGEABLE, True, "acknowledged", id="ack-read"),
    pytest.param(
        "acknowledged", "read", READABLE, False, "acknowledged", id="no-way-back-from-ack"
    ),
    pytest.param(
        "acknowledged",
        "acknowledged",
        ACKNOWLEDGEABLE,
        False,
        "acknowledged",
        id="ack-twice-changes-nothing",
    ),
    pytest.param(
        "rejected", "acknowledged", ACKNOWLEDGEABLE, False, "rejected", id="rejected-stays"
    ),
]


@pytest.mark.parametrize(("start", "target", "allowed", "changes", "final"), TRANSITIONS)
def test_set_state_moves_only_from_the_allowed_states(
    store, notices, start, target, allowed, changes, final
):
    signed = notices.envelope()
    receive(store, signed, accepted=start != "rejected")
    if start in ("read", "acknowledged"):
        store.write(lambda c: inbox.set_state(c, signed.message_id, start, from_states=READABLE))

    changed = store.write(
        lambda c: inbox.set_state(c, signed.message_id, target, from_states=allowed)
    )

    assert changed is changes
    assert store.read(lambda c: find_notice(c, signed.message_id)).state == final


def test_set_state_of_an_unknown_message_changes_nothing(store, notices):
    unknown = notices.envelope()

    assert not store.write(
        lambda c: inbox.set_state(c, unknown.message_id, inbox.READ, from_states=READABLE)
    )


# --- events ------------------------------------------------------------------------------------


def event(sequence: int, message_id: str = "m") -> inbox.InboxEvent:
    return inbox.InboxEvent(
        sequence=sequence,
        event_type=inbox.NOTICE_RECEIVED,
        message_id=message_id,
        peer_node_id=NODE_XA,
        reason="",
        occurred_at=T0 + sequence,
    )


def test_events_after_returns_events_in_sequence_order_after_the_cursor(store):
    def insert(connection):
        # Inserted out of order, with a gap (sequences are the audit entries').
        for sequence in (3, 1, 7, 2):
            inbox.insert_event(connection, event(sequence))

    store.write(insert)

    def sequences(after, limit=10):
        return [e.sequence for e in store.read(lambda c: inbox.events_after(c, after, limit))]

    assert sequences(0) == [1, 2, 3, 7]
    assert sequences(2) == [3, 7]
    assert sequences(0, limit=2) == [1, 2]
    assert sequences(7) == []
    assert store.read(lambda c: inbox.events_after(c, 2, 1)) == [event(3)]


def test_an_event_sequence_is_stored_once(store):
    store.write(lambda c: inbox.insert_event(c, event(1)))

    with pytest.raises(IntegrityError):
        store.write(lambda c: inbox.insert_event(c, event(1, "other")))

    assert store.read(lambda c: inbox.events_after(c, 0, 10)) == [event(1)]


def test_a_received_notice_is_due_for_purge_when_its_retention_ends_then_never_again(
    store, notices
):
    signed = notices.envelope()
    receive(store, signed, at=START + dt.timedelta(hours=1))
    ends = T0 + 3_600_000 + signed.header.handling.retention_days * 86_400_000

    def due(now: int) -> list[str]:
        return [
            p.message_id
            for p in store.read(lambda c: lifecycle.due_for_purge(c, now=now, limit=10))
        ]

    assert due(ends - 1) == []
    assert due(ends) == [signed.message_id]
    assert store.write(lambda c: lifecycle.purge(c, signed.message_id, ends))
    assert due(ends + 86_400_000) == []
