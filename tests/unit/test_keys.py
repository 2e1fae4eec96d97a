"""Key ids and private key files (mode 0600, optionally encrypted, refused when exposed)."""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, x25519

from exchange.errors import KeyMaterialError
from exchange.keys import (
    PrivateKey,
    ed25519_key_id,
    load_ec,
    load_ed25519,
    load_private_key,
    load_x25519,
    raw_public,
    write_private_key,
    x25519_key_id,
)

from ._builders import ed_key, x_key

PASSPHRASE = b"correct horse battery staple"


def private_bytes(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


KEYS: list[tuple[str, Callable[[], PrivateKey], Callable[[Path, bytes | None], PrivateKey]]] = [
    ("ed25519", lambda: ed_key(1), load_ed25519),
    ("x25519", lambda: x_key(1), load_x25519),
    ("ecdsa-p256", lambda: ec.derive_private_key(12345, ec.SECP256R1()), load_ec),
]
each_key_type = pytest.mark.parametrize(
    ("make", "load"), [(make, load) for _, make, load in KEYS], ids=[name for name, _, _ in KEYS]
)


# --- key ids -------------------------------------------------------------------------------


def test_key_ids_are_stable() -> None:
    # Pinned: a key id is written into trust lists and headers; it must never drift.
    assert ed25519_key_id(ed_key(1).public_key()) == "86baf116c5290ff2bfc2aa39f9badc7a"
    assert x25519_key_id(x_key(1).public_key()) == "fce8e5f881bb8dd13a120fbf26db9b10"


def test_key_id_is_a_truncated_tagged_sha256_of_algorithm_and_raw_key() -> None:
    raw = raw_public(ed_key(1).public_key())
    encoded = b"OPSC-EXCHANGE/1" + b"".join(
        struct.pack(">Q", len(part)) + part for part in (b"exchange.v1.KeyId", b"ed25519", raw)
    )
    assert ed25519_key_id(ed_key(1).public_key()) == hashlib.sha256(encoded).hexdigest()[:32]


def test_key_id_binds_the_algorithm() -> None:
    # The same 32 bytes read as an Ed25519 and as an X25519 key get different ids.
    raw = raw_public(x_key(1).public_key())
    assert x25519_key_id(x25519.X25519PublicKey.from_public_bytes(raw)) != ed25519_key_id(
        ed25519.Ed25519PublicKey.from_public_bytes(raw)
    )


def test_different_keys_have_different_ids() -> None:
    assert len({ed25519_key_id(ed_key(n).public_key()) for n in range(1, 20)}) == 19


# --- key files -----------------------------------------------------------------------------


@each_key_type
def test_written_key_file_is_mode_0600(
    tmp_path: Path, make: Callable[[], PrivateKey], load: object
) -> None:
    path = tmp_path / "keys" / "node.pem"
    write_private_key(path, make(), None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_written_key_file_is_mode_0600_even_under_a_permissive_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        write_private_key(tmp_path / "node.pem", ed_key(1), None)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "node.pem").stat().st_mode) == 0o600


def test_existing_key_file_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    write_private_key(path, ed_key(1), None)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_private_key(path, ed_key(2), None)
    assert path.read_bytes() == before


@each_key_type
@pytest.mark.parametrize("passphrase", [None, PASSPHRASE], ids=["plain", "encrypted"])
def test_key_round_trips(
    tmp_path: Path,
    make: Callable[[], PrivateKey],
    load: Callable[[Path, bytes | None], PrivateKey],
    passphrase: bytes | None,
) -> None:
    key = make()
    path = tmp_path / "node.pem"
    write_private_key(path, key, passphrase)
    assert private_bytes(load(path, passphrase)) == private_bytes(key)
    assert private_bytes(load_private_key(path, passphrase)) == private_bytes(key)


def test_encrypted_file_does_not_hold_the_key_in_the_clear(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    write_private_key(path, ed_key(1), PASSPHRASE)
    assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    unencrypted = ed_key(1).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert path.read_bytes() != unencrypted


@pytest.mark.parametrize(
    "mode",
    [0o640, 0o604, 0o644, 0o660, 0o620, 0o602, 0o610, 0o601, 0o666],
    ids=lambda m: f"{m:o}",
)
def test_key_file_accessible_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.pem"
    write_private_key(path, ed_key(1), None)
    path.chmod(mode)
    with pytest.raises(KeyMaterialError, match="chmod 600"):
        load_ed25519(path, None)


def test_read_only_owner_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    write_private_key(path, ed_key(1), None)
    path.chmod(0o400)
    assert private_bytes(load_ed25519(path, None)) == private_bytes(ed_key(1))


@pytest.mark.parametrize(
    ("written", "given", "message"),
    [
        pytest.param(PASSPHRASE, b"wrong passphrase", "cannot decrypt", id="wrong-passphrase"),
        pytest.param(PASSPHRASE, None, "EXCHANGE_KEY_PASSPHRASE", id="missing-passphrase"),
        pytest.param(PASSPHRASE, b"", "EXCHANGE_KEY_PASSPHRASE", id="empty-passphrase"),
        pytest.param(None, PASSPHRASE, "not encrypted", id="passphrase-for-a-plain-key"),
    ],
)
def test_passphrase_errors_are_clear_and_do_not_echo_it(
    tmp_path: Path, written: bytes | None, given: bytes | None, message: str
) -> None:
    path = tmp_path / "node.pem"
    write_private_key(path, ed_key(1), written)
    with pytest.raises(KeyMaterialError, match=message) as raised:
        load_ed25519(path, given)
    assert str(path) in str(raised.value)
    for secret in (PASSPHRASE, b"wrong passphrase"):
        assert secret.decode() not in str(raised.value)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError, match="not found"):
        load_ed25519(tmp_path / "absent.pem", None)


def test_file_that_is_not_a_key(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    path.chmod(0o600)
    with pytest.raises(KeyMaterialError, match="cannot decrypt or parse"):
        load_private_key(path, None)


@pytest.mark.parametrize(
    ("written", "load", "expected"),
    [
        pytest.param(lambda: ed_key(1), load_x25519, "expected an X25519", id="ed25519-as-x25519"),
        pytest.param(lambda: x_key(1), load_ed25519, "expected an Ed25519", id="x25519-as-ed25519"),
        pytest.param(lambda: ed_key(1), load_ec, "expected an ECDSA", id="ed25519-as-ecdsa"),
    ],
)
def test_typed_loader_refuses_another_key_type(
    tmp_path: Path, written: Callable[[], PrivateKey], load: Callable[..., object], expected: str
) -> None:
    path = tmp_path / "node.pem"
    write_private_key(path, written(), None)
    with pytest.raises(KeyMaterialError, match=expected):
        load(path, None)


def test_key_type_the_exchange_does_not_use_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ed448.pem"
    key = ed448.Ed448PrivateKey.from_private_bytes(bytes([7]) * 57)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    with pytest.raises(KeyMaterialError, match="not a key type"):
        load_private_key(path, None)
