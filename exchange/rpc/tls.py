"""gRPC credentials from a node's key and certificate files.

Private keys are decrypted in memory (with the admin's passphrase when the
files are encrypted) and handed to gRPC as unencrypted PEM; they never touch
the disk unencrypted.
"""

from __future__ import annotations

import dataclasses

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from exchange.keys import load_ec
from exchange.layout import NodeLayout

__all__ = ["NodeTls", "authority_server_credentials"]


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclasses.dataclass(frozen=True)
class NodeTls:
    """The federation mTLS material of one node."""

    key_pem: bytes
    certificate_pem: bytes
    ca_pem: bytes

    @staticmethod
    def load(layout: NodeLayout, passphrase: bytes | None) -> NodeTls:
        key = load_ec(layout.tls_key, passphrase)
        return NodeTls(
            key_pem=_pem_key(key),
            certificate_pem=layout.tls_certificate.read_bytes(),
            ca_pem=layout.federation_ca.read_bytes(),
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server side of federation mTLS: a client certificate from the CA is required."""
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.certificate_pem)],
            root_certificates=self.ca_pem,
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Client side of federation mTLS."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.key_pem,
            certificate_chain=self.certificate_pem,
        )


def authority_server_credentials(
    layout: NodeLayout, passphrase: bytes | None
) -> grpc.ServerCredentials:
    """Server-only TLS for the authority port; clients authenticate with tokens."""
    key = load_ec(layout.authority_key, passphrase)
    return grpc.ssl_server_credentials([(_pem_key(key), layout.authority_certificate.read_bytes())])
