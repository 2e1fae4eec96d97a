"""Trust list versions and authority clients."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from sqlalchemy.exc import IntegrityError

from exchange.store import registry
from exchange.store.engine import Store
from exchange.store.registry import ClientRecord

from ._builders import START, millis

T0 = millis(START)


def install(store: Store, version: int) -> bytes:
    signed = f"signed trust list v{version}".encode()
    store.write(
        lambda c: registry.insert_trust_list(
            c, version=version, signed=signed, expires_at=T0 + 10**9, installed_at=T0 + version
        )
    )
    return signed


def test_no_trust_list_is_held_at_first(store):
    assert store.read(registry.latest_trust_list) is None


def test_the_latest_trust_list_is_the_highest_version_not_the_last_installed(store):
    install(store, 1)
    v7 = install(store, 7)
    install(store, 3)

    assert store.read(registry.latest_trust_list) == v7


def test_a_trust_list_version_is_stored_once(store):
    first = install(store, 2)

    with pytest.raises(IntegrityError):
        install(store, 2)

    assert store.read(registry.latest_trust_list) == first


def test_trust_list_versions_beyond_32_bits_are_kept(store):
    # Versions are BIGINT: a federation may number them by time.
    install(store, 2**31 - 1)
    big = install(store, 2**40)

    assert store.read(registry.latest_trust_list) == big


def client(name: str, *roles: str, n: int = 1) -> ClientRecord:
    return ClientRecord(
        client_id=f"{n:032x}",
        name=name,
        roles=frozenset(roles),
        secret_hash=hashlib.sha256(name.encode()).digest(),
        created_at=T0 + n,
        revoked_at=None,
    )


def add(store: Store, record: ClientRecord) -> None:
    store.write(lambda c: registry.insert_client(c, record))


def test_an_inserted_client_is_found_by_its_id(store):
    record = client("case-system", "submitter", "reader", n=1)
    add(store, record)

    assert store.read(lambda c: registry.find_client(c, record.client_id)) == record
    assert store.read(lambda c: registry.find_client(c, f"{99:032x}")) is None


def test_every_role_set_round_trips(store):
    records = [
        client("all-roles", "admin", "auditor", "reader", "submitter", n=1),
        client("one-role", "auditor", n=2),
    ]
    for record in records:
        add(store, record)

    assert [store.read(lambda c, r=r: registry.find_client(c, r.client_id)) for r in records] == (
        records
    )


def test_client_names_are_unique(store):
    add(store, client("case-system", "reader", n=1))

    with pytest.raises(IntegrityError):
        add(store, client("case-system", "admin", n=2))

    assert [r.client_id for r in store.read(registry.list_clients)] == [f"{1:032x}"]


def test_revoke_ends_an_active_client_once(store):
    record = client("case-system", "reader")
    add(store, record)

    revoked = store.write(lambda c: registry.revoke_client(c, "case-system", T0 + 50))
    again = store.write(lambda c: registry.revoke_client(c, "case-system", T0 + 60))

    assert revoked == dataclasses.replace(record, revoked_at=T0 + 50)
    assert again is None
    assert store.read(lambda c: registry.find_client(c, record.client_id)).revoked_at == T0 + 50


def test_revoking_an_unknown_name_changes_nothing(store):
    add(store, client("case-system", "reader"))

    assert store.write(lambda c: registry.revoke_client(c, "nobody", T0)) is None
    assert [r.revoked_at for r in store.read(registry.list_clients)] == [None]


def test_list_clients_orders_by_name_and_includes_revoked_ones(store):
    for n, name in enumerate(["zeta", "alpha", "mike"], start=1):
        add(store, client(name, "reader", n=n))
    store.write(lambda c: registry.revoke_client(c, "mike", T0))

    listed = store.read(registry.list_clients)

    assert [(r.name, r.revoked_at) for r in listed] == [
        ("alpha", None),
        ("mike", T0),
        ("zeta", None),
    ]
