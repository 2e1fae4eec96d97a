"""What a node's admins do: create the node, migrate its store, install trust
lists, and manage the authority clients allowed to call it."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from exchange import pki
from exchange.admin.federation import latest_published
from exchange.audit import AuditRecord
from exchange.clients import new_client
from exchange.clock import to_millis
from exchange.config import CONFIG_FILE, load_node_config
from exchange.errors import ConfigError, NotFoundError, ValidationError
from exchange.identity import NodeIdentity
from exchange.ids import validate_country, validate_node_id
from exchange.keys import ed25519_key_id, load_ec, raw_public, write_private_key, x25519_key_id
from exchange.layout import FederationLayout, NodeLayout
from exchange.oprf import ServerKey
from exchange.oprf_keys import write_oprf_key
from exchange.retention import PURGE_BATCH, purge_batch
from exchange.store import audit_log, migrate, registry
from exchange.store.engine import Store
from exchange.trust import SignedTrustList, TrustList
from exchange.trust_state import install_trust_list

__all__ = [
    "NodeSpec",
    "add_client",
    "init_node",
    "list_clients",
    "migrate_node",
    "open_store",
    "pending_migrations",
    "purge",
    "revoke_client",
    "rotate_keys",
    "update_trust",
]

ADMIN = "admin"


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """What `exchange node init` is told about the new node."""

    node_id: str
    country: str
    endpoint: str
    authority_listen: str
    authority_name: str = ""
    federation_listen: str = ""
    database_url: str = "sqlite:///exchange.db"


def _node_toml(spec: NodeSpec) -> str:
    return f"""# Node configuration (exchange node init). Every key is documented in
# exchange/config.py; unknown keys are refused.

[node]
id = "{spec.node_id}"
country = "{spec.country}"
authority_name = "{spec.authority_name}"

[federation]
# Where this node listens for peers (mTLS), and the address peers dial.
listen = "{spec.federation_listen or spec.endpoint}"
endpoint = "{spec.endpoint}"

[authority]
# Where this node's authority systems call it (TLS, bearer tokens).
listen = "{spec.authority_listen}"

