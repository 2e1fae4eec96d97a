"""A node refuses to start when it could not work correctly, and says why."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from exchange.admin import federation as federation_admin
from exchange.admin import node as node_admin
from exchange.config import load_node_config
from exchange.errors import ConfigError, KeyMaterialError, TrustListError
from exchange.harness.setup import build_federation, free_port, sample_countries
from exchange.node import Node
from exchange.rpc.client import AuthorityClient
from exchange.store import audit_log, migrate
from exchange.store.engine import Store
from tests.conftest import DatabaseFactory
from tests.live import start_federation

NOW = dt.datetime.now(dt.UTC)


def _federation(root: Path, passphrase: bytes | None = None) -> Path:
    directory = root / "federation"
    federation_admin.init_federation(
        directory,
        federation_id="startup-test",
        stewards=2,
        threshold=2,
        validity_days=30,
        passphrase=passphrase,
        now=NOW,
    )
    return directory


def _node(root: Path, federation: Path, database_url: str, passphrase: bytes | None = None) -> Path:
    directory = root / "xa-police"
    node_admin.init_node(
        directory,
        node_admin.NodeSpec(
            node_id="xa-police",
            country="XA",
            endpoint=f"127.0.0.1:{free_port()}",
            authority_listen=f"127.0.0.1:{free_port()}",
            database_url=database_url,
        ),
        federation=federation,
        passphrase=passphrase,
        now=NOW,
    )
    return directory


def _admit(federation: Path, node: Path) -> Path:
    federation_admin.add_node(federation, node / "enrolment.json", now=NOW)
    for steward in ("steward-1", "steward-2"):
        federation_admin.sign_draft(federation, steward, None)
    published, _ = federation_admin.publish(federation, now=NOW)
    return published


def test_a_node_missing_from_the_trust_list_refuses_to_start(
    tmp_path: Path, databases: DatabaseFactory
) -> None:
    node = _node(tmp_path, _federation(tmp_path), databases.new_url())
    with pytest.raises(ConfigError, match="not in trust list version 1"):
        Node.load(node)


def test_a_node_without_any_trust_list_refuses_to_start(
    tmp_path: Path, databases: DatabaseFactory
) -> None:
    federation = _federation(tmp_path)
    node = _node(tmp_path, federation, databases.new_url())
    empty = databases.new_url("empty")
    store = Store.open(empty)
    migrate.upgrade(store)
    store.dispose()
    with pytest.raises(ConfigError, match="holds no trust list"):
        Node.load(node, environ={"EXCHANGE_DATABASE_URL": empty})


def test_an_unmigrated_store_refuses_to_start(tmp_path: Path, databases: DatabaseFactory) -> None:
    federation = _federation(tmp_path)
    node = _node(tmp_path, federation, databases.new_url())
    _admit(federation, node)
    with pytest.raises(ConfigError, match="exchange node migrate"):
        Node.load(node, environ={"EXCHANGE_DATABASE_URL": databases.new_url("empty")})


def test_store_readers_sets_the_connections_a_process_holds(
    tmp_path: Path, databases: DatabaseFactory
) -> None:
    sims = build_federation(
        tmp_path,
        sample_countries(2),
        now=NOW - dt.timedelta(hours=1),
        database_url_for=databases.new_url,
        store_settings="readers = 1\n",
    )
    config = load_node_config(sims[0].directory)
    assert config.store.readers == 1
    assert config.delivery.max_backoff_seconds == 2.0, "the simulation's settings still apply"
    loaded = Node.load(sims[0].directory)
    try:
        # The readers, the writer, and one for metrics and startup.
        assert loaded.context.store.store.engine.pool.size() == 3
    finally:
        loaded.context.store.close()


def test_insecure_loopback_is_refused_off_loopback(
    tmp_path: Path, databases: DatabaseFactory
) -> None:
    federation = _federation(tmp_path)
    node = _node(tmp_path, federation, databases.new_url())
    _admit(federation, node)
    with pytest.raises(ConfigError, match="not a loopback address"):
        Node.load(
            node,
            environ={"EXCHANGE_AUTHORITY_LISTEN": "0.0.0.0:7443"},
            insecure_loopback=True,
        )


async def test_insecure_loopback_serves_plaintext_on_loopback(
    tmp_path: Path, databases: DatabaseFactory
) -> None:
    federation = await start_federation(tmp_path, databases)
    sim = federation.sim(0)
    await federation.crash(sim.node_id)
    node = Node.load(sim.directory, insecure_loopback=True)
    await node.start()
    try:
        async with AuthorityClient(
            sim.authority_address, sim.case_worker_token, ca_certificate=None
        ) as plain:
            assert (await plain.list_inbox()).notices == []
    finally:
        await node.stop(grace=0)
        await federation.close()


def test_encrypted_keys_need_the_passphrase(tmp_path: Path, databases: DatabaseFactory) -> None:
    passphrase = b"correct horse battery staple"
    federation = _federation(tmp_path, passphrase)
    node = _node(tmp_path, federation, databases.new_url(), passphrase)
    federation_admin.add_node(federation, node / "enrolment.json", now=NOW)
    for steward in ("steward-1", "steward-2"):
        federation_admin.sign_draft(federation, steward, passphrase)
    published, _ = federation_admin.publish(federation, now=NOW)
    node_admin.update_trust(node, published, now=NOW)
    assert node.stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "federation").stat().st_mode & 0o777 == 0o700
    assert all(
        (node / path).stat().st_mode & 0o777 == 0o600
        for path in ("keys/signing.pem", "keys/sealing.pem", "tls/node.key", "tls/authority.key")
    )
    with pytest.raises(KeyMaterialError, match="EXCHANGE_KEY_PASSPHRASE"):
        Node.load(node, environ={})
    loaded = Node.load(node, environ={"EXCHANGE_KEY_PASSPHRASE": passphrase.decode()})
    assert loaded.context.node_id == "xa-police"
    loaded.context.store.close()


def test_trust_list_updates_are_verified_and_refusals_audited(
    tmp_path: Path, databases: DatabaseFactory
) -> None:
    federation = _federation(tmp_path)
    node = _node(tmp_path, federation, databases.new_url())
    published = _admit(federation, node)
    assert node_admin.update_trust(node, published, now=NOW).version == 2
    with pytest.raises(TrustListError, match="rollback"):
        node_admin.update_trust(node, published, now=NOW)
    with pytest.raises(TrustListError, match="rollback"):
        node_admin.update_trust(node, federation / "trust-lists" / "v1.pb", now=NOW)
    # A draft signed by one steward of two: under threshold.
    federation_admin.add_node(federation, node / "enrolment.json", now=NOW)
    federation_admin.sign_draft(federation, "steward-1", None)
    with pytest.raises(TrustListError, match="threshold"):
        node_admin.update_trust(node, federation / "trust-lists" / "draft.pb", now=NOW)
    with pytest.raises(TrustListError, match="threshold"):
        federation_admin.publish(federation, now=NOW)
    store = node_admin.open_store(node)
    try:
        actions = [e.action for e in store.read(lambda c: audit_log.entries_after(c, 0, 100))]
    finally:
        store.dispose()
    assert actions.count("trust_list.installed") == 2
    assert actions.count("trust_list.refused") == 3
    loaded = Node.load(node)
    assert loaded.context.trust.version == 2
    loaded.context.store.close()
