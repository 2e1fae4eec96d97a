"""X.509 for mutual TLS: the federation CA, node certificates, authority certificates.

TLS keys are ECDSA P-256, which every gRPC TLS stack supports. A node
certificate's subject alternative name is the node id (a DNS label): the TLS
layer authenticates the peer node, and the exchange compares that id with the
sender named in each envelope. The authority port uses a self-signed
certificate that authority systems pin.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "certificate_sha256",
    "issue_node_certificate",
    "load_certificate",
    "new_ca",
    "new_tls_key",
    "pem",
    "self_signed_server_certificate",
]

_CA_VALIDITY = dt.timedelta(days=3650)
_LEAF_VALIDITY = dt.timedelta(days=825)
# Backdated a little so that peers with slightly slow clocks accept new certificates.
_BACKDATE = dt.timedelta(minutes=5)


def new_tls_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organisation: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: dt.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def new_ca(
    federation_id: str, key: ec.EllipticCurvePrivateKey, now: dt.datetime
) -> x509.Certificate:
    """A self-signed CA certificate that may issue leaf certificates only."""
    name = _name(f"{federation_id} federation CA", federation_id)
    return (
        _builder(name, name, key.public_key(), now)
        .not_valid_after(now + _CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def issue_node_certificate(
    *,
    node_id: str,
    federation_id: str,
    public_key: ec.EllipticCurvePublicKey,
    ca_certificate: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
) -> x509.Certificate:
    """A certificate for both ends of federation mTLS, naming `node_id` as its only SAN."""
    ca_public = ca_key.public_key()
    return (
        _builder(_name(node_id, federation_id), ca_certificate.subject, public_key, now)
        .not_valid_after(now + _LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(node_id)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def self_signed_server_certificate(
    *, node_id: str, hosts: list[str], key: ec.EllipticCurvePrivateKey, now: dt.datetime
) -> x509.Certificate:
    """The authority port's certificate: self-signed, pinned by authority systems.

    Args:
        hosts: DNS names and IP addresses the port is reached by.
    """
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([node_id, *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    name = _name(f"{node_id} authority API", node_id)
    return (
        _builder(name, name, key.public_key(), now)
        .not_valid_after(now + _LEAF_VALIDITY)
        # CA:TRUE so that TLS stacks accept it as its own trust anchor.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def load_certificate(data: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(data)


def certificate_sha256(certificate: x509.Certificate) -> bytes:
    """SHA-256 of the DER encoding: the pin carried in the trust list."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()
