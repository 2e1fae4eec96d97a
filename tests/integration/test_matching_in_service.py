"""Registering identifiers for hit/no-hit matching on a running node, on both engines.

What is registered is indexed as OPRF elements and sealed bucket entries; the
clear identifiers appear nowhere in the store, its audit log or the node's log.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import grpc
import pytest
from sqlalchemy import MetaData, func, select

from exchange import matching
from exchange._proto.exchange.v1 import authority_pb2 as apb
from exchange._proto.exchange.v1 import matching_pb2 as mpb
from exchange.admin import node as node_admin
from exchange.identifiers import IdentifierType, normalize
from exchange.match_keys import ACTIVE, INDEXING, RETIRED, MatchKeys, load_key_files
from exchange.node import Node
from exchange.store import audit_log, match_index
from exchange.store.tables import MATCH_INDEX
from tests.live import Federation

pytestmark = pytest.mark.asyncio

CLEAR = {
    "passport": (mpb.IDENTIFIER_TYPE_PASSPORT, "XA", b"X 123 4567"),
    "phone": (mpb.IDENTIFIER_TYPE_PHONE, "", b"+44 20 7946 0958"),
    "email": (mpb.IDENTIFIER_TYPE_EMAIL, "", b"Suspect.Alias@Example.ORG"),
    "wallet": (mpb.IDENTIFIER_TYPE_WALLET, "BTC", b"1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"),
    "plate": (mpb.IDENTIFIER_TYPE_VEHICLE_PLATE, "XB", b"AB-123-CD"),
}
# The normalized forms, which must not appear either.
NORMALIZED = [b"X1234567", b"+442079460958", b"suspect.alias@example.org", b"AB123CD"]


def request(
    case: str = "XA-2026-0042", **only: tuple[int, str, bytes]
) -> apb.RegisterIdentifiersRequest:
    chosen = only or CLEAR
    return apb.RegisterIdentifiersRequest(
        case_reference=case,
        contact_point="XA National Police, OPSC desk",
        identifiers=[
            mpb.IdentifierValue(type=t, qualifier=q, value=v) for t, q, v in chosen.values()
        ],
    )


async def index_rows(federation: Federation, index: int = 0) -> int:
    return await federation.node(index).context.store.read(
        lambda c: c.execute(select(func.count()).select_from(MATCH_INDEX)).scalar_one()
    )


async def everything_stored(federation: Federation, index: int = 0) -> bytes:
    """Every value of every column of every table of a node's store, as bytes."""

    def dump(connection) -> bytes:
        metadata = MetaData()
        metadata.reflect(connection)
        chunks = []
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes | bytearray | memoryview):
                        chunks.append(bytes(value))
                    elif value is not None:
                        chunks.append(str(value).encode())
        return b"\n".join(chunks)

    return await federation.node(index).context.store.read(dump)


async def test_registered_identifiers_are_indexed_and_idempotent(federation: Federation) -> None:
    client = federation.client(0)
    first = await client.register_identifiers(request())
    assert (first.registered, first.already_registered) == (5, 0)
    again = await client.register_identifiers(request())
    assert (again.registered, again.already_registered) == (0, 5)
    # Another case may hold the same identifier: a hit names both cases.
    other = await client.register_identifiers(request("XA-2026-0099"))
    assert (other.registered, other.already_registered) == (5, 0)
    assert await index_rows(federation) == 10


async def test_the_index_finds_a_registered_identifier_for_a_querier(
    federation: Federation,
) -> None:
    await federation.client(0).register_identifiers(request())
    node = federation.node(0)
    key = node.match_keys.active_key
    wanted = normalize(IdentifierType.VEHICLE_PLATE, "ab 123 cd", "xb")
    blind, blinded = matching.blind_query(wanted)
    token = matching.query_token(blind, key.blind_evaluate(blinded))
    rows = await node.context.store.read(
        lambda c: match_index.bucket_entries(c, 1, matching.bucket(token, 16), 16)
    )
    assert len(rows) >= 1
    entries = [matching.BucketEntry(bytes(t), bytes(s)) for t, s in rows]
    assert matching.find_hit(token, entries) == [
        matching.Hit("XA-2026-0042", "XA National Police, OPSC desk")
    ]


