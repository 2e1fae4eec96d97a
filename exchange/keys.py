"""Key ids and private key files.

Private keys are PKCS#8 PEM files of mode 0600, encrypted with the admin's
passphrase when one is given (`EXCHANGE_KEY_PASSPHRASE`). A key file that other
users can read is refused, as ssh does.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519

from exchange._encoding import tagged_digest
from exchange.errors import KeyMaterialError

__all__ = [
    "PrivateKey",
    "ed25519_key_id",
    "load_ec",
    "load_ed25519",
    "load_private_key",
    "load_x25519",
    "raw_public",
    "write_private_key",
    "x25519_key_id",
]

PrivateKey = ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey


def raw_public(key: ed25519.Ed25519PublicKey | x25519.X25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 or X25519 public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _key_id(algorithm: str, raw: bytes) -> str:
    return tagged_digest("exchange.v1.KeyId", algorithm.encode(), raw).hex()[:32]


def ed25519_key_id(key: ed25519.Ed25519PublicKey) -> str:
    """Stable id of an Ed25519 public key: a truncated tagged SHA-256 of it."""
    return _key_id("ed25519", raw_public(key))


def x25519_key_id(key: x25519.X25519PublicKey) -> str:
    """Stable id of an X25519 public key: a truncated tagged SHA-256 of it."""
    return _key_id("x25519", raw_public(key))


def write_private_key(path: Path, key: PrivateKey, passphrase: bytes | None) -> None:
    """Write `key` to a new file of mode 0600; refuses to overwrite."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def load_ed25519(path: Path, passphrase: bytes | None) -> ed25519.Ed25519PrivateKey:
    key = load_private_key(path, passphrase)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyMaterialError(f"{path}: expected an Ed25519 private key")
    return key


def load_x25519(path: Path, passphrase: bytes | None) -> x25519.X25519PrivateKey:
    key = load_private_key(path, passphrase)
    if not isinstance(key, x25519.X25519PrivateKey):
        raise KeyMaterialError(f"{path}: expected an X25519 private key")
    return key


def load_ec(path: Path, passphrase: bytes | None) -> ec.EllipticCurvePrivateKey:
    key = load_private_key(path, passphrase)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyMaterialError(f"{path}: expected an ECDSA private key")
    return key


def load_private_key(path: Path, passphrase: bytes | None) -> PrivateKey:
    """Load a private key from `path` (use the typed loaders above).

    Raises:
        KeyMaterialError: missing file, readable by others, wrong passphrase,
            or not an Ed25519, X25519 or ECDSA key.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyMaterialError(f"{path}: key file not found") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyMaterialError(f"{path}: key file must not be accessible to others (chmod 600)")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=passphrase or None)
    except TypeError:
        raise KeyMaterialError(
            f"{path}: key is encrypted; set EXCHANGE_KEY_PASSPHRASE"
            if not passphrase
            else f"{path}: key is not encrypted but a passphrase was given"
        ) from None
    except ValueError:
        raise KeyMaterialError(f"{path}: cannot decrypt or parse the key") from None
    if not isinstance(
        key, ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey
    ):
        raise KeyMaterialError(f"{path}: not a key type the exchange uses")
    return key
