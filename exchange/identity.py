"""A node's own keys: Ed25519 for signing, X25519 for HPKE sealing.

The files live under the node directory (see `exchange.layout`); this module
generates, writes and loads them, and describes them as trust list entries.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from exchange.errors import PreconditionError
from exchange.keys import (
    ed25519_key_id,
    load_ed25519,
    load_x25519,
    raw_public,
    write_private_key,
    x25519_key_id,
)
from exchange.trust import ED25519, X25519, KeyInfo, TrustList

__all__ = ["NodeIdentity"]


@dataclasses.dataclass(frozen=True)
class NodeIdentity:
    """The private keys a node signs and opens with.

    Attributes:
        node_id: the node's id in the trust list.
        signing_keys: Ed25519 keys by key id, oldest first. After a rotation
            the old key stays until the stewards publish the new one, so the
            node can sign with whichever key the held trust list accepts.
        sealing_keys: X25519 keys by key id, oldest first; during a rotation the
            old key stays here so payloads sealed to it still open.
    """

    node_id: str
    signing_keys: dict[str, ed25519.Ed25519PrivateKey]
    sealing_keys: dict[str, x25519.X25519PrivateKey]

    @property
    def signing_key(self) -> ed25519.Ed25519PrivateKey:
        """The newest signing key held (not necessarily listed yet: see `signer`)."""
        return self.signing_keys[self.signing_key_id]

    @property
    def signing_key_id(self) -> str:
        return next(reversed(self.signing_keys))

    @property
    def sealing_key_id(self) -> str:
        """The newest sealing key held."""
        return next(reversed(self.sealing_keys))

    def signer(self, trust: TrustList, now: dt.datetime) -> tuple[str, ed25519.Ed25519PrivateKey]:
        """The key to sign with now: the newest of ours the trust list accepts at `now`.

        Raises:
            PreconditionError: no key of this node is valid in the trust list
                (all revoked or retired, or the node is not listed).
        """
        entry = trust.node(self.node_id)
        key = entry.current_signing_key(now, self.signing_keys) if entry is not None else None
        if key is None:
            raise PreconditionError(
                f"no signing key of node {self.node_id} is valid in trust list version "
                f"{trust.version}; rotate keys and ask the stewards to publish the new one"
            )
        return key.key_id, self.signing_keys[key.key_id]

    @staticmethod
    def generate(node_id: str) -> NodeIdentity:
        signing = ed25519.Ed25519PrivateKey.generate()
        sealing = x25519.X25519PrivateKey.generate()
        return NodeIdentity(
            node_id=node_id,
            signing_keys={ed25519_key_id(signing.public_key()): signing},
            sealing_keys={x25519_key_id(sealing.public_key()): sealing},
        )

    def write(self, signing_path: Path, sealing_path: Path, passphrase: bytes | None) -> None:
        """Write the newest signing key and the newest sealing key to new files."""
        write_private_key(signing_path, self.signing_key, passphrase)
        write_private_key(sealing_path, self.sealing_keys[self.sealing_key_id], passphrase)

    @staticmethod
    def load(
        node_id: str,
        signing_paths: list[Path],
        sealing_paths: list[Path],
        passphrase: bytes | None,
    ) -> NodeIdentity:
        """Load keys from files, given oldest first."""
        signing = [load_ed25519(p, passphrase) for p in signing_paths]
        sealing = [load_x25519(p, passphrase) for p in sealing_paths]
        return NodeIdentity(
            node_id=node_id,
            signing_keys={ed25519_key_id(k.public_key()): k for k in signing},
            sealing_keys={x25519_key_id(k.public_key()): k for k in sealing},
        )

    def public_keys(self, not_before: dt.datetime) -> tuple[KeyInfo, KeyInfo]:
        """The newest signing and sealing keys as trust list entries (what enrolment offers)."""
        signing_public = self.signing_key.public_key()
        sealing_public = self.sealing_keys[self.sealing_key_id].public_key()
        return (
            KeyInfo(self.signing_key_id, ED25519, raw_public(signing_public), not_before),
            KeyInfo(self.sealing_key_id, X25519, raw_public(sealing_public), not_before),
        )