[store]
# sqlite:///path (relative to this directory) or postgresql+psycopg://...
database_url = "{spec.database_url}"
"""


def open_store(directory: Path) -> Store:
    config = load_node_config(directory)
    return Store.open(config.database_url(), sqlite_synchronous=config.store.sqlite_synchronous)


def init_node(
    directory: Path,
    spec: NodeSpec,
    *,
    federation: Path,
    passphrase: bytes | None,
    now: dt.datetime,
) -> Path:
    """Create a node: keys, certificates, node.toml, enrolment file, migrated store.

    The federation's latest published trust list is installed as the node's
    trust anchor; the node can serve once a list that includes it is installed.

    Returns:
        The enrolment file to hand to the stewards (public keys only).
    """
    validate_node_id(spec.node_id, "node_id")
    validate_country(spec.country, "country")
    layout = NodeLayout(directory)
    if layout.config.exists():
        raise ConfigError(f"{directory} already holds a node ({CONFIG_FILE} exists)")
    # Keys, the store and its audit trail: readable by the node's own user only.
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    federation_layout = FederationLayout(federation)
    _, anchor = latest_published(federation)
    ca_certificate = pki.load_certificate(federation_layout.ca_certificate.read_bytes())
    ca_key = load_ec(federation_layout.ca_key, passphrase)

    identity = NodeIdentity.generate(spec.node_id)
    identity.write(layout.signing_key, layout.sealing_key, passphrase)
    write_oprf_key(layout.oprf_key, ServerKey.generate(), 1, passphrase)
    tls_key = pki.new_tls_key()
    write_private_key(layout.tls_key, tls_key, passphrase)
    certificate = pki.issue_node_certificate(
        node_id=spec.node_id,
        federation_id=anchor.trust_list.federation_id,
        public_key=tls_key.public_key(),
        ca_certificate=ca_certificate,
        ca_key=ca_key,
        now=now,
    )
    layout.tls_certificate.write_bytes(pki.pem(certificate))
    layout.federation_ca.write_bytes(pki.pem(ca_certificate))
    authority_key = pki.new_tls_key()
    write_private_key(layout.authority_key, authority_key, passphrase)
    hosts = ["localhost", "127.0.0.1", spec.authority_listen.rsplit(":", 1)[0]]
    layout.authority_certificate.write_bytes(
        pki.pem(
            pki.self_signed_server_certificate(
                node_id=spec.node_id, hosts=hosts, key=authority_key, now=now
            )
        )
    )
    layout.trust_anchor.write_bytes(anchor.to_bytes())
    layout.config.write_text(_node_toml(spec))

    signing, sealing = identity.public_keys(now)
    layout.enrolment.write_text(
        json.dumps(
            {
                "node_id": spec.node_id,
                "country": spec.country,
                "authority_name": spec.authority_name,
                "endpoint": spec.endpoint,
                "signing_key": {
                    "key_id": signing.key_id,
                    "public_key": base64.b64encode(signing.public).decode(),
                },
                "sealing_key": {
                    "key_id": sealing.key_id,
                    "public_key": base64.b64encode(sealing.public).decode(),
                },
                "tls_certificate_sha256": pki.certificate_sha256(certificate).hex(),
            },
            indent=2,
        )
        + "\n"
    )
    store = open_store(directory)
    try:
        migrate.upgrade(store)
        install_trust_list(store, anchor, now=now, actor=ADMIN)
    finally:
        store.dispose()
    return layout.enrolment


def rotate_keys(
    directory: Path,
    *,
    signing: bool,
    sealing: bool,
    passphrase: bytes | None,
    oprf: bool = False,
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """Generate new node keys beside the old ones and offer them in enrolment.json.

    The old private keys stay: the node keeps signing with the old key until
    it adopts a trust list that lists the new one, and payloads sealed to the
    old sealing key still open. Hand enrolment.json to the stewards
    (`exchange federation add-node`), who publish the next version.

    Returns:
        The new key ids by kind ("signing", "sealing").

    Raises:
        ValidationError: neither kind asked for.
        ConfigError: not a node directory, or its enrolment file is missing.
    """
    if not signing and not sealing and not oprf:
        raise ValidationError("keys", "name --signing, --sealing, --oprf or several")
    config = load_node_config(directory)
    layout = NodeLayout(config.directory)
    if oprf and not signing and not sealing:
        # The OPRF key is the node's own: no trust list change, no enrolment.
        version = _new_oprf_key(layout, passphrase)
        _audit_rotation(directory, {"oprf_key_version": str(version)}, now)
        return {"oprf": str(version)}
    try:
        enrolment = json.loads(layout.enrolment.read_text())
    except (FileNotFoundError, ValueError):
        raise ConfigError(f"{layout.enrolment}: missing or not JSON") from None
    rotated: dict[str, str] = {}
    fresh: list[tuple[str, Path, ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey]] = []
    if signing:
        key = ed25519.Ed25519PrivateKey.generate()
        rotated["signing"] = ed25519_key_id(key.public_key())
        fresh.append(("signing", layout.next_key_file("signing"), key))
    if sealing:
        sealing_key = x25519.X25519PrivateKey.generate()
        rotated["sealing"] = x25519_key_id(sealing_key.public_key())
        fresh.append(("sealing", layout.next_key_file("sealing"), sealing_key))
    for kind, path, private in fresh:
        enrolment[f"{kind}_key"] = {
            "key_id": rotated[kind],
            "public_key": base64.b64encode(raw_public(private.public_key())).decode(),
        }
        write_private_key(path, private, passphrase)
    layout.enrolment.write_text(json.dumps(enrolment, indent=2) + "\n")
    details = {f"{kind}_key_id": key_id for kind, key_id in rotated.items()}
    if oprf:
        rotated["oprf"] = str(_new_oprf_key(layout, passphrase))
        details["oprf_key_version"] = rotated["oprf"]
    _audit_rotation(directory, details, now)
    return rotated


def _new_oprf_key(layout: NodeLayout, passphrase: bytes | None) -> int:
    """Write the next OPRF key version beside the others; the running node rotates to it."""
    versions = [
        int(json.loads(path.read_text())["key_version"])
        for path in layout.oprf_key.parent.glob("oprf*.json")
    ]
    version = max(versions, default=0) + 1
    write_oprf_key(
        layout.oprf_key.parent / f"oprf.{version}.json", ServerKey.generate(), version, passphrase
    )
    return version


def _audit_rotation(directory: Path, details: dict[str, str], now: dt.datetime | None) -> None:
    # Key changes are on the record like trust-list and client changes (ids only).
    record = AuditRecord(
        occurred_at=now or dt.datetime.now(dt.UTC),
        actor=ADMIN,
        action="keys.rotated",
        details=details,
    )
    store = open_store(directory)
    try:
        store.write(lambda connection: audit_log.append(connection, [record]))
    finally:
        store.dispose()


def pending_migrations(directory: Path) -> int:
    """How many schema revisions `migrate_node` would apply."""
    store = open_store(directory)
    try:
        return migrate.pending_revisions(store)
    finally:
        store.dispose()


def migrate_node(
    directory: Path, *, on_revision: Callable[[], None] | None = None
) -> tuple[str | None, str]:
    """Migrate the node's store to the newest schema; returns (before, after).

    Args:
        on_revision: called after each revision is applied.
    """
    store = open_store(directory)
    try:
        before = migrate.current_revision(store)
        migrate.upgrade(store, on_revision=on_revision)
        return before, migrate.head_revision()
    finally:
        store.dispose()


def update_trust(directory: Path, trust_list_file: Path, *, now: dt.datetime) -> TrustList:
    """Install a newer trust list after verifying it against the held one."""
    try:
        candidate = SignedTrustList.from_bytes(trust_list_file.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"{trust_list_file}: not found") from None
    store = open_store(directory)
    try:
        return install_trust_list(store, candidate, now=now, actor=ADMIN)
    finally:
        store.dispose()


def _audit(
    connection: Connection, action: str, name: str, now: dt.datetime, **details: str
) -> None:
    audit_log.append(
        connection,
        [
            AuditRecord(
                occurred_at=now, actor=ADMIN, action=action, details={"client": name, **details}
            )
        ],
    )


def add_client(directory: Path, name: str, roles: Iterable[str], *, now: dt.datetime) -> str:
    """Create an authority client; returns its token (shown once, never stored)."""
    record, token = new_client(name, roles, to_millis(now))

    def insert(connection: Connection) -> None:
        registry.insert_client(connection, record)
        _audit(connection, "client.added", name, now, roles=",".join(sorted(record.roles)))

    store = open_store(directory)
    try:
        store.write(insert)
    except IntegrityError:
        raise ValidationError("name", f"a client named {name!r} already exists") from None
    finally:
        store.dispose()
    return token


def revoke_client(directory: Path, name: str, *, now: dt.datetime) -> None:
    def revoke(connection: Connection) -> None:
        if registry.revoke_client(connection, name, to_millis(now)) is None:
            raise NotFoundError(f"no active client named {name!r}")
        _audit(connection, "client.revoked", name, now)

    store = open_store(directory)
    try:
        store.write(revoke)
    finally:
        store.dispose()


def purge(
    directory: Path, *, now: dt.datetime, on_progress: Callable[[int], None] | None = None
) -> int:
    """Purge every notice whose retention has ended; returns how many.

    Args:
        on_progress: told how many more were purged after each batch (one transaction).
    """
    store = open_store(directory)
    total = 0
    try:
        while True:
            purged = store.write(lambda c: purge_batch(c, now=now, actor=ADMIN))
            total += purged
            if on_progress is not None:
                on_progress(purged)
            if purged < PURGE_BATCH:
                break
        if total:
            store.reclaim_deleted()
        return total
    finally:
        store.dispose()


def list_clients(directory: Path) -> list[registry.ClientRecord]:
    store = open_store(directory)
    try:
        return store.read(registry.list_clients)
    finally:
        store.dispose()
