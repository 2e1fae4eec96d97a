"""A node's own keys: Ed25519 for signing, X25519 for HPKE sealing.

The files live under the node directory (see `exchange.layout`); this module
generates, writes and loads them, and describes them as trust list entries.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from exchange.keys import (
    ed25519_key_id,
    load_ed25519,
    load_x25519,
    raw_public,
    write_private_key,
    x25519_key_id,
)
from exchange.trust import ED25519, X25519, KeyInfo

__all__ = ["NodeIdentity"]


@dataclasses.dataclass(frozen=True)
class NodeIdentity:
    """The private keys a node signs and opens with.

    Attributes:
        node_id: the node's id in the trust list.
        signing_key: the Ed25519 key for envelopes and receipts.
        sealing_keys: X25519 keys by key id; during a rotation the old key
            stays here so payloads sealed to it still open.
    """

    node_id: str
    signing_key: ed25519.Ed25519PrivateKey
    sealing_keys: dict[str, x25519.X25519PrivateKey]

    @property
    def signing_key_id(self) -> str:
        return ed25519_key_id(self.signing_key.public_key())

    @staticmethod
    def generate(node_id: str) -> NodeIdentity:
        sealing = x25519.X25519PrivateKey.generate()
        return NodeIdentity(
            node_id=node_id,
            signing_key=ed25519.Ed25519PrivateKey.generate(),
            sealing_keys={x25519_key_id(sealing.public_key()): sealing},
        )

    def write(self, signing_path: Path, sealing_path: Path, passphrase: bytes | None) -> None:
        """Write the signing key and the (single) sealing key to new files."""
        (sealing,) = self.sealing_keys.values()
        write_private_key(signing_path, self.signing_key, passphrase)
        write_private_key(sealing_path, sealing, passphrase)

    @staticmethod
    def load(
        node_id: str, signing_path: Path, sealing_paths: list[Path], passphrase: bytes | None
    ) -> NodeIdentity:
        sealing = [load_x25519(p, passphrase) for p in sealing_paths]
        return NodeIdentity(
            node_id=node_id,
            signing_key=load_ed25519(signing_path, passphrase),
            sealing_keys={x25519_key_id(k.public_key()): k for k in sealing},
        )

    def public_keys(self, not_before: dt.datetime) -> tuple[KeyInfo, list[KeyInfo]]:
        """The signing key and sealing keys as trust list entries."""
        signing_public = self.signing_key.public_key()
        signing = KeyInfo(
            key_id=ed25519_key_id(signing_public),
            algorithm=ED25519,
            public=raw_public(signing_public),
            not_before=not_before,
        )
        sealing = [
            KeyInfo(
                key_id=key_id,
                algorithm=X25519,
                public=raw_public(key.public_key()),
                not_before=not_before,
            )
            for key_id, key in self.sealing_keys.items()
        ]
        return signing, sealing
