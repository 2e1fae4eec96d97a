"""Where a node's and a federation's files live, relative to their directories.

node directory                      federation directory
  node.toml                           federation.toml
  enrolment.json   (public)           ca/ca.key, ca/ca.pem
  keys/signing.pem                    stewards/<name>.pem
  keys/sealing.pem                    trust-lists/v<N>.pb, draft.pb
  tls/node.key, tls/node.pem
  tls/federation-ca.pem
  tls/authority.key, tls/authority.pem
  trust-anchor.pb
  exchange.db      (SQLite default)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

__all__ = ["FederationLayout", "NodeLayout"]


@dataclasses.dataclass(frozen=True)
class NodeLayout:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "node.toml"

    @property
    def enrolment(self) -> Path:
        return self.root / "enrolment.json"

    @property
    def signing_key(self) -> Path:
        return self.root / "keys" / "signing.pem"

    @property
    def sealing_key(self) -> Path:
        return self.root / "keys" / "sealing.pem"

    def key_files(self, kind: str) -> list[Path]:
        """Every key file of `kind` ("signing" or "sealing"), oldest first.

        The first key is `<kind>.pem`; each rotation adds `<kind>.<N>.pem`.
        """
        rotated = {
            int(number): path
            for path in (self.root / "keys").glob(f"{kind}.*.pem")
            if (number := path.name.removeprefix(f"{kind}.").removesuffix(".pem")).isdigit()
        }
        return [self.root / "keys" / f"{kind}.pem", *(rotated[n] for n in sorted(rotated))]

    def next_key_file(self, kind: str) -> Path:
        """Where the next rotated key of `kind` goes."""
        return self.root / "keys" / f"{kind}.{len(self.key_files(kind)) + 1}.pem"

    @property
    def oprf_key(self) -> Path:
        """The OPRF key for hit/no-hit matching (exchange.oprf_keys)."""
        return self.root / "keys" / "oprf.json"

    @property
    def tls_key(self) -> Path:
        return self.root / "tls" / "node.key"

    @property
    def tls_certificate(self) -> Path:
        return self.root / "tls" / "node.pem"

    @property
    def federation_ca(self) -> Path:
        return self.root / "tls" / "federation-ca.pem"

    @property
    def authority_key(self) -> Path:
        return self.root / "tls" / "authority.key"

    @property
    def authority_certificate(self) -> Path:
        return self.root / "tls" / "authority.pem"

    @property
    def trust_anchor(self) -> Path:
        return self.root / "trust-anchor.pb"


@dataclasses.dataclass(frozen=True)
class FederationLayout:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "federation.toml"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca" / "ca.key"

    @property
    def ca_certificate(self) -> Path:
        return self.root / "ca" / "ca.pem"

    def steward_key(self, name: str) -> Path:
        return self.root / "stewards" / f"{name}.pem"

    @property
    def trust_lists(self) -> Path:
        return self.root / "trust-lists"

    def trust_list(self, version: int) -> Path:
        return self.trust_lists / f"v{version}.pb"

    @property
    def draft(self) -> Path:
        return self.trust_lists / "draft.pb"