async def test_no_clear_identifier_is_stored_audited_or_logged(
    federation: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        await federation.client(0).register_identifiers(request())
    stored = await everything_stored(federation)
    for _, _, value in CLEAR.values():
        assert value not in stored
    for value in NORMALIZED:
        assert value not in stored
    (entry,) = [
        e
        for e in await federation.node(0).context.store.read(
            lambda c: list(audit_log.iter_entries(c))
        )
        if e.action == "identifiers.registered"
    ]
    assert json.loads(entry.details_json) == {
        "already_registered": "0",
        "case_reference": "XA-2026-0042",
        "key_version": "1",
        "registered": "5",
    }
    logged = caplog.text.encode()
    for value in [*NORMALIZED, *(v for _, _, v in CLEAR.values())]:
        assert value not in logged


@pytest.mark.parametrize(
    ("identifiers", "field"),
    [
        (
            {
                "ok": CLEAR["phone"],
                "bad": (mpb.IDENTIFIER_TYPE_PHONE, "", b"020 7946 0958"),
            },
            "identifiers[1].value",
        ),
        ({"no-type": (mpb.IDENTIFIER_TYPE_UNSPECIFIED, "", b"x")}, "identifiers[0].type"),
        (
            {"no-country": (mpb.IDENTIFIER_TYPE_PASSPORT, "", b"X1234567")},
            "identifiers[0].qualifier",
        ),
    ],
    ids=["one-bad-of-two", "no-type", "no-country"],
)
async def test_a_bad_identifier_refuses_the_whole_call_naming_it(
    federation: Federation, identifiers: dict[str, tuple[int, str, bytes]], field: str
) -> None:
    audit_before = await federation.node(0).context.store.read(audit_log.size)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await federation.client(0).register_identifiers(request(**identifiers))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith(field)
    assert await index_rows(federation) == 0
    assert await federation.node(0).context.store.read(audit_log.size) == audit_before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.ClearField("identifiers"), "identifiers"),
        (lambda r: setattr(r, "contact_point", ""), "contact_point"),
        (lambda r: setattr(r, "case_reference", "has spaces"), "case_reference"),
    ],
    ids=["no-identifiers", "no-contact-point", "bad-case-reference"],
)
async def test_a_bad_request_is_refused_naming_the_field(
    federation: Federation, change, field: str
) -> None:
    bad = request()
    change(bad)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await federation.client(0).register_identifiers(bad)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith(field)


async def test_a_reader_may_not_register(federation: Federation) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await federation.auditor(0).register_identifiers(request())
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


# --- querying: XA asks, XB holds, XC holds nothing -------------------------------------------


def ask(*identifiers: tuple[int, str, bytes], peers: tuple[str, ...] = ()) -> mpb.QueryRequest:
    return mpb.QueryRequest(
        identifiers=[mpb.IdentifierValue(type=t, qualifier=q, value=v) for t, q, v in identifiers],
        peer_node_ids=list(peers),
        deadline_ms=5000,
    )


PASSPORT_ELSEWHERE = (
    mpb.IDENTIFIER_TYPE_PASSPORT,
    "xa",
    b"x-123-4567",
)  # CLEAR's, written otherwise
UNKNOWN = (mpb.IDENTIFIER_TYPE_EMAIL, "", b"nobody@example.org")


def outcomes(response: mpb.QueryResponse) -> dict[tuple[str, int], tuple[int, list[str]]]:
    return {
        (a.peer_node_id, a.identifier_index): (a.outcome, [h.case_reference for h in a.hits])
        for a in response.answers
    }


async def test_a_query_finds_the_case_at_its_holder_and_nothing_elsewhere(
    federation: Federation,
) -> None:
    xb, xc = federation.sim(1).node_id, federation.sim(2).node_id
    await federation.client(1).register_identifiers(request("XB-2026-7"))
    response = await federation.client(0).query(ask(PASSPORT_ELSEWHERE, UNKNOWN))
    assert outcomes(response) == {
        (xb, 0): (mpb.QUERY_OUTCOME_HIT, ["XB-2026-7"]),
        (xb, 1): (mpb.QUERY_OUTCOME_NO_HIT, []),
        (xc, 0): (mpb.QUERY_OUTCOME_NO_HIT, []),
        (xc, 1): (mpb.QUERY_OUTCOME_NO_HIT, []),
    }
    (hit,) = [a for a in response.answers if a.outcome == mpb.QUERY_OUTCOME_HIT]
    assert hit.hits[0].contact_point == "XA National Police, OPSC desk"


