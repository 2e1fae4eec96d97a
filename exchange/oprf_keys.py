"""The node's OPRF key file (hit/no-hit matching), kept like its other private keys.

An OPRF key is a bare ristretto255 scalar, which no PKCS#8 format describes,
so it is kept in a small JSON file of mode 0600. With a passphrase
(`EXCHANGE_KEY_PASSPHRASE`, as for the PEM keys) the scalar is sealed with
AES-256-GCM under a key derived by scrypt (RFC 7914; n = 2**15, r = 8, p = 1)
from the passphrase and a random salt. The key version says which key an index
row was made with, so a rotation can run beside the old key.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from exchange.errors import KeyMaterialError
from exchange.oprf import OprfError, ServerKey

__all__ = ["load_oprf_key", "write_oprf_key"]

_FORMAT = "exchange-oprf-key/1"
_AAD = b"exchange.v1.OprfKeyFile"


def _kek(passphrase: bytes, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase)


def write_oprf_key(path: Path, key: ServerKey, version: int, passphrase: bytes | None) -> None:
    """Write `key` (of key version `version`) to a new file of mode 0600; refuses to overwrite."""
    document: dict[str, object] = {"format": _FORMAT, "key_version": version}
    if passphrase:
        salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
        sealed = AESGCM(_kek(passphrase, salt)).encrypt(nonce, key.to_bytes(), _AAD)
        document |= {"salt": salt.hex(), "nonce": nonce.hex(), "sealed": sealed.hex()}
    else:
        document["scalar"] = key.to_bytes().hex()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(document, out)


def load_oprf_key(path: Path, passphrase: bytes | None) -> tuple[ServerKey, int]:
    """The key and its version.

    Raises:
        KeyMaterialError: missing, readable by others, wrong passphrase, or malformed.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyMaterialError(f"{path}: key file not found") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyMaterialError(f"{path}: key file must not be accessible to others (chmod 600)")
    try:
        document = json.loads(path.read_text())
        if document.get("format") != _FORMAT:
            raise ValueError("format")
        version = int(document["key_version"])
        if "sealed" in document:
            if not passphrase:
                raise KeyMaterialError(f"{path}: key is encrypted; set EXCHANGE_KEY_PASSPHRASE")
            salt, nonce = bytes.fromhex(document["salt"]), bytes.fromhex(document["nonce"])
            scalar = AESGCM(_kek(passphrase, salt)).decrypt(
                nonce, bytes.fromhex(document["sealed"]), _AAD
            )
        else:
            if passphrase:
                raise KeyMaterialError(f"{path}: key is not encrypted but a passphrase was given")
            scalar = bytes.fromhex(document["scalar"])
        return ServerKey(scalar), version
    except InvalidTag:
        raise KeyMaterialError(f"{path}: cannot decrypt the key (wrong passphrase?)") from None
    except (ValueError, KeyError, TypeError, OprfError):
        raise KeyMaterialError(f"{path}: not an OPRF key file") from None
