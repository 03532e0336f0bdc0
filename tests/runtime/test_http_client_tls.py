"""TLS against a test CA made here: verification on, SNI and the name check use the host.

The socket goes to 127.0.0.1, but the certificate must match the allowlisted name, so a
certificate for another name fails even though the address was allowed.
"""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chartly_dagster.runtime.errors import ConnectFailed, EgressRefused, Reason
from chartly_dagster.runtime.http import build_client
from tests.support.egress import API_HOST, FakeResolver, make_profile, reply, serve


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_pki(tmp: Path, dns_name: str) -> tuple[str, ssl.SSLContext]:
    """A CA and a leaf for `dns_name`; returns the CA bundle path and a server context."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("chartly test CA"))
          .issuer_name(_name("chartly test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(_name(dns_name)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = tmp / "ca.pem", tmp / "leaf.pem", tmp / "leaf.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    return str(ca_path), server


def _ok(handler) -> None:
    reply(handler, 200, b'{"tls": true}')


def _client(port: int, ca: str | ssl.SSLContext | None, **kw):
    base = f"https://{API_HOST}:{port}"
    resolved = make_profile(base, cidrs=["127.0.0.0/8"], **kw)
    return base, build_client(resolved, env="dev", verify=ca,
                              resolver=FakeResolver({API_HOST: ["127.0.0.1"]}))


def test_tls_with_the_test_ca_and_a_matching_name_succeeds(tmp_path: Path) -> None:
    ca, server = _write_pki(tmp_path, API_HOST)
    with serve(_ok, tls=server) as srv:
        base, client = _client(srv.port, ca)
        with client:
            assert client.get(f"{base}/").content == b'{"tls": true}'
        context = ssl.create_default_context(cafile=ca)
        base, client = _client(srv.port, context)
        with client:
            assert client.get(f"{base}/").status_code == 200


def test_certificate_for_another_name_is_refused(tmp_path: Path) -> None:
    ca, server = _write_pki(tmp_path, "other.example.test")
    with serve(_ok, tls=server) as srv:
        base, client = _client(srv.port, ca)
        with client, pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
            client.get(f"{base}/")
        assert srv.requests == []


def test_unknown_ca_is_refused_by_the_default_trust_store(tmp_path: Path) -> None:
    _ca, server = _write_pki(tmp_path, API_HOST)
    with serve(_ok, tls=server) as srv:
        base, client = _client(srv.port, None)
        with client, pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
            client.get(f"{base}/")


def test_https_to_http_redirect_is_refused(tmp_path: Path) -> None:
    ca, server = _write_pki(tmp_path, API_HOST)

    def downgrade(handler) -> None:
        reply(handler, 302, b"", {"Location": f"http://{API_HOST}:{handler.server.server_port}/"})

    with serve(downgrade, tls=server) as srv:
        base, client = _client(srv.port, ca)
        with client, pytest.raises(EgressRefused) as info:
            client.get(f"{base}/")
    assert info.value.reason == Reason.REDIRECT_DOWNGRADE