async def test_a_query_asks_only_the_peers_named(federation: Federation) -> None:
    xb = federation.sim(1).node_id
    response = await federation.client(0).query(ask(UNKNOWN, peers=(xb,)))
    assert {a.peer_node_id for a in response.answers} == {xb}


async def test_a_peer_that_is_down_is_unavailable_not_a_no_hit(federation: Federation) -> None:
    xc = federation.sim(2).node_id
    await federation.crash(xc)
    response = await federation.client(0).query(ask(UNKNOWN))
    (down,) = [a for a in response.answers if a.peer_node_id == xc]
    assert down.outcome == mpb.QUERY_OUTCOME_UNAVAILABLE
    assert "UNAVAILABLE" in down.reason


async def test_a_no_hit_looks_the_same_whatever_the_holder_holds(federation: Federation) -> None:
    xb = federation.sim(1).node_id
    empty = await federation.client(0).query(ask(UNKNOWN, peers=(xb,)))
    many = apb.RegisterIdentifiersRequest(
        case_reference="XB-2026-8",
        contact_point="desk",
        identifiers=[
            mpb.IdentifierValue(type=mpb.IDENTIFIER_TYPE_PHONE, value=f"+4420790{n:05d}".encode())
            for n in range(300)
        ],
    )
    await federation.client(1).register_identifiers(many)
    full = await federation.client(0).query(ask(UNKNOWN, peers=(xb,)))
    assert empty == full


