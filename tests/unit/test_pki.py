"""X.509 for federation mTLS: the CA, node certificates, and the certificate pin."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from exchange.pki import (
    certificate_sha256,
    issue_node_certificate,
    load_certificate,
    new_ca,
    pem,
    self_signed_server_certificate,
)

from ._builders import FEDERATION, T0

CA_KEY = ec.derive_private_key(1001, ec.SECP256R1())
NODE_KEY = ec.derive_private_key(1002, ec.SECP256R1())
OTHER_CA_KEY = ec.derive_private_key(1003, ec.SECP256R1())
CA = new_ca(FEDERATION, CA_KEY, T0)
NODE = issue_node_certificate(
    node_id="xa-node",
    federation_id=FEDERATION,
    public_key=NODE_KEY.public_key(),
    ca_certificate=CA,
    ca_key=CA_KEY,
    now=T0,
)


def extension(certificate: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension:  # type: ignore[type-arg]
    return certificate.extensions.get_extension_for_class(kind)


def test_node_certificate_names_the_node_id_as_its_only_san() -> None:
    names = extension(NODE, x509.SubjectAlternativeName).value
    assert list(names) == [x509.DNSName("xa-node")]


def test_node_certificate_is_for_both_ends_of_mtls() -> None:
    usage = extension(NODE, x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    key_usage = extension(NODE, x509.KeyUsage)
    assert key_usage.critical
    assert key_usage.value.digital_signature
    assert not key_usage.value.key_cert_sign


def test_node_certificate_is_not_a_ca() -> None:
    constraints = extension(NODE, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is False


def test_node_certificate_is_issued_by_the_ca() -> None:
    assert NODE.issuer == CA.subject
    NODE.verify_directly_issued_by(CA)
    assert (
        extension(NODE, x509.AuthorityKeyIdentifier).value.key_identifier
        == extension(CA, x509.SubjectKeyIdentifier).value.digest
    )


def test_node_certificate_does_not_verify_under_another_ca_of_the_same_name() -> None:
    impostor = new_ca(FEDERATION, OTHER_CA_KEY, T0)
    assert impostor.subject == CA.subject
    with pytest.raises(InvalidSignature):
        NODE.verify_directly_issued_by(impostor)


def test_node_certificate_carries_the_node_key_and_names() -> None:
    assert NODE.public_key() == NODE_KEY.public_key()
    assert NODE.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "xa-node"
    assert NODE.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == FEDERATION
    assert NODE.signature_hash_algorithm is not None
    assert NODE.signature_hash_algorithm.name == "sha256"


def test_node_certificate_validity_is_backdated_and_bounded() -> None:
    assert NODE.not_valid_before_utc == T0 - dt.timedelta(minutes=5)
    assert NODE.not_valid_after_utc == T0 + dt.timedelta(days=825)


def test_ca_may_issue_leaf_certificates_only() -> None:
    constraints = extension(CA, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is True
    assert constraints.value.path_length == 0
    usage = extension(CA, x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert not usage.digital_signature
    CA.verify_directly_issued_by(CA)  # self-signed


def test_certificate_sha256_is_the_sha256_of_the_der() -> None:
    der = NODE.public_bytes(serialization.Encoding.DER)
    assert certificate_sha256(NODE) == hashlib.sha256(der).digest()
    assert certificate_sha256(NODE) == NODE.fingerprint(hashes.SHA256())
    assert certificate_sha256(NODE) != certificate_sha256(CA)


def test_pem_round_trip_keeps_the_pin() -> None:
    assert certificate_sha256(load_certificate(pem(NODE))) == certificate_sha256(NODE)


def test_authority_certificate_names_hosts_and_addresses_once() -> None:
    certificate = self_signed_server_certificate(
        node_id="xa-node",
        hosts=["localhost", "127.0.0.1", "::1", "xa-node"],
        key=NODE_KEY,
        now=T0,
    )
    names = list(extension(certificate, x509.SubjectAlternativeName).value)
    assert names == [
        x509.DNSName("xa-node"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    assert set(extension(certificate, x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.SERVER_AUTH
    }
    certificate.verify_directly_issued_by(certificate)