async def test_both_sides_audit_the_query_without_the_identifiers(
    federation: Federation,
) -> None:
    xa, xb = federation.sim(0).node_id, federation.sim(1).node_id
    await federation.client(1).register_identifiers(request("XB-2026-7"))
    await federation.client(0).query(ask(PASSPORT_ELSEWHERE, peers=(xb,)))

    async def actions(index: int) -> list[tuple[str, str, dict[str, str]]]:
        entries = await federation.node(index).context.store.read(
            lambda c: list(audit_log.iter_entries(c))
        )
        return [
            (e.action, e.peer_node_id, json.loads(e.details_json))
            for e in entries
            if e.action.startswith("match.")
        ]

    assert await actions(0) == [
        (
            "match.queried",
            "",
            {"identifiers": "1", "peers": xb, "hits_from": xb, "unavailable": ""},
        )
    ]
    assert await actions(1) == [
        ("match.evaluated", xa, {"elements": "1"}),
        ("match.bucket_read", xa, {"prefix_bits": "16", "entries": "1"}),
    ]
    for index in (0, 1):  # neither the querier nor the responder keeps what was asked
        stored = await everything_stored(federation, index)
        assert b"X1234567" not in stored
        assert b"x-123-4567" not in stored


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (ask(UNKNOWN, peers=("xz-nowhere",)), "peer_node_ids[0]"),
        (ask(UNKNOWN, peers=("xa-police",)), "peer_node_ids[0]"),
        (mpb.QueryRequest(), "identifiers"),
        (mpb.QueryRequest(identifiers=ask(UNKNOWN).identifiers, deadline_ms=50), "deadline_ms"),
        (ask((mpb.IDENTIFIER_TYPE_PHONE, "", b"12")), "identifiers[0].value"),
    ],
    ids=["unknown-peer", "itself", "nothing", "deadline-too-short", "bad-identifier"],
)
async def test_a_bad_query_is_refused_naming_the_field(
    federation: Federation, query: mpb.QueryRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await federation.client(0).query(query)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith(field)


# --- rotating the OPRF key while serving ----------------------------------------------------


def stop_rotating(node: Node) -> None:
    """Stop the node's own rotation loop, so that the test takes every step itself."""
    for task in node._tasks:
        if task.get_name() == "match-keys":
            task.cancel()


async def test_an_oprf_key_rotation_reindexes_while_queries_keep_finding_hits(
    federation: Federation,
) -> None:
    xb = federation.sim(1)
    b = federation.node(1)
    stop_rotating(b)  # the test takes the node's rotation steps itself, in order
    await federation.client(1).register_identifiers(request("XB-2026-7"))
    asked = ask(PASSPORT_ELSEWHERE, peers=(xb.node_id,))

    assert node_admin.rotate_keys(
        xb.directory, signing=False, sealing=False, oprf=True, passphrase=None
    ) == {"oprf": "2"}
    await b.match_keys.sync()
    assert b.match_keys.states == {1: ACTIVE, 2: INDEXING}
    # Registered during the rotation: indexed under both keys.
    late = (mpb.IDENTIFIER_TYPE_EMAIL, "", b"late@example.org")
    await federation.client(1).register_identifiers(request("XB-2026-9", late=late))
    assert (await b.match_keys.entries(1), await b.match_keys.entries(2)) == (6, 1)
    before = await federation.client(0).query(asked)
    assert outcomes(before)[(xb.node_id, 0)] == (mpb.QUERY_OUTCOME_HIT, ["XB-2026-7"])

    assert await b.match_keys.step() == "key 2 active, key 1 retired"
    assert b.match_keys.states == {1: RETIRED, 2: ACTIVE}
    after = await federation.client(0).query(ask(PASSPORT_ELSEWHERE, late, peers=(xb.node_id,)))
    assert outcomes(after) == {
        (xb.node_id, 0): (mpb.QUERY_OUTCOME_HIT, ["XB-2026-7"]),
        (xb.node_id, 1): (mpb.QUERY_OUTCOME_HIT, ["XB-2026-9"]),
    }

    b.match_keys.grace = dt.timedelta(0)
    assert await b.match_keys.step() == "deleted 6 entries of retired keys"
    assert (await b.match_keys.entries(1), await b.match_keys.entries(2)) == (0, 6)
    assert await b.match_keys.step() == "nothing to do"
    entries = await b.context.store.read(lambda c: list(audit_log.iter_entries(c)))
    assert [e.action for e in entries if e.action in ("keys.rotated", "match.key_activated")] == [
        "keys.rotated",
        "match.key_activated",
    ]
    stored = await everything_stored(federation, 1)
    assert b"X1234567" not in stored
    assert b"late@example.org" not in stored


async def test_a_rotation_copies_in_batches_and_resumes_after_a_restart(
    federation: Federation,
) -> None:
    xb = federation.sim(1)
    stop_rotating(federation.node(1))
    phones = apb.RegisterIdentifiersRequest(
        case_reference="XB-2026-8",
        contact_point="desk",
        identifiers=[
            mpb.IdentifierValue(type=mpb.IDENTIFIER_TYPE_PHONE, value=f"+4420790{n:05d}".encode())
            for n in range(1500)
        ],
    )
    await federation.client(1).register_identifiers(phones)
    node_admin.rotate_keys(xb.directory, signing=False, sealing=False, oprf=True, passphrase=None)
    b = federation.node(1)
    await b.match_keys.sync()
    assert await b.match_keys.step() == "copied 1000 entries to key 2"

    await federation.crash(xb.node_id)
    b = await federation.start(xb.node_id)
    stop_rotating(b)
    assert b.match_keys.states == {1: ACTIVE, 2: INDEXING}
    assert await b.match_keys.step() == "key 2 active, key 1 retired"
    assert await b.match_keys.entries(2) == 1500
    found = await federation.client(0).query(
        ask((mpb.IDENTIFIER_TYPE_PHONE, "", b"+44 20 790 01234"), peers=(xb.node_id,))
    )
    assert outcomes(found) == {(xb.node_id, 0): (mpb.QUERY_OUTCOME_HIT, ["XB-2026-8"])}


async def test_a_registration_racing_a_rotation_is_indexed_under_the_new_key_too(
    federation: Federation,
) -> None:
    xb = federation.sim(1)
    b = federation.node(1)
    stop_rotating(b)
    node_admin.rotate_keys(xb.directory, signing=False, sealing=False, oprf=True, passphrase=None)
    # Another process of the node adopts the new key; this one has not looked yet.
    other = MatchKeys(b.context, load_key_files(xb.directory / "keys", None))
    await other.sync()
    assert b.match_keys.states == {1: ACTIVE}

    done = await federation.client(1).register_identifiers(request("XB-2026-7"))

    assert done.registered == 5
    assert b.match_keys.states == {1: ACTIVE, 2: INDEXING}
    assert (await b.match_keys.entries(1), await b.match_keys.entries(2)) == (5, 5)
